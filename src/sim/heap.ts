/**
 * The event queue of the discrete-event engine: a binary min-heap keyed on (time, rank, sequence). The rank
 * orders kinds that share an instant (node events, then departures, then arrivals, then the flushes), and the
 * sequence number makes the order total, so a run never depends on heap internals.
 *
 * Keys live in parallel typed arrays and payloads in a plain array: a million pushes allocate no key objects.
 */
import { assert } from '../lib/assert.js';

/** Events the queue may hold at once; the engine generates arrivals lazily, so this bounds live sandboxes. */
export const heapEventsMax = 1 << 24;

export class EventHeap<T> {
  #time = new Float64Array(1024);
  #rank = new Uint8Array(1024);
  #seq = new Float64Array(1024);
  #items: (T | undefined)[] = new Array(1024);
  #size = 0;
  #nextSeq = 0;

  get size(): number {
    return this.#size;
  }

  /** The time of the earliest event; +Infinity when empty. */
  peekTime(): number {
    return this.#size === 0 ? Number.POSITIVE_INFINITY : (this.#time[0] as number);
  }

  push(timeMs: number, rank: number, item: T): void {
    assert(Number.isFinite(timeMs), 'event time is finite', { timeMs });
    assert(this.#size < heapEventsMax, 'event heap is full', { heapEventsMax });
    if (this.#size === this.#time.length) this.#grow();
    let i = this.#size++;
    const seq = this.#nextSeq++;
    // Sift up: move parents down until the slot for the new key is found.
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.#less(timeMs, rank, seq, p)) break;
      this.#move(p, i);
      i = p;
    }
    this.#set(i, timeMs, rank, seq, item);
  }

  /** Removes the earliest event and returns it; undefined when empty. */
  pop(): { timeMs: number; rank: number; item: T } | undefined {
    if (this.#size === 0) return undefined;
    const item = this.popItem();
    return { timeMs: this.poppedTimeMs, rank: this.poppedRank, item };
  }

  /** The time and rank of the event `popItem` removed last. */
  poppedTimeMs = 0;
  poppedRank = 0;

  /**
   * Removes the earliest event and returns its item, its time and rank in `poppedTimeMs` and `poppedRank`: no
   * object per event (a million-event run popped a million of them). The heap must not be empty.
   */
  popItem(): T {
    assert(this.#size > 0, 'popItem on an empty heap');
    this.poppedTimeMs = this.#time[0] as number;
    this.poppedRank = this.#rank[0] as number;
    const out = this.#items[0] as T;
    const last = --this.#size;
    const t = this.#time[last] as number;
    const r = this.#rank[last] as number;
    const s = this.#seq[last] as number;
    const it = this.#items[last] as T;
    this.#items[last] = undefined;
    let i = 0;
    // Sift down the former last element from the root.
    for (;;) {
      const l = 2 * i + 1;
      if (l >= last) break;
      const rr = l + 1;
      const c = rr < last && this.#lessAt(rr, l) ? rr : l;
      if (!this.#lessKeyThan(c, t, r, s)) break;
      this.#move(c, i);
      i = c;
    }
    if (last > 0) this.#set(i, t, r, s, it);
    return out;
  }

  #less(t: number, r: number, s: number, j: number): boolean {
    const tj = this.#time[j] as number;
    if (t !== tj) return t < tj;
    const rj = this.#rank[j] as number;
    if (r !== rj) return r < rj;
    return s < (this.#seq[j] as number);
  }
  #lessKeyThan(j: number, t: number, r: number, s: number): boolean {
    const tj = this.#time[j] as number;
    if (tj !== t) return tj < t;
    const rj = this.#rank[j] as number;
    if (rj !== r) return rj < r;
    return (this.#seq[j] as number) < s;
  }
  #lessAt(a: number, b: number): boolean {
    return this.#less(this.#time[a] as number, this.#rank[a] as number, this.#seq[a] as number, b);
  }
  #move(from: number, to: number): void {
    this.#time[to] = this.#time[from] as number;
    this.#rank[to] = this.#rank[from] as number;
    this.#seq[to] = this.#seq[from] as number;
    this.#items[to] = this.#items[from];
  }
  #set(i: number, t: number, r: number, s: number, item: T): void {
    this.#time[i] = t;
    this.#rank[i] = r;
    this.#seq[i] = s;
    this.#items[i] = item;
  }
  #grow(): void {
    const n = this.#time.length * 2;
    const time = new Float64Array(n);
    time.set(this.#time);
    const rank = new Uint8Array(n);
    rank.set(this.#rank);
    const seq = new Float64Array(n);
    seq.set(this.#seq);
    this.#time = time;
    this.#rank = rank;
    this.#seq = seq;
    this.#items.length = n;
  }
}
