/**
 * Named errors of the Raft log contract. Storage throws these from its synchronous read methods; the core
 * catches the first two and reacts (send a snapshot instead of entries; retry later).
 */
import { TrellisError } from '../../src/lib/errors.js';

/** The requested index is below the first index still in the log: it was compacted into a snapshot. */
export class LogCompactedError extends TrellisError {
  override readonly name = 'LogCompactedError';
  readonly code = 'RAFT_LOG_COMPACTED';
}

/** The requested index is above the last index in the log. */
export class EntryUnavailableError extends TrellisError {
  override readonly name = 'EntryUnavailableError';
  readonly code = 'RAFT_ENTRY_UNAVAILABLE';
}

/** A snapshot is being produced and is not ready yet; the caller should retry later. */
export class SnapshotUnavailableError extends TrellisError {
  override readonly name = 'SnapshotUnavailableError';
  readonly code = 'RAFT_SNAPSHOT_UNAVAILABLE';
}

/** A snapshot older than the one already held was offered; nothing was changed. */
export class SnapshotOutOfDateError extends TrellisError {
  override readonly name = 'SnapshotOutOfDateError';
  readonly code = 'RAFT_SNAPSHOT_OUT_OF_DATE';
}
