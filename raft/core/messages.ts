/**
 * The messages Raft replicas exchange: a union discriminated by `type`, made of plain msgpack-friendly values.
 * `parseMessage` validates anything that arrives from the network (this room may not use a schema library,
 * so the checks are written out); it throws ValidationError and never lets a wrong shape through.
 */
import { ValidationError } from '../../src/lib/errors.js';
import type { Entry, EntryType, PeerId } from './types.js';

/** Entries one append message may carry. */
export const entriesPerMessageMax = 4_096;
const peerLengthMax = 128;
/** A ReadIndex context, at most. */
export const contextLengthMax = 128;
const entryBytesMax = 16 << 20;

interface Base {
  readonly from: PeerId;
  readonly to: PeerId;
  readonly term: number;
}

/** A (pre-)candidate asks for a vote; `lastIndex`/`lastTerm` describe its log (§5.4.1). */
export interface VoteRequest extends Base {
  readonly type: 'vote' | 'preVote';
  readonly lastIndex: number;
  readonly lastTerm: number;
}
export interface VoteResponse extends Base {
  readonly type: 'voteResp' | 'preVoteResp';
  readonly reject: boolean;
}
/** AppendEntries (§5.3): entries after (prevIndex, prevTerm), and the leader's commit index. */
export interface AppendRequest extends Base {
  readonly type: 'append';
  readonly prevIndex: number;
  readonly prevTerm: number;
  readonly entries: readonly Entry[];
  readonly commit: number;
}
/**
 * The answer to an append. Accepted: `index` is the follower's last index matching the leader. Rejected:
 * `index` is the prevIndex that failed and (`hintIndex`, `hintTerm`) the follower's best guess of where the
 * logs may agree, so the leader can skip a whole term of entries at once.
 */
export interface AppendResponse extends Base {
  readonly type: 'appendResp';
  readonly reject: boolean;
  readonly index: number;
  readonly hintIndex: number;
  readonly hintTerm: number;
}
/** A heartbeat; `context` is set when it also confirms leadership for a ReadIndex read (§6.4). */
export interface Heartbeat extends Base {
  readonly type: 'heartbeat';
  readonly commit: number;
  readonly context?: string;
}
export interface HeartbeatResponse extends Base {
  readonly type: 'heartbeatResp';
  /** Echoes the heartbeat's context. */
  readonly context?: string;
}

export type Message =
  | VoteRequest
  | VoteResponse
  | AppendRequest
  | AppendResponse
  | Heartbeat
  | HeartbeatResponse;
export type MessageType = Message['type'];

function field(x: Record<string, unknown>, name: string, kind: 'count' | 'peer' | 'bool'): void {
  const v = x[name];
  const ok =
    kind === 'count'
      ? typeof v === 'number' && Number.isSafeInteger(v) && v >= 0
      : kind === 'peer'
        ? typeof v === 'string' && v.length > 0 && v.length <= peerLengthMax
        : typeof v === 'boolean';
  if (!ok) throw new ValidationError(name, `must be a ${kind}`);
}

const entryTypes: readonly EntryType[] = ['normal', 'conf'];

function parseEntry(e: unknown, i: number): Entry {
  if (typeof e !== 'object' || e === null) throw new ValidationError(`entries.${i}`, 'must be an object');
  const x = e as Record<string, unknown>;
  field(x, 'term', 'count');
  field(x, 'index', 'count');
  if (!entryTypes.includes(x.type as EntryType))
    throw new ValidationError(`entries.${i}.type`, 'unknown entry type');
  if (!(x.data instanceof Uint8Array) || x.data.length > entryBytesMax) {
    throw new ValidationError(`entries.${i}.data`, 'must be bytes');
  }
  return { term: x.term as number, index: x.index as number, type: x.type as EntryType, data: x.data };
}

const fieldsOf: Readonly<Record<MessageType, readonly [string, 'count' | 'bool'][]>> = {
  vote: [
    ['lastIndex', 'count'],
    ['lastTerm', 'count'],
  ],
  preVote: [
    ['lastIndex', 'count'],
    ['lastTerm', 'count'],
  ],
  voteResp: [['reject', 'bool']],
  preVoteResp: [['reject', 'bool']],
  append: [
    ['prevIndex', 'count'],
    ['prevTerm', 'count'],
    ['commit', 'count'],
  ],
  appendResp: [
    ['reject', 'bool'],
    ['index', 'count'],
    ['hintIndex', 'count'],
    ['hintTerm', 'count'],
  ],
  heartbeat: [['commit', 'count']],
  heartbeatResp: [],
};

/** Validates a decoded message; throws ValidationError naming the first bad field. */
export function parseMessage(x: unknown): Message {
  if (typeof x !== 'object' || x === null || Array.isArray(x))
    throw new ValidationError('', 'message must be an object');
  const m = x as Record<string, unknown>;
  const type = m.type as MessageType;
  const fields = Object.hasOwn(fieldsOf, String(type)) ? fieldsOf[type] : undefined;
  if (fields === undefined)
    throw new ValidationError('type', `unknown message type ${String(m.type).slice(0, 40)}`);
  field(m, 'from', 'peer');
  field(m, 'to', 'peer');
  field(m, 'term', 'count');
  for (const [name, kind] of fields) field(m, name, kind);
  if ((type === 'heartbeat' || type === 'heartbeatResp') && m.context !== undefined) {
    if (typeof m.context !== 'string' || m.context.length > contextLengthMax) {
      throw new ValidationError('context', `must be a string of at most ${contextLengthMax} characters`);
    }
  }
  if (type === 'append') {
    if (!Array.isArray(m.entries) || m.entries.length > entriesPerMessageMax) {
      throw new ValidationError('entries', `must be an array of at most ${entriesPerMessageMax}`);
    }
    const entries = m.entries.map(parseEntry);
    const prev = m.prevIndex as number;
    entries.forEach((e, i) => {
      if (e.index !== prev + 1 + i)
        throw new ValidationError(`entries.${i}.index`, 'entries must follow prevIndex without gaps');
    });
    return { ...(m as unknown as AppendRequest), entries };
  }
  return m as unknown as Message;
}
