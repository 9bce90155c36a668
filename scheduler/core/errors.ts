/**
 * The scheduler's failure modes, one class per mode. A sandbox that fits nowhere yet is not an error (it
 * waits in the pending queue with its reason); these are for calls that cannot be carried out at all.
 * Every class keeps a stable `code`, so a rejection that travelled through the Raft log as `{code,
 * message}` can be turned back into the same class on the proposer's side (see `errorFromResult`).
 */

import {
  DuplicateNodeError,
  NodeBusyError,
  OverCommitError,
  UnknownNodeError,
} from '../../placement/errors.js';
import {
  DeadlineExceededError,
  TrellisError,
  type TrellisErrorOptions,
  ValidationError,
} from '../../src/lib/errors.js';

/** No sandbox with this id exists. */
export class UnknownSandboxError extends TrellisError {
  override readonly name = 'UnknownSandboxError';
  readonly code = 'SCHED_UNKNOWN_SANDBOX';
}

/**
 * The sandbox is not running where running was needed: a create waiting for `running` whose sandbox failed,
 * was lost or terminated first (or did not run before the wait's deadline), or an exec on a sandbox that
 * is not running. `details.state` is its state then.
 */
export class SandboxNotRunningError extends TrellisError {
  override readonly name = 'SandboxNotRunningError';
  readonly code = 'SCHED_NOT_RUNNING';
}

/** The sandbox's lifecycle does not allow this transition from its current state. */
export class IllegalTransitionError extends TrellisError {
  override readonly name = 'IllegalTransitionError';
  readonly code = 'SCHED_ILLEGAL_TRANSITION';
}

/** Admitting the request would take the tenant past its quota. */
export class QuotaExceededError extends TrellisError {
  override readonly name = 'QuotaExceededError';
  readonly code = 'SCHED_QUOTA_EXCEEDED';
}

/** The request id was already used for a different spec; a retry must send the same spec. */
export class RequestIdConflictError extends TrellisError {
  override readonly name = 'RequestIdConflictError';
  readonly code = 'SCHED_REQUEST_ID_CONFLICT';
}

/** The node exists but is not ready (draining, cordoned or down), so it takes no new placement. */
export class NodeNotReadyError extends TrellisError {
  override readonly name = 'NodeNotReadyError';
  readonly code = 'SCHED_NODE_NOT_READY';
}

/** The sandbox could not be placed before its deadline; `details.reason` is the last placement reason. */
export class NoCapacityError extends TrellisError {
  override readonly name = 'NoCapacityError';
  readonly code = 'SCHED_NO_CAPACITY';
}

/** The pending queue (or the batcher) is full; the caller should retry later. */
export class OverloadedError extends TrellisError {
  override readonly name = 'OverloadedError';
  readonly code = 'SCHED_OVERLOADED';
}

/** This replica is not the leader and could not forward the request to one. */
export class NotLeaderError extends TrellisError {
  override readonly name = 'NotLeaderError';
  readonly code = 'SCHED_NOT_LEADER';
}

/** The scheduler was closed while the call was in progress. */
export class SchedulerClosedError extends TrellisError {
  override readonly name = 'SchedulerClosedError';
  readonly code = 'SCHED_CLOSED';
}

/** A create whose sandbox was terminated while it waited for room (committed `pending`). */
export class SandboxCancelledError extends TrellisError {
  override readonly name = 'SandboxCancelledError';
  readonly code = 'SCHED_CANCELLED';
}

/** A watch() reader fell so far behind that its buffer filled; it must start a new watch and re-read. */
export class WatchOverflowError extends TrellisError {
  override readonly name = 'WatchOverflowError';
  readonly code = 'SCHED_WATCH_OVERFLOW';
}

/**
 * A watch asked for events no longer held (or never held: from before this scheduler or server started);
 * the reader must re-read state with list()/nodes() and watch from now.
 */
export class WatchGapError extends TrellisError {
  override readonly name = 'WatchGapError';
  readonly code = 'API_WATCH_GAP';
}

/** The wire form of a rejected command, as the state machine returns it. */
export interface ErrorResult {
  readonly code: string;
  readonly message: string;
}

type ErrorClass = new (message: string, options?: TrellisErrorOptions) => TrellisError;

const byCode: Readonly<Record<string, ErrorClass>> = {
  SCHED_UNKNOWN_SANDBOX: UnknownSandboxError,
  SCHED_ILLEGAL_TRANSITION: IllegalTransitionError,
  SCHED_QUOTA_EXCEEDED: QuotaExceededError,
  SCHED_REQUEST_ID_CONFLICT: RequestIdConflictError,
  SCHED_NODE_NOT_READY: NodeNotReadyError,
  SCHED_NO_CAPACITY: NoCapacityError,
  SCHED_OVERLOADED: OverloadedError,
  SCHED_NOT_LEADER: NotLeaderError,
  SCHED_CLOSED: SchedulerClosedError,
  SCHED_CANCELLED: SandboxCancelledError,
  SCHED_NOT_RUNNING: SandboxNotRunningError,
  DEADLINE_EXCEEDED: DeadlineExceededError,
  PLACEMENT_UNKNOWN_NODE: UnknownNodeError,
  PLACEMENT_DUPLICATE_NODE: DuplicateNodeError,
  PLACEMENT_NODE_BUSY: NodeBusyError,
  PLACEMENT_OVER_COMMIT: OverCommitError,
};

/** The wire form of an error thrown while applying a command. */
export function errorResult(err: TrellisError): ErrorResult {
  return { code: err.code, message: err.message };
}

/** Turns a committed rejection back into its typed error (ValidationError for any unknown code). */
export function errorFromResult(result: ErrorResult): TrellisError {
  const cls = byCode[result.code];
  if (cls === undefined) return new ValidationError('', result.message);
  return new cls(result.message);
}
