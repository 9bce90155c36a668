/**
 * The storage contract (after etcd-io/raft's storage.go). Reads are synchronous because the pure core
 * calls them while it steps; implementations keep the live part of the log in memory and write it through
 * to disk. Writes are asynchronous and are only ever issued by the driver, in the order a Ready demands.
 *
 * Ranges are half-open, `[lo, hi)`. Arrays returned by a read are owned by the caller only for reading:
 * the caller must not mutate them, and the storage must not mutate them after returning them.
 */
import type { ConfState, Entry, HardState, Snapshot } from '../core/types.js';

/** The read side, all the core needs. */
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

/** What one Ready asks the driver to persist. */
export interface StorageUpdate {
  /** Present when the hard state changed. */
  readonly hardState?: HardState;
  /** Entries to append; any existing entries at or after `entries[0].index` are replaced. */
  readonly entries: readonly Entry[];
  /** A snapshot received from the leader; replaces the log up to its index. */
  readonly snapshot?: Snapshot;
}

/** Full storage: the read side plus durable writes. */
export interface Storage extends LogReader {
  /**
   * Persists an update in the order snapshot, entries, hard state. When `mustSync` is true the promise
   * resolves only once all of it is durable (fsync); the driver sends no message that depends on it before.
   */
  save(update: StorageUpdate, mustSync: boolean): Promise<void>;
  /**
   * Records a snapshot the state machine took at `index` (which must be applied and in the log) and makes
   * it the one `snapshot()` returns. Durable when the promise resolves.
   */
  createSnapshot(index: number, conf: ConfState, data: Uint8Array): Promise<Snapshot>;
  /** Drops the entries up to and including `index` (which must be at or below the snapshot index). */
  compact(index: number): Promise<void>;
  /** Flushes and releases files. Further calls fail. */
  close(): Promise<void>;
}
