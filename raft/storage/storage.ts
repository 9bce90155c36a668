/**
 * The storage contract (after etcd-io/raft's storage.go). Reads are synchronous because the pure core
 * calls them while it steps; implementations keep the live part of the log in memory and write it through
 * to disk. Writes are asynchronous and are only ever issued by the driver, in the order a Ready demands.
 *
 * Ranges are half-open, `[lo, hi)`. Arrays returned by a read are owned by the caller only for reading:
 * the caller must not mutate them, and the storage must not mutate them after returning them.
 */
import type { LogReader } from '../core/log-reader.js';
import type { ConfState, Entry, HardState, Snapshot } from '../core/types.js';

export type { LogReader } from '../core/log-reader.js';

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
   * Without a snapshot, the update is visible to reads when `save` returns (before its promise settles), and
   * saves reach the disk in call order: the driver does not wait for a save that only moves the commit index.
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

/** What a Ready asks the driver to persist, as one update (snapshot, entries, hard state). */
export function updateOf(rd: {
  readonly entries: readonly Entry[];
  readonly hardState?: HardState;
  readonly snapshot?: Snapshot;
}): StorageUpdate {
  return {
    entries: rd.entries,
    ...(rd.hardState === undefined ? {} : { hardState: rd.hardState }),
    ...(rd.snapshot === undefined ? {} : { snapshot: rd.snapshot }),
  };
}
