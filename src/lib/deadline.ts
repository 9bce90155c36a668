/**
 * Deadlines on forwarded work. Every request carries its deadline on the wire as two numbers:
 *
 * - `atMs`, an absolute wall-clock time (the sender's clock), never extended by a hop. It catches a stall:
 *   a request that sat in the socket buffer of a paused replica (GC pause, VM stall, SIGSTOP) arrives, on
 *   wake-up, with `atMs` already in the past, and is dropped instead of being forwarded or proposed.
 * - `budgetMs`, the time left when it was sent, re-based on the receiver's own clock at each hop. It keeps
 *   a receiver whose clock is behind the sender's from keeping the request alive longer than its budget.
 *
 * The receiver's deadline is the earlier of the two (`Deadline.received`). When it forwards, it sends its
 * own deadline with what remains (`toWire`), so the deadline can only shrink along a path. Clocks need only
 * agree to well within a request's timeout (NTP): a receiver whose clock runs ahead by more than the
 * budget drops everything as expired (a liveness, not a safety, problem; dedup by client session is what
 * keeps a late duplicate from applying twice).
 *
 * Used by `trellis server`'s NATS request path (src/cli/server.ts); a service that forwards requests to a
 * leader reuses it the same way: `received` at the door, `expired()` before forwarding and again before
 * proposing, `toWire()` and `remainingMs()` (as the forward's timeout) when passing it on.
 */
import { z } from 'zod';
import { assert } from './assert.js';
import { DeadlineExceededError } from './errors.js';

/** The longest budget a request may carry (a membership change waits for a learner's catch-up). */
export const deadlineBudgetMsMax = 10 * 60_000;

/** The wire form of a deadline; see the module comment for the meaning of each field. */
export interface DeadlineWire {
  readonly atMs: number;
  readonly budgetMs: number;
}

/** Validates a received wire deadline (bad input is refused before any clock arithmetic). */
export const deadlineWireSchema = z.strictObject({
  atMs: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
  budgetMs: z.number().int().min(0).max(deadlineBudgetMsMax),
});

/** Milliseconds since the epoch; injected so tests and simulations control time. */
export type WallClock = () => number;

export class Deadline {
  readonly #now: WallClock;
  /** This process's deadline, on its own clock. */
  readonly atMs: number;

  private constructor(atMs: number, now: WallClock) {
    this.atMs = atMs;
    this.#now = now;
  }

  /** A deadline `budgetMs` from now, for a request this process originates. */
  static after(budgetMs: number, now: WallClock = Date.now): Deadline {
    assert(Number.isInteger(budgetMs) && budgetMs >= 0, 'a budget is a whole number of ms', { budgetMs });
    return new Deadline(now() + Math.min(budgetMs, deadlineBudgetMsMax), now);
  }

  /** The deadline of a request just received: the earlier of its absolute time and its re-based budget. */
  static received(wire: DeadlineWire, now: WallClock = Date.now): Deadline {
    const nowMs = now();
    return new Deadline(Math.min(wire.atMs, nowMs + Math.min(wire.budgetMs, deadlineBudgetMsMax)), now);
  }

  /** Milliseconds left, 0 once past. */
  remainingMs(): number {
    return Math.max(0, this.atMs - this.#now());
  }

  expired(): boolean {
    return this.#now() >= this.atMs;
  }

  /** Throws DeadlineExceededError (the work has not been done) when past; `what` names the work. */
  check(what: string): void {
    if (this.expired())
      throw new DeadlineExceededError(`${what}: deadline passed ${this.#now() - this.atMs} ms ago; dropped`);
  }

  /** What to send with a request passed on: this deadline and the time left. */
  toWire(): DeadlineWire {
    return { atMs: this.atMs, budgetMs: this.remainingMs() };
  }
}
