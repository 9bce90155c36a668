/**
 * A counting semaphore with a bounded wait queue: at most `activeMax` holders, at most `queuedMax`
 * waiters (first come, first served). A caller that would exceed the queue is refused at once, so an
 * overloaded worker says so instead of piling up work without limit.
 */
import { assert } from '../lib/assert.js';
import { WorkerBusyError } from './errors.js';

export class BoundedSlots {
  #active = 0;
  readonly #waiters: (() => void)[] = [];
  constructor(
    readonly name: string,
    readonly activeMax: number,
    readonly queuedMax: number,
  ) {
    assert(Number.isInteger(activeMax) && activeMax >= 1, 'a semaphore needs at least one slot', {
      activeMax,
    });
    assert(Number.isInteger(queuedMax) && queuedMax >= 0, 'queue bound is a non-negative integer', {
      queuedMax,
    });
  }
  get active(): number {
    return this.#active;
  }
  get queued(): number {
    return this.#waiters.length;
  }
  /** True when `run` would be refused now. */
  get full(): boolean {
    return this.#active >= this.activeMax && this.#waiters.length >= this.queuedMax;
  }

  /** Runs `fn` in a slot, waiting for one if needed; throws WorkerBusyError when the queue is full. */
  async run<T>(fn: () => Promise<T>): Promise<T> {
    await this.#acquire();
    try {
      return await fn();
    } finally {
      this.#release();
    }
  }

  #acquire(): Promise<void> {
    if (this.#active < this.activeMax) {
      this.#active++;
      return Promise.resolve();
    }
    if (this.#waiters.length >= this.queuedMax) {
      return Promise.reject(
        new WorkerBusyError(
          `${this.name}: ${this.#active} running and ${this.#waiters.length} queued; retry later`,
        ),
      );
    }
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  #release(): void {
    assert(this.#active > 0, 'release without acquire', { name: this.name });
    const next = this.#waiters.shift();
    if (next === undefined) this.#active--;
    else next(); // The slot passes straight to the next waiter.
  }
}
