/**
 * MemoryStorage: the storage contract held in memory, for tests and the deterministic simulation. It behaves
 * as FileStorage does (a snapshot from the leader replaces the log; `createSnapshot` drops the entries it
 * covers) and can also tell what a crash would leave behind: it keeps, besides the live state, the durable
 * state as of the last sync and the writes made since, so `crashImage()` builds the storage a restarted
 * replica would recover — everything synced, then any prefix of the unsynced writes, the last one possibly
 * torn (a prefix of its entries), exactly the states a write-ahead log's recovery can produce.
 *
 * Every method also has a synchronous form (`saveSync`, `createSnapshotSync`) for single-threaded drivers.
 */
import { assert } from '../../src/lib/assert.js';
import type { ConfState, Entry, HardState, Snapshot } from '../core/types.js';
import { emptyHardState, emptySnapshotMeta } from '../core/types.js';
import { StorageClosedError } from './file.js';
import { entriesIn, termAt } from './log-slice.js';
import type { Storage, StorageUpdate } from './storage.js';

interface State {
  hardState: HardState;
  snapshot: Snapshot;
  /** Entries after the snapshot: `entries[i].index === snapshot.meta.index + 1 + i`. */
  entries: Entry[];
}

/** One write, as it would reach the disk. */
type Write =
  | { readonly kind: 'snapshot'; readonly snapshot: Snapshot }
  | { readonly kind: 'entries'; readonly entries: readonly Entry[] }
  | { readonly kind: 'hardState'; readonly hardState: HardState };

const emptySnapshot: Snapshot = { meta: emptySnapshotMeta, data: new Uint8Array(0) };

function copyState(s: State): State {
  return { hardState: s.hardState, snapshot: s.snapshot, entries: [...s.entries] };
}

function lastIndexOf(s: State): number {
  return s.snapshot.meta.index + s.entries.length;
}

function applyWrite(s: State, w: Write): void {
  switch (w.kind) {
    case 'snapshot':
      s.snapshot = w.snapshot;
      s.entries = [];
      return;
    case 'entries': {
      if (w.entries.length === 0) return;
      const first = (w.entries[0] as Entry).index;
      assert(first > s.snapshot.meta.index, 'entries start above the snapshot', {
        first,
        snapshot: s.snapshot.meta.index,
      });
      assert(first <= lastIndexOf(s) + 1, 'entries are contiguous', { first, last: lastIndexOf(s) });
      // Entries at or below the last index replace the suffix from there.
      s.entries.length = first - s.snapshot.meta.index - 1;
      for (const e of w.entries) s.entries.push(e);
      return;
    }
    case 'hardState':
      s.hardState = w.hardState;
      return;
  }
}

export class MemoryStorage implements Storage {
  #live: State;
  #durable: State;
  #unsynced: Write[] = [];
  #closed = false;

  constructor(initial?: { hardState?: HardState; snapshot?: Snapshot; entries?: readonly Entry[] }) {
    this.#live = {
      hardState: initial?.hardState ?? emptyHardState,
      snapshot: initial?.snapshot ?? emptySnapshot,
      entries: [...(initial?.entries ?? [])],
    };
    this.#durable = copyState(this.#live);
  }

  // ---- read side ----

  initialState(): { hardState: HardState; confState: ConfState } {
    return { hardState: this.#live.hardState, confState: this.#live.snapshot.meta.conf };
  }
  firstIndex(): number {
    return this.#live.snapshot.meta.index + 1;
  }
  lastIndex(): number {
    return lastIndexOf(this.#live);
  }
  term(index: number): number {
    return termAt(this.#live.snapshot.meta, this.#live.entries, index);
  }
  entries(lo: number, hi: number, bytesMax: number): readonly Entry[] {
    return entriesIn(this.#live.snapshot.meta, this.#live.entries, lo, hi, bytesMax);
  }
  snapshot(): Snapshot {
    return this.#live.snapshot;
  }

  // ---- write side ----

  /** `save`, synchronously. */
  saveSync(update: StorageUpdate, mustSync: boolean): void {
    this.#checkOpen();
    if (update.snapshot !== undefined) this.#write({ kind: 'snapshot', snapshot: update.snapshot });
    if (update.entries.length > 0) this.#write({ kind: 'entries', entries: update.entries });
    if (update.hardState !== undefined) {
      assert(update.hardState.commit <= this.lastIndex(), 'commit <= lastIndex', {
        commit: update.hardState.commit,
        lastIndex: this.lastIndex(),
      });
      this.#write({ kind: 'hardState', hardState: update.hardState });
    }
    // A snapshot is always synced (FileStorage writes it as a file, fsynced, then renames it).
    if (mustSync || update.snapshot !== undefined) this.sync();
  }

  async save(update: StorageUpdate, mustSync: boolean): Promise<void> {
    this.saveSync(update, mustSync);
  }

  /** `createSnapshot`, synchronously. Durable on return, with every write before it. */
  createSnapshotSync(index: number, conf: ConfState, data: Uint8Array): Snapshot {
    this.#checkOpen();
    const current = this.#live.snapshot.meta.index;
    assert(index > current, 'snapshot index moves forward', { index, current });
    assert(index <= this.lastIndex(), 'snapshot index is in the log', { index, last: this.lastIndex() });
    const snap: Snapshot = { meta: { index, term: this.term(index), conf }, data };
    // Entries the snapshot covers leave the log; the rest stay (as FileStorage's createSnapshot).
    const kept = this.#live.entries.slice(index - current);
    this.#write({ kind: 'snapshot', snapshot: snap });
    if (kept.length > 0) this.#write({ kind: 'entries', entries: kept });
    this.sync();
    return snap;
  }

  async createSnapshot(index: number, conf: ConfState, data: Uint8Array): Promise<Snapshot> {
    return this.createSnapshotSync(index, conf, data);
  }

  async compact(index: number): Promise<void> {
    this.#checkOpen();
    assert(index <= this.#live.snapshot.meta.index, 'compact only what a snapshot covers', {
      index,
      snapshot: this.#live.snapshot.meta.index,
    });
  }

  async close(): Promise<void> {
    this.#closed = true;
  }

  // ---- durability ----

  /** Makes every write so far durable (an fsync). */
  sync(): void {
    for (const w of this.#unsynced) applyWrite(this.#durable, w);
    this.#unsynced = [];
  }

  /** Writes made since the last sync. */
  get unsyncedWrites(): number {
    return this.#unsynced.length;
  }

  /**
   * What a crash now would leave: everything synced, then the first `keepWrites` unsynced writes; when
   * `tornEntries` is given and the last kept write holds entries, only that many of them survive (a torn
   * last record, truncated by recovery).
   */
  crashImage(keepWrites: number, tornEntries?: number): MemoryStorage {
    const s = copyState(this.#durable);
    const kept = this.#unsynced.slice(0, Math.max(0, keepWrites));
    kept.forEach((w, i) => {
      if (i === kept.length - 1 && tornEntries !== undefined && w.kind === 'entries') {
        applyWrite(s, { kind: 'entries', entries: w.entries.slice(0, tornEntries) });
      } else {
        applyWrite(s, w);
      }
    });
    return new MemoryStorage({ hardState: s.hardState, snapshot: s.snapshot, entries: s.entries });
  }

  #write(w: Write): void {
    applyWrite(this.#live, w);
    this.#unsynced.push(w);
  }

  #checkOpen(): void {
    if (this.#closed) throw new StorageClosedError('storage is closed');
  }
}
