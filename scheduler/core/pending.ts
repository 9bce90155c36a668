/**
 * The pending queue: requests that fit nowhere yet, each with the reason placement gave. They are woken
 * (planned again) when committed state frees capacity, and fail with NoCapacityError once their deadline
 * passes. What wakes is the leader core's choice (leader.ts): a node that became ready or changed wakes
 * every request; a release wakes only the requests whose cpu, memory and disk now fit in the free room of a
 * node that released, since only those nodes changed. Pure: the deadline is compared with a time argument.
 */
import { assert } from '../../src/lib/assert.js';

/** Requests the queue holds at most; admission refuses beyond it (OverloadedError). */
export const pendingMax = 100_000;

/** What the queue needs of a request. */
export interface Waiting {
  readonly requestId: string;
  readonly deadlineMs: number;
  reason?: string;
}

export class PendingQueue<T extends Waiting = Waiting> {
  readonly #items = new Map<string, T>();

  get size(): number {
    return this.#items.size;
  }
  has(requestId: string): boolean {
    return this.#items.has(requestId);
  }
  get(requestId: string): T | undefined {
    return this.#items.get(requestId);
  }

  /** The waiting requests in arrival order, without taking them. */
  values(): IterableIterator<T> {
    return this.#items.values();
  }

  add(req: T, reason: string): void {
    assert(this.#items.size < pendingMax, 'pending queue is full', { pendingMax });
    req.reason = reason;
    this.#items.set(req.requestId, req);
  }

  /** Takes one request out (it was placed, cancelled or failed elsewhere). */
  remove(requestId: string): T | undefined {
    const req = this.#items.get(requestId);
    this.#items.delete(requestId);
    return req;
  }

  /** Takes the waiting requests `wakes` accepts (in arrival order) for another planning attempt. */
  wakeWhere(wakes: (req: T) => boolean): T[] {
    const out: T[] = [];
    for (const [id, req] of this.#items) {
      if (!wakes(req)) continue;
      out.push(req);
      this.#items.delete(id);
    }
    return out;
  }

  /** Takes every waiting request (in arrival order) for another planning attempt. */
  wake(): T[] {
    const all = [...this.#items.values()];
    this.#items.clear();
    return all;
  }

  /** Takes the requests whose deadline is at or before `nowMs`. */
  expire(nowMs: number): T[] {
    const out: T[] = [];
    for (const [id, req] of this.#items) {
      if (req.deadlineMs <= nowMs) {
        out.push(req);
        this.#items.delete(id);
      }
    }
    return out;
  }

  /** Empties the queue (a leader stepping down hands its requests back to the callers' retry). */
  takeAll(): T[] {
    return this.wake();
  }
}
