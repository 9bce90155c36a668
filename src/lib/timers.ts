/**
 * The one clock and timer source of the project, injected so the same code runs on real time in production
 * and on virtual time in a deterministic test or simulation: the Raft driver, the scheduler replica and its
 * dispatcher, the node worker and its `sim` driver all take a `Timers`.
 *
 * `VirtualTimers` moves only when its owner moves it. Due timers fire in (due time, creation order) from a
 * binary heap, so thousands of simulated nodes' timers cost log n each, and a seed replays exactly. Three
 * ways to move it, for three kinds of owner:
 * - `runUntil(ms)`: fire everything due, synchronously (an owner that drains its own work once per step);
 * - `advanceTo(ms, settle)`: after each timer, await the caller's `settle` (e.g. one event-loop turn);
 * - `advance(ms)` / `runAll()`: as `advanceTo` with a macrotask turn as the settle, so async code driven by
 *   these timers behaves as in real time, only without the waiting.
 * (The capacity simulator's event queue, src/sim/heap.ts, is not a timer source: it orders typed events by
 * rank within an instant and lives in typed arrays.)
 */
import { assert } from './assert.js';

/** Cancels a timer; calling it again, or after the timer fired, does nothing. */
export type Cancel = () => void;

export interface Timers {
  /** Milliseconds on this source's clock (wall-clock milliseconds for the real one). */
  now(): number;
  /** Runs `fn` once after `ms`. */
  setTimeout(fn: () => void, ms: number): Cancel;
  /** Runs `fn` every `ms` until cancelled. */
  setInterval(fn: () => void, ms: number): Cancel;
}

/** Real time: `Date.now` and the event loop's timers. */
export const realTimers: Timers = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => {
    const t = setTimeout(fn, ms);
    return () => clearTimeout(t);
  },
  setInterval: (fn, ms) => {
    const t = setInterval(fn, ms);
    return () => clearInterval(t);
  },
};

/** Resolves after `ms` on `timers`. */
export function sleepOn(timers: Timers, ms: number): Promise<void> {
  return new Promise((resolve) => {
    timers.setTimeout(resolve, ms);
  });
}

interface VirtualTimer {
  readonly id: number;
  dueMs: number;
  readonly everyMs: number | undefined;
  readonly fn: () => void;
}

/** Lets every queued promise continuation run (one macrotask turn drains the microtask queue). */
export function settleTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

export class VirtualTimers implements Timers {
  /** Timers that may be armed at once. */
  static readonly timersMax = 1 << 24;
  /** Timers one move may fire: a guard against a timer that re-arms itself at zero delay. */
  static readonly firesPerMoveMax = 10_000_000;
  #nowMs: number;
  #seq = 0;
  /** Live timers by id; the heap may still hold cancelled ones, skipped when they surface. */
  readonly #live = new Map<number, VirtualTimer>();
  readonly #heap: VirtualTimer[] = [];

  constructor(startMs = 0) {
    this.#nowMs = startMs;
  }

  now(): number {
    return this.#nowMs;
  }

  setTimeout(fn: () => void, ms: number): Cancel {
    return this.#arm(fn, ms, undefined);
  }

  setInterval(fn: () => void, ms: number): Cancel {
    return this.#arm(fn, ms, Math.max(1, ms));
  }

  /** Timers armed and not yet fired or cancelled. */
  get armed(): number {
    return this.#live.size;
  }

  /** Fires every timer due by `untilMs` in order, synchronously, then sets the clock to `untilMs`. */
  runUntil(untilMs: number): void {
    for (let fired = 0; ; fired++) {
      assert(fired < VirtualTimers.firesPerMoveMax, 'virtual timers keep re-arming', { fired });
      if (!this.#fireNext(untilMs)) break;
    }
    this.#nowMs = Math.max(this.#nowMs, untilMs);
  }

  /** Fires every timer due by `untilMs` in order, awaiting `settle` after each. */
  async advanceTo(untilMs: number, settle: () => Promise<void>): Promise<void> {
    for (let fired = 0; ; fired++) {
      assert(fired < VirtualTimers.firesPerMoveMax, 'virtual timers keep re-arming', { fired });
      if (!this.#fireNext(untilMs)) break;
      await settle();
    }
    this.#nowMs = Math.max(this.#nowMs, untilMs);
  }

  /** Moves the clock forward by `ms`, one event-loop turn after each timer (and one before the first). */
  async advance(ms: number): Promise<void> {
    assert(ms >= 0 && Number.isFinite(ms), 'time only moves forward', { ms });
    await settleTurn();
    await this.advanceTo(this.#nowMs + ms, settleTurn);
  }

  /** Advances until no timer is left (bounded by `limitMs`); returns the virtual time that passed. */
  async runAll(limitMs = 24 * 3600_000): Promise<number> {
    const startMs = this.#nowMs;
    for (;;) {
      await settleTurn(); // Continuations still queued may set the next timer.
      const next = this.#earliest();
      if (next === undefined || next.dueMs - startMs > limitMs) break;
      await this.advance(next.dueMs - this.#nowMs);
    }
    return this.#nowMs - startMs;
  }

  #arm(fn: () => void, ms: number, everyMs: number | undefined): Cancel {
    assert(Number.isFinite(ms), 'a timer delay is a finite number', { ms });
    if (this.#live.size >= VirtualTimers.timersMax)
      throw new RangeError(`more than ${VirtualTimers.timersMax} virtual timers armed`);
    const t: VirtualTimer = { id: ++this.#seq, dueMs: this.#nowMs + Math.max(0, ms), everyMs, fn };
    this.#live.set(t.id, t);
    heapPush(this.#heap, t);
    return () => {
      this.#live.delete(t.id);
    };
  }

  /** Fires the earliest timer due by `untilMs`; false when none is. */
  #fireNext(untilMs: number): boolean {
    const t = this.#earliest();
    if (t === undefined || t.dueMs > untilMs) return false;
    heapPop(this.#heap);
    this.#nowMs = Math.max(this.#nowMs, t.dueMs);
    if (t.everyMs === undefined) {
      this.#live.delete(t.id);
    } else {
      // An interval re-arms under the same id, so its cancel still finds it.
      t.dueMs += t.everyMs;
      heapPush(this.#heap, t);
    }
    t.fn();
    return true;
  }

  /** The earliest live timer, dropping cancelled ones from the top of the heap. */
  #earliest(): VirtualTimer | undefined {
    for (;;) {
      const top = this.#heap[0];
      if (top === undefined || this.#live.get(top.id) === top) return top;
      heapPop(this.#heap);
    }
  }
}

function before(a: VirtualTimer, b: VirtualTimer): boolean {
  return a.dueMs < b.dueMs || (a.dueMs === b.dueMs && a.id < b.id);
}

function heapPush(heap: VirtualTimer[], item: VirtualTimer): void {
  heap.push(item);
  let i = heap.length - 1;
  while (i > 0) {
    const parent = (i - 1) >> 1;
    const p = heap[parent] as VirtualTimer;
    if (!before(item, p)) break;
    heap[i] = p;
    i = parent;
  }
  heap[i] = item;
}

function heapPop(heap: VirtualTimer[]): void {
  const last = heap.pop();
  if (last === undefined || heap.length === 0) return;
  let i = 0;
  for (;;) {
    const l = 2 * i + 1;
    if (l >= heap.length) break;
    const r = l + 1;
    const child = r < heap.length && before(heap[r] as VirtualTimer, heap[l] as VirtualTimer) ? r : l;
    const c = heap[child] as VirtualTimer;
    if (!before(c, last)) break;
    heap[i] = c;
    i = child;
  }
  heap[i] = last;
}
