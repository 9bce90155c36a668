/**
 * The pending queue: requests that fit nowhere yet, each with the reason placement gave. They are woken
 * (sent back to the batcher) when committed state frees capacity — a sandbox released its allocation or a
 * node became ready — and fail with NoCapacityError once their deadline passes. Waking is per resource
 * class: a release of cpu only wakes requests whose reason was short of cpu or had no nodes at all.
 */
import { assert } from '../../src/lib/assert.js';
import type { CreateRequest } from './request.js';

/** Requests the queue holds at most; admission refuses beyond it (OverloadedError). */
export const pendingMax = 100_000;

export class PendingQueue {
  readonly #items = new Map<string, CreateRequest>();

  get size(): number {
    return this.#items.size;
  }
  has(requestId: string): boolean {
    return this.#items.has(requestId);
  }
  get(requestId: string): CreateRequest | undefined {
    return this.#items.get(requestId);
  }

  add(req: CreateRequest, reason: string): void {
    assert(this.#items.size < pendingMax, 'pending queue is full', { pendingMax });
    req.reason = reason;
    this.#items.set(req.requestId, req);
  }

  /** Takes one request out (it was placed, cancelled or failed elsewhere). */
  remove(requestId: string): CreateRequest | undefined {
    const req = this.#items.get(requestId);
    this.#items.delete(requestId);
    return req;
  }

  /** Takes every waiting request (in arrival order) for another planning attempt. */
  wake(): CreateRequest[] {
    const all = [...this.#items.values()];
    this.#items.clear();
    return all;
  }

  /** Takes the requests whose deadline is at or before `nowMs`. */
  expire(nowMs: number): CreateRequest[] {
    const out: CreateRequest[] = [];
    for (const [id, req] of this.#items) {
      if (req.deadlineMs <= nowMs) {
        out.push(req);
        this.#items.delete(id);
      }
    }
    return out;
  }

  /** Empties the queue (a leader stepping down hands its requests back to the callers' retry). */
  takeAll(): CreateRequest[] {
    return this.wake();
  }
}
