/**
 * The messages Raft replicas exchange: a union discriminated by `type`, made of plain msgpack-friendly values.
 * `parseMessage` validates anything that arrives from the network (this room may not use a schema library,
 * so the checks are written out); it throws ValidationError and never lets a wrong shape through.
 */
import { ValidationError } from '../../src/lib/errors.js';
import type { ConfState, Entry, EntryType, PeerId } from './types.js';

/** Entries one append message may carry. */
export const entriesPerMessageMax = 4_096;
const peerLengthMax = 128;
/** A ReadIndex context, at most. */
export const contextLengthMax = 128;
const entryBytesMax = 16 << 20;
/** Bytes of snapshot data one InstallSnapshot chunk carries, at most: it must fit a NATS message (1 MiB). */
export const snapshotChunkBytesMax = 512 << 10;
/** Members a configuration may name, at most. */
export const confMembersMax = 64;

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
  /** Set when the election follows a leadership transfer (TimeoutNow): voters ignore their leader lease. */
  readonly transfer?: boolean;
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

/**
 * One chunk of InstallSnapshot (§7): bytes [offset, offset + data.length) of the snapshot at (index,
 * snapTerm) with membership `conf`; `done` marks the last chunk. Chunks go one at a time, each acknowledged.
 */
export interface SnapshotChunk extends Base {
  readonly type: 'snapshot';
  readonly index: number;
  readonly snapTerm: number;
  readonly conf: ConfState;
  readonly offset: number;
  readonly total: number;
  readonly data: Uint8Array;
  readonly done: boolean;
}
/** Acknowledges snapshot bytes: `offset` is how many bytes of the snapshot at `index` the follower holds. */
export interface SnapshotResponse extends Base {
  readonly type: 'snapshotResp';
  readonly index: number;
  readonly offset: number;
}
/** Leadership transfer: the leader tells an up-to-date voter to campaign at once (§3.10). */
export interface TimeoutNow extends Base {
  readonly type: 'timeoutNow';
}

export type Message =
  | VoteRequest
  | VoteResponse
  | AppendRequest
  | AppendResponse
  | Heartbeat
  | HeartbeatResponse
  | SnapshotChunk
  | SnapshotResponse
  | TimeoutNow;
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
  snapshot: [
    ['index', 'count'],
    ['snapTerm', 'count'],
    ['offset', 'count'],
    ['total', 'count'],
    ['done', 'bool'],
  ],
  snapshotResp: [
    ['index', 'count'],
    ['offset', 'count'],
  ],
  timeoutNow: [],
};

function parsePeers(x: unknown, name: string): readonly PeerId[] {
  if (!Array.isArray(x) || x.length > confMembersMax)
    throw new ValidationError(name, `must be an array of at most ${confMembersMax} peers`);
  for (const p of x) {
    if (typeof p !== 'string' || p.length === 0 || p.length > peerLengthMax)
      throw new ValidationError(name, 'must hold peer ids');
  }
  return x as PeerId[];
}

/** Validates a membership received from the network or read from a snapshot. */
export function parseConfState(x: unknown): ConfState {
  if (typeof x !== 'object' || x === null || Array.isArray(x))
    throw new ValidationError('conf', 'must be an object');
  const c = x as Record<string, unknown>;
  return {
    voters: parsePeers(c.voters, 'conf.voters'),
    learners: parsePeers(c.learners, 'conf.learners'),
    votersOutgoing: parsePeers(c.votersOutgoing, 'conf.votersOutgoing'),
  };
}

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
  if ((type === 'vote' || type === 'preVote') && m.transfer !== undefined && typeof m.transfer !== 'boolean')
    throw new ValidationError('transfer', 'must be a bool');
  if (type === 'snapshot') {
    const data = m.data;
    if (!(data instanceof Uint8Array) || data.length > snapshotChunkBytesMax)
      throw new ValidationError('data', `must be at most ${snapshotChunkBytesMax} bytes`);
    if ((m.offset as number) + data.length > (m.total as number))
      throw new ValidationError('offset', 'chunk runs past the snapshot size');
    if (m.done === true && (m.offset as number) + data.length !== m.total)
      throw new ValidationError('done', 'the last chunk must end the snapshot');
    return { ...(m as unknown as SnapshotChunk), conf: parseConfState(m.conf) };
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
