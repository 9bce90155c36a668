/**
 * The replica's view of its log: what storage holds (persisted) followed by `unstable` entries the core has
 * appended but the driver has not persisted yet (etcd's raftLog + unstable). Invariants, asserted:
 * `applied <= committed <= lastIndex()`, and unstable entries start right after what storage holds or replace
 * a suffix of it.
 */
import { assert, assertLe } from '../../src/lib/assert.js';
import type { LogReader } from './log-reader.js';
import type { Entry } from './types.js';

export class RaftLog {
  readonly storage: LogReader;
  /** Entries not yet persisted; `unstable[0].index === unstableOffset`. */
  unstable: Entry[] = [];
  unstableOffset: number;
  /** Highest index known committed on a quorum. */
  committed: number;
  /** Highest index handed to the state machine. */
  applied: number;

  constructor(storage: LogReader) {
    this.storage = storage;
    this.unstableOffset = storage.lastIndex() + 1;
    this.committed = storage.initialState().hardState.commit;
    this.applied = storage.firstIndex() - 1;
    assertLe(this.committed, this.lastIndex(), 'committed <= lastIndex on start');
  }

  lastIndex(): number {
    return this.unstable.length > 0
      ? this.unstableOffset + this.unstable.length - 1
      : this.storage.lastIndex();
  }

  firstIndex(): number {
    return this.storage.firstIndex();
  }

  /** The term at `index`, or undefined when it is outside the log (compacted or past the end). */
  term(index: number): number | undefined {
    if (index >= this.unstableOffset && this.unstable.length > 0)
      return this.unstable[index - this.unstableOffset]?.term;
    if (index < this.storage.firstIndex() - 1 || index > this.storage.lastIndex()) return undefined;
    return this.storage.term(index);
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

  /** Entries committed and not yet applied, up to `bytesMax`. */
  nextCommitted(bytesMax: number): Entry[] {
    if (this.applied >= this.committed) return [];
    return this.slice(Math.max(this.applied + 1, this.firstIndex()), this.committed + 1, bytesMax);
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
