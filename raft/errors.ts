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

/** The proposal's entry was replaced by another leader's before it committed: it did not take effect. */
export class ProposalDroppedError extends TrellisError {
  override readonly name = 'ProposalDroppedError';
  readonly code = 'RAFT_PROPOSAL_DROPPED';
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
