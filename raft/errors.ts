/** Errors a `RaftNode` rejects proposals and reads with. Each names one failure mode. */
import { TrellisError } from '../src/lib/errors.js';

/** This replica is not the leader; `leaderHint` names the leader it knows of ('' when none). */
export class NotLeaderError extends TrellisError {
  override readonly name = 'NotLeaderError';
  readonly code = 'RAFT_NOT_LEADER';
  constructor(readonly leaderHint: string) {
    super(leaderHint === '' ? 'not the leader, and no leader is known' : `not the leader; try ${leaderHint}`);
  }
}

/**
 * Another entry committed at the proposal's index, or the proposal was refused before it entered the log: it
 * did not take effect.
 */
export class ProposalDroppedError extends TrellisError {
  override readonly name = 'ProposalDroppedError';
  readonly code = 'RAFT_PROPOSAL_DROPPED';
}

/**
 * This replica can no longer learn whether the proposal's entry commits: its log was overwritten from that
 * index by a newer leader's entries (which another leader may still replace by the original, as in the Raft
 * paper's Figure 8), or a snapshot from the leader covered it. It may have taken effect; retry idempotently.
 */
export class ProposalOutcomeUnknownError extends TrellisError {
  override readonly name = 'ProposalOutcomeUnknownError';
  readonly code = 'RAFT_OUTCOME_UNKNOWN';
}

/** No answer within the time allowed; the proposal may still commit later (callers retry idempotently). */
export class TimeoutError extends TrellisError {
  override readonly name = 'TimeoutError';
  readonly code = 'RAFT_TIMEOUT';
}

/** The node was closed; nothing further is accepted. */
export class RaftClosedError extends TrellisError {
  override readonly name = 'RaftClosedError';
  readonly code = 'RAFT_CLOSED';
}

/** A membership change or leadership transfer was refused (another change is pending, or it is invalid). */
export class MembershipChangeError extends TrellisError {
  override readonly name = 'MembershipChangeError';
  readonly code = 'RAFT_MEMBERSHIP_CHANGE';
}
