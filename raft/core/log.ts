/**
 * The replica's view of its log: what storage holds (persisted) followed by `unstable` entries the core has
 * appended but the driver has not persisted yet (etcd's raftLog + unstable). Invariants, asserted:
 * `applied <= committed <= lastIndex()`, and unstable entries start right after what storage holds or replace
 * a suffix of it.
 */
import { assert, assertLe } from '../../src/lib/assert.js';
import type { LogReader } from './log-reader.js';
import type { Entry, Snapshot } from './types.js';

export class RaftLog {
  readonly storage: LogReader;
  /** Entries not yet persisted; `unstable[0].index === unstableOffset`. */
  unstable: Entry[] = [];
  unstableOffset: number;
  /** Highest index known committed on a quorum. */
  committed: number;
  /** Highest index handed to the state machine. */
  applied: number;
  /**
   * A snapshot received from the leader and not yet persisted (etcd's unstable.snapshot). While it is set it
   * replaces everything storage holds: the log is the snapshot followed by `unstable`.
   */
  pendingSnapshot: Snapshot | undefined;

  /** `applied`: what the state machine already holds on start (default: the snapshot's index). */
  constructor(storage: LogReader, applied?: number) {
    this.storage = storage;
    this.unstableOffset = storage.lastIndex() + 1;
    this.committed = storage.initialState().hardState.commit;
    this.applied = applied ?? storage.firstIndex() - 1;
    assertLe(this.committed, this.lastIndex(), 'committed <= lastIndex on start');
    assert(
      this.applied >= storage.firstIndex() - 1 && this.applied <= storage.lastIndex(),
      'applied in the log',
      {
        applied: this.applied,
        first: storage.firstIndex(),
        last: storage.lastIndex(),
      },
    );
    // What a snapshot covers, or the state machine applied, is committed even if the hard state lags it.
    this.committed = Math.max(this.committed, this.applied);
  }

  lastIndex(): number {
    if (this.unstable.length > 0) return this.unstableOffset + this.unstable.length - 1;
    return this.pendingSnapshot !== undefined ? this.pendingSnapshot.meta.index : this.storage.lastIndex();
  }

  firstIndex(): number {
    return this.pendingSnapshot !== undefined
      ? this.pendingSnapshot.meta.index + 1
      : this.storage.firstIndex();
  }

  /** The term at `index`, or undefined when it is outside the log (compacted or past the end). */
  term(index: number): number | undefined {
    if (index >= this.unstableOffset && this.unstable.length > 0)
      return this.unstable[index - this.unstableOffset]?.term;
    const snap = this.pendingSnapshot;
    if (snap !== undefined) return index === snap.meta.index ? snap.meta.term : undefined;
    if (index < this.storage.firstIndex() - 1 || index > this.storage.lastIndex()) return undefined;
    return this.storage.term(index);
  }

  /**
   * Replaces the whole log with a snapshot from the leader (its index is committed on the leader, so it
   * is committed here too). The driver persists it and restores the state machine from it.
   */
  restore(snapshot: Snapshot): void {
    assert(snapshot.meta.index > this.committed, 'a snapshot moves the log forward', {
      index: snapshot.meta.index,
      committed: this.committed,
    });
    this.pendingSnapshot = snapshot;
    this.unstable = [];
    this.unstableOffset = snapshot.meta.index + 1;
    this.committed = snapshot.meta.index;
  }

  /** The driver persisted the pending snapshot and restored the state machine from it. */
  snapshotApplied(index: number): void {
    if (this.pendingSnapshot?.meta.index !== index) return;
    this.pendingSnapshot = undefined;
    this.applied = Math.max(this.applied, index);
  }

  lastTerm(): number {
    return this.term(this.lastIndex()) ?? 0;
  }

  matchTerm(index: number, term: number): boolean {
    return this.term(index) === term;
  }

  /** True when a log ending at (lastIndex, lastTerm) is at least as up to date as this one (§5.4.1). */
  isUpToDate(lastIndex: number, lastTerm: number): boolean {
    const myTerm = this.lastTerm();
    return lastTerm > myTerm || (lastTerm === myTerm && lastIndex >= this.lastIndex());
  }

  /** Entries in [lo, hi), at most `bytesMax` of data (at least one), from storage and unstable. */
  slice(lo: number, hi: number, bytesMax: number): Entry[] {
    assert(lo >= this.firstIndex() && hi <= this.lastIndex() + 1 && lo <= hi, 'slice within the log', {
      lo,
      hi,
    });
    const out: Entry[] = [];
    if (lo < this.unstableOffset) {
      const stableHi = Math.min(hi, this.unstableOffset);
      out.push(...this.storage.entries(lo, stableHi, bytesMax));
      if (stableHi < hi && out.length < stableHi - lo) return out;
    }
    let bytes = out.reduce((n, e) => n + e.data.length, 0);
    for (let i = Math.max(lo, this.unstableOffset); i < hi; i++) {
      const e = this.unstable[i - this.unstableOffset] as Entry;
      bytes += e.data.length;
      if (out.length > 0 && bytes > bytesMax) break;
      out.push(e);
    }
    return out;
  }

  /**
   * Appends entries after a successful prevIndex/prevTerm match: skips those already present with the same
   * term, truncates at the first conflict, appends the rest. Returns the index of the last entry given.
   */
  appendAfter(prevIndex: number, entries: readonly Entry[]): number {
    let i = 0;
    while (i < entries.length && this.matchTerm((entries[i] as Entry).index, (entries[i] as Entry).term)) i++;
    if (i < entries.length) {
      const first = (entries[i] as Entry).index;
      assert(first > this.committed, 'a committed entry is never overwritten', {
        first,
        committed: this.committed,
      });
      this.#truncateAndAppend(entries.slice(i));
    }
    return prevIndex + entries.length;
  }

  /** Appends as the leader: entries must follow the last index. */
  append(entries: readonly Entry[]): void {
    if (entries.length === 0) return;
    assert((entries[0] as Entry).index === this.lastIndex() + 1, 'leader appends contiguously', {
      first: (entries[0] as Entry).index,
      last: this.lastIndex(),
    });
    this.#truncateAndAppend(entries);
  }

  #truncateAndAppend(entries: readonly Entry[]): void {
    const first = (entries[0] as Entry).index;
    if (first === this.unstableOffset + this.unstable.length) {
      this.unstable.push(...entries);
    } else if (first <= this.unstableOffset) {
      // Replaces part of what storage holds: the driver persists from `first`, replacing the suffix there.
      assert(this.pendingSnapshot === undefined, 'entries never replace a pending snapshot', { first });
      this.unstableOffset = first;
      this.unstable = [...entries];
    } else {
      this.unstable = [...this.unstable.slice(0, first - this.unstableOffset), ...entries];
    }
  }

  commitTo(index: number): void {
    if (index <= this.committed) return;
    assertLe(index, this.lastIndex(), 'commit only what the log holds');
    this.committed = index;
  }

  /** Entries committed and not yet applied, up to `bytesMax` (after a pending snapshot, if any). */
  nextCommitted(bytesMax: number): Entry[] {
    const lo = Math.max(this.applied + 1, this.firstIndex());
    if (lo > this.committed) return [];
    return this.slice(lo, this.committed + 1, bytesMax);
  }

  appliedTo(index: number): void {
    assertLe(index, this.committed, 'applied <= committed');
    this.applied = Math.max(this.applied, index);
  }

  /** The driver persisted unstable entries up to `index` (of `term`): they are now read from storage. */
  stableTo(index: number, term: number): void {
    if (this.term(index) !== term || index < this.unstableOffset) return;
    this.unstable = this.unstable.slice(index + 1 - this.unstableOffset);
    this.unstableOffset = index + 1;
  }
}
