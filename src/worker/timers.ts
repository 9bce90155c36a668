/**
 * Time for the worker and its drivers, injected so the `sim` driver and the worker core can run in virtual
 * time: a test (or a capacity simulation) moves the clock, and thousands of simulated boots finish without
 * waiting for them.
 */
import { assert } from '../lib/assert.js';

export interface Timers {
  /** Milliseconds on this clock. */
  now(): number;
  /** Calls `fn` after `ms`; returns a handle for `clear`. */
  set(fn: () => void, ms: number): unknown;
  clear(handle: unknown): void;
}

/** The process's own clock and timers. */
export const realTimers: Timers = {
  now: () => Date.now(),
  set: (fn, ms) => setTimeout(fn, ms),
  clear: (handle) => clearTimeout(handle as ReturnType<typeof setTimeout>),
};

/** Resolves after `ms` on `timers`. */
export function sleepOn(timers: Timers, ms: number): Promise<void> {
  return new Promise((resolve) => {
    timers.set(resolve, ms);
  });
}

interface Pending {
  readonly atMs: number;
  readonly seq: number;
  readonly fn: () => void;
}

/** How many timers one `advance` may fire; a guard against a timer that re-arms itself at zero delay. */
export const virtualFiresMax = 10_000_000;

/**
 * A virtual clock: time moves only in `advance`. Timers fire in due order (ties in the order they were
 * set), and between two timers every pending promise continuation runs, so async code driven by these
 * timers behaves as it would in real time, only without the waiting.
 */
export class VirtualTimers implements Timers {
  #nowMs = 0;
  #seq = 0;
  /** Live timers by handle; the heap may still hold cleared ones, skipped when they surface. */
  readonly #live = new Map<number, Pending>();
  /** A binary min-heap on (atMs, seq), so thousands of simulated nodes' timers cost log n each. */
  readonly #heap: Pending[] = [];

  now(): number {
    return this.#nowMs;
  }
  set(fn: () => void, ms: number): unknown {
    assert(ms >= 0 && Number.isFinite(ms), 'a timer delay is a finite, non-negative number', { ms });
    const seq = this.#seq++;
    const timer = { atMs: this.#nowMs + ms, seq, fn };
    this.#live.set(seq, timer);
    heapPush(this.#heap, timer);
    return seq;
  }
  clear(handle: unknown): void {
    if (typeof handle === 'number') this.#live.delete(handle);
  }
  /** Timers not yet fired. */
  get pendingCount(): number {
    return this.#live.size;
  }

  /** Moves the clock forward by `ms`, firing every timer that falls due on the way. */
  async advance(ms: number): Promise<void> {
    assert(ms >= 0, 'time only moves forward', { ms });
    const untilMs = this.#nowMs + ms;
    await settle();
    for (let fired = 0; ; fired++) {
      assert(fired < virtualFiresMax, 'virtual timers keep re-arming', { fired });
      const next = this.#earliest();
      if (next === undefined || next.atMs > untilMs) break;
      heapPop(this.#heap);
      this.#live.delete(next.seq);
      this.#nowMs = next.atMs;
      next.fn();
      await settle();
    }
    this.#nowMs = untilMs;
  }

  /** Advances until no timer is left (bounded by `limitMs`); returns the virtual time that passed. */
  async runAll(limitMs = 24 * 3600_000): Promise<number> {
    const startMs = this.#nowMs;
    for (;;) {
      await settle(); // Continuations still queued may set the next timer.
      const next = this.#earliest();
      if (next === undefined || next.atMs - startMs > limitMs) break;
      await this.advance(next.atMs - this.#nowMs);
    }
    return this.#nowMs - startMs;
  }

  /** The earliest live timer, dropping cleared ones from the top of the heap. */
  #earliest(): Pending | undefined {
    for (;;) {
      const top = this.#heap[0];
      if (top === undefined || this.#live.has(top.seq)) return top;
      heapPop(this.#heap);
    }
  }
}

function before(a: Pending, b: Pending): boolean {
  return a.atMs < b.atMs || (a.atMs === b.atMs && a.seq < b.seq);
}

function heapPush(heap: Pending[], item: Pending): void {
  heap.push(item);
  let i = heap.length - 1;
  while (i > 0) {
    const parent = (i - 1) >> 1;
    const p = heap[parent] as Pending;
    if (!before(item, p)) break;
    heap[i] = p;
    i = parent;
  }
  heap[i] = item;
}

function heapPop(heap: Pending[]): void {
  const last = heap.pop();
  if (last === undefined || heap.length === 0) return;
  let i = 0;
  for (;;) {
    const l = 2 * i + 1;
    if (l >= heap.length) break;
    const r = l + 1;
    const child = r < heap.length && before(heap[r] as Pending, heap[l] as Pending) ? r : l;
    const c = heap[child] as Pending;
    if (!before(c, last)) break;
    heap[i] = c;
    i = child;
  }
  heap[i] = last;
}

/** Lets every queued promise continuation run (one macrotask turn drains the microtask queue). */
function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
