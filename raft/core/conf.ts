/**
 * Membership changes, one server at a time (§4.1 of Ongaro's dissertation), as etcd-io/raft's ConfChange:
 * add a voter (or promote a learner), add a learner, remove a member. A change travels as a `conf` log entry
 * and takes effect when that entry is applied; the leader allows one unapplied change at a time.
 *
 * The entry payload is a small JSON object: the core may not use the msgpack codec (it knows no I/O format),
 * and a readable payload makes a log dump self-explanatory.
 */
import { ValidationError } from '../../src/lib/errors.js';
import type { ConfState, PeerId } from './types.js';

export type ConfChangeType = 'addVoter' | 'addLearner' | 'remove';

export interface ConfChange {
  readonly type: ConfChangeType;
  readonly peer: PeerId;
}

const changeTypes: readonly ConfChangeType[] = ['addVoter', 'addLearner', 'remove'];
const peerLengthMax = 128;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

export function encodeConfChange(cc: ConfChange): Uint8Array {
  return encoder.encode(JSON.stringify({ type: cc.type, peer: cc.peer }));
}

/** Decodes a conf entry's payload; throws ValidationError for anything that is not a ConfChange. */
export function decodeConfChange(data: Uint8Array): ConfChange {
  let x: unknown;
  try {
    x = JSON.parse(decoder.decode(data));
  } catch {
    throw new ValidationError('confChange', 'is not JSON');
  }
  return parseConfChange(x);
}

/** Validates a change from any source (an API call, a decoded entry). */
export function parseConfChange(x: unknown): ConfChange {
  if (typeof x !== 'object' || x === null) throw new ValidationError('confChange', 'must be an object');
  const c = x as Record<string, unknown>;
  if (!changeTypes.includes(c.type as ConfChangeType))
    throw new ValidationError('confChange.type', `must be one of ${changeTypes.join(', ')}`);
  if (typeof c.peer !== 'string' || c.peer.length === 0 || c.peer.length > peerLengthMax)
    throw new ValidationError('confChange.peer', 'must be a peer id');
  return { type: c.type as ConfChangeType, peer: c.peer };
}

/** Why a change cannot apply to `conf`, or undefined when it can. */
export function confChangeProblem(conf: ConfState, cc: ConfChange): string | undefined {
  const voter = conf.voters.includes(cc.peer);
  const learner = conf.learners.includes(cc.peer);
  switch (cc.type) {
    case 'addVoter':
      return voter ? `${cc.peer} is already a voter` : undefined;
    case 'addLearner':
      return voter || learner ? `${cc.peer} is already a member` : undefined;
    case 'remove':
      if (!voter && !learner) return `${cc.peer} is not a member`;
      return voter && conf.voters.length === 1 ? 'cannot remove the last voter' : undefined;
  }
}

/** The membership after a change (which must be valid for it). Member lists stay sorted. */
export function applyConfChange(conf: ConfState, cc: ConfChange): ConfState {
  const voters = new Set(conf.voters);
  const learners = new Set(conf.learners);
  switch (cc.type) {
    case 'addVoter':
      learners.delete(cc.peer);
      voters.add(cc.peer);
      break;
    case 'addLearner':
      if (!voters.has(cc.peer)) learners.add(cc.peer);
      break;
    case 'remove':
      voters.delete(cc.peer);
      learners.delete(cc.peer);
      break;
  }
  return { voters: [...voters].sort(), learners: [...learners].sort(), votersOutgoing: [] };
}
