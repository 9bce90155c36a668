/**
 * The data types shared by the Raft core, its storage and its driver. This file is the contract between
 * them; the message shapes the core exchanges with its peers live in `messages.ts` beside it.
 *
 * Pure: no I/O, no clock, no randomness. Indexes and terms are plain integers (safe up to 2^53).
 */

/** Replicas are named by short strings (see `src/lib/ids.ts` for the alphabet). */
export type PeerId = string;

/** What an entry carries. `normal` entries hold the state machine's command; `conf` a membership change. */
export type EntryType = 'normal' | 'conf';

/** One log entry. `data` is opaque to Raft; an empty `normal` entry is the leader's no-op of its term. */
export interface Entry {
  readonly term: number;
  readonly index: number;
  readonly type: EntryType;
  readonly data: Uint8Array;
}

/**
 * The state that must be durable before the replica answers anyone: its term, whom it voted for in that
 * term, and the commit index it has learned (persisted so a restart does not re-apply from zero).
 * Invariant: `commit <= lastIndex` of the log it is saved with.
 */
export interface HardState {
  readonly term: number;
  /** The candidate voted for in `term`, or '' when none. */
  readonly vote: PeerId;
  readonly commit: number;
}

/**
 * The membership in force. `voters` count toward quorum; `learners` receive the log but do not vote.
 * `votersOutgoing` is non-empty only during a joint-consensus change (C_old,new): a decision then needs a
 * majority of `voters` and a majority of `votersOutgoing`.
 */
export interface ConfState {
  readonly voters: readonly PeerId[];
  readonly learners: readonly PeerId[];
  readonly votersOutgoing: readonly PeerId[];
}

/** Identifies the log position a snapshot replaces, and the membership at that position. */
export interface SnapshotMeta {
  readonly index: number;
  readonly term: number;
  readonly conf: ConfState;
}

/** A state machine snapshot plus its position. `data` is the state machine's own serialisation. */
export interface Snapshot {
  readonly meta: SnapshotMeta;
  readonly data: Uint8Array;
}

export const emptyHardState: HardState = Object.freeze({ term: 0, vote: '', commit: 0 });
export const emptyConfState: ConfState = Object.freeze({ voters: [], learners: [], votersOutgoing: [] });
export const emptySnapshotMeta: SnapshotMeta = Object.freeze({ index: 0, term: 0, conf: emptyConfState });

/** True when two hard states are equal (a Ready carries a hard state only when it changed). */
export function hardStateEqual(a: HardState, b: HardState): boolean {
  return a.term === b.term && a.vote === b.vote && a.commit === b.commit;
}
