/**
 * Errors of the index's write API. A request that does not fit is never an error (it is a `Rejection`);
 * these are for writes that would corrupt the index: an unknown or duplicate node, an over-commit, a
 * release of more than was allocated.
 */
import { TrellisError } from '../src/lib/errors.js';

/** The node id is not registered. */
export class UnknownNodeError extends TrellisError {
  override readonly name = 'UnknownNodeError';
  readonly code = 'PLACEMENT_UNKNOWN_NODE';
}

/** A node with this id is already registered. */
export class DuplicateNodeError extends TrellisError {
  override readonly name = 'DuplicateNodeError';
  readonly code = 'PLACEMENT_DUPLICATE_NODE';
}

/** The write would allocate more than a node (or one of its devices) has, or shrink it below its allocation. */
export class OverCommitError extends TrellisError {
  override readonly name = 'OverCommitError';
  readonly code = 'PLACEMENT_OVER_COMMIT';
}

/** A release names more than is allocated: the caller's books and the index disagree. */
export class ReleaseMismatchError extends TrellisError {
  override readonly name = 'ReleaseMismatchError';
  readonly code = 'PLACEMENT_RELEASE_MISMATCH';
}

/** The node still holds allocations and cannot be removed. */
export class NodeBusyError extends TrellisError {
  override readonly name = 'NodeBusyError';
  readonly code = 'PLACEMENT_NODE_BUSY';
}
