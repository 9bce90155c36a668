/**
 * The read side of the log, all the pure core needs (after etcd-io/raft's Storage interface). It lives in the
 * core because the core defines what it reads; `raft/storage` implements it (see storage.ts for the writes).
 *
 * Ranges are half-open, `[lo, hi)`. Arrays returned are owned by the caller only for reading.
 */
import type { ConfState, Entry, HardState, Snapshot } from './types.js';

export interface LogReader {
  /** The hard state and membership saved last (zero values for a new replica). */
  initialState(): { readonly hardState: HardState; readonly confState: ConfState };
  /**
   * Entries in `[lo, hi)`, stopping early once their data adds up past `bytesMax` (at least one entry is
   * always returned when the range is not empty). Throws LogCompactedError when `lo < firstIndex()`,
   * EntryUnavailableError when `hi > lastIndex() + 1`.
   */
  entries(lo: number, hi: number, bytesMax: number): readonly Entry[];
  /**
   * The term of the entry at `index`, for `firstIndex() - 1 <= index <= lastIndex()` (the term of the
   * snapshot's last entry answers `firstIndex() - 1`). Throws LogCompactedError below that range and
   * EntryUnavailableError above it.
   */
  term(index: number): number;
  /** Index of the first entry still in the log (snapshot index + 1). */
  firstIndex(): number;
  /** Index of the last entry (the snapshot index when the log is empty). */
  lastIndex(): number;
  /** The most recent snapshot. Throws SnapshotUnavailableError if one is being made and not ready yet. */
  snapshot(): Snapshot;
}
