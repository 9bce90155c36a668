/**
 * The event queue of the discrete-event engine: a min-heap keyed on (time, rank, sequence). The rank orders
 * kinds that share an instant (node events, then departures, then arrivals, then the flushes), and the
 * sequence number makes the order total, so a run never depends on heap internals: any correct heap pops the
 * same sequence.
 *
 * Layout, for a queue of ~100,000 events (a 1M-event simulation's live departures) whose sift-down was ~5% of
 * the run, mostly cache misses: a 4-ary heap (half the levels of a binary one) whose keys sit interleaved in one
 * Float64Array, two numbers an entry — the time, then rank and sequence packed into one exact integer — so the
 * four children of an entry are 64 consecutive bytes (one cache line when aligned) instead of three arrays
 * read per comparison. Payloads stay in a plain array, moved with their keys: no key object per event.
 */
import { assert } from '../lib/assert.js';

/** Events the queue may hold at once; the engine generates arrivals lazily, so this bounds live sandboxes. */
export const heapEventsMax = 1 << 24;

/** Ranks are small integers (an enum of event kinds). */
export const heapRankMax = 255;

/** rank × 2^44 + sequence is an exact double while rank <= 255 and sequence < 2^44 (2^52 < 2^53). */
const seqSpan = 2 ** 44;

/** Children per entry: four children's keys (4 × 16 bytes) fill one 64-byte cache line. */
const arity = 4;

export class EventHeap<T> {
  /** Entry i's time at 2i, its packed rank and sequence at 2i + 1. */
  #keys = new Float64Array(2 * 1024);
  #items: (T | undefined)[] = new Array(1024);
  #size = 0;
  #nextSeq = 0;

  get size(): number {
    return this.#size;
  }

  /** The time of the earliest event; +Infinity when empty. */
  peekTime(): number {
    return this.#size === 0 ? Number.POSITIVE_INFINITY : (this.#keys[0] as number);
  }

  push(timeMs: number, rank: number, item: T): void {
    assert(Number.isFinite(timeMs), 'event time is finite', { timeMs });
    assert(Number.isInteger(rank) && rank >= 0 && rank <= heapRankMax, 'event rank is a small integer', {
      rank,
      heapRankMax,
    });
    assert(this.#size < heapEventsMax, 'event heap is full', { heapEventsMax });
    assert(this.#nextSeq < seqSpan, 'event sequence fits its packed key', { seq: this.#nextSeq });
    if (this.#size === this.#items.length) this.#grow();
    const keys = this.#keys;
    const items = this.#items;
    const rs = rank * seqSpan + this.#nextSeq++;
    let i = this.#size++;
    // Sift up: move parents down until the slot for the new key is found.
    while (i > 0) {
      const p = ((i - 1) / arity) | 0;
      const pt = keys[2 * p] as number;
      if (pt < timeMs || (pt === timeMs && (keys[2 * p + 1] as number) < rs)) break;
      keys[2 * i] = pt;
      keys[2 * i + 1] = keys[2 * p + 1] as number;
      items[i] = items[p];
      i = p;
    }
    keys[2 * i] = timeMs;
    keys[2 * i + 1] = rs;
    items[i] = item;
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
    const keys = this.#keys;
    const items = this.#items;
    this.poppedTimeMs = keys[0] as number;
    this.poppedRank = Math.floor((keys[1] as number) / seqSpan);
    const out = items[0] as T;
    const last = --this.#size;
    const t = keys[2 * last] as number;
    const rs = keys[2 * last + 1] as number;
    const it = items[last];
    items[last] = undefined;
    if (last === 0) return out;
    let i = 0;
    // Sift down the former last entry from the root: the least of up to four children moves up while it is
    // less than that entry.
    for (;;) {
      const first = arity * i + 1;
      if (first >= last) break;
      const end = Math.min(first + arity, last);
      let c = first;
      let ct = keys[2 * c] as number;
      let crs = keys[2 * c + 1] as number;
      for (let j = first + 1; j < end; j++) {
        const jt = keys[2 * j] as number;
        if (jt < ct || (jt === ct && (keys[2 * j + 1] as number) < crs)) {
          c = j;
          ct = jt;
          crs = keys[2 * j + 1] as number;
        }
      }
      if (ct > t || (ct === t && crs > rs)) break;
      keys[2 * i] = ct;
      keys[2 * i + 1] = crs;
      items[i] = items[c];
      i = c;
    }
    keys[2 * i] = t;
    keys[2 * i + 1] = rs;
    items[i] = it;
    return out;
  }

  #grow(): void {
    const keys = new Float64Array(this.#keys.length * 2);
    keys.set(this.#keys);
    this.#keys = keys;
    this.#items.length = this.#items.length * 2;
  }
}
