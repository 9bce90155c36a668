/**
 * The clock and timer source a driver runs on, injected so the same driver runs on real time in production
 * and on virtual time in a deterministic simulation (which fires due timers itself, in order).
 */

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

interface VirtualTimer {
  readonly id: number;
  dueMs: number;
  readonly everyMs: number | undefined;
  readonly fn: () => void;
  cancelled: boolean;
}

/**
 * Virtual time for deterministic runs: nothing fires until the owner advances the clock, and then due timers
 * fire in (due time, creation order), each followed by a drain of the work it started (`settle`), so a seed
 * replays exactly. Intervals re-arm themselves; `timersMax` bounds how many may be armed at once.
 */
export class VirtualTimers implements Timers {
  static readonly timersMax = 1_000_000;
  #nowMs: number;
  #seq = 0;
  readonly #armed = new Map<number, VirtualTimer>();

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
    return this.#armed.size;
  }

  #arm(fn: () => void, ms: number, everyMs: number | undefined): Cancel {
    if (this.#armed.size >= VirtualTimers.timersMax)
      throw new RangeError(`more than ${VirtualTimers.timersMax} virtual timers armed`);
    const t: VirtualTimer = {
      id: ++this.#seq,
      dueMs: this.#nowMs + Math.max(0, ms),
      everyMs,
      fn,
      cancelled: false,
    };
    this.#armed.set(t.id, t);
    return () => {
      t.cancelled = true;
      this.#armed.delete(t.id);
    };
  }

  #next(untilMs: number): VirtualTimer | undefined {
    let best: VirtualTimer | undefined;
    for (const t of this.#armed.values())
      if (
        t.dueMs <= untilMs &&
        (best === undefined || t.dueMs < best.dueMs || (t.dueMs === best.dueMs && t.id < best.id))
      )
        best = t;
    return best;
  }

  /**
   * Moves the clock to `untilMs`, firing every timer due by then in order, without waiting between them:
   * for a driver that settles once per step (one turn of the event loop after the whole step).
   */
  runUntil(untilMs: number): void {
    for (let fired = 0; fired < VirtualTimers.timersMax; fired++) {
      const t = this.#next(untilMs);
      if (t === undefined) break;
      this.#fire(t);
    }
    this.#nowMs = Math.max(this.#nowMs, untilMs);
  }

  #fire(t: VirtualTimer): void {
    this.#nowMs = Math.max(this.#nowMs, t.dueMs);
    if (t.everyMs === undefined) this.#armed.delete(t.id);
    else t.dueMs += t.everyMs;
    t.fn();
  }

  /**
   * Moves the clock to `untilMs`, firing every timer due by then in order; after each, `settle` runs (the
   * caller's way to let promises and queued deliveries finish, e.g. a turn of the event loop).
   */
  async advanceTo(untilMs: number, settle: () => Promise<void>): Promise<void> {
    for (;;) {
      const t = this.#next(untilMs);
      if (t === undefined) break;
      this.#fire(t);
      await settle();
    }
    this.#nowMs = Math.max(this.#nowMs, untilMs);
  }
}
