/**
 * Stage 2, the batcher: gathers admitted requests and closes a batch when it holds `sizeMax` requests or
 * when `windowMs` has passed since its first request, whichever comes first. A window of 0 closes the
 * batch at the end of the current event-loop turn (setImmediate), so everything submitted in one burst
 * shares one Raft entry without adding a timer's millisecond.
 */
import { assert } from '../../src/lib/assert.js';

export interface BatcherOptions {
  readonly sizeMax: number;
  readonly windowMs: number;
}

export class Batcher<T> {
  #open: T[] = [];
  #timer: NodeJS.Timeout | NodeJS.Immediate | undefined;
  constructor(
    readonly options: BatcherOptions,
    readonly onBatch: (batch: T[]) => void,
  ) {
    assert(options.sizeMax >= 1, 'a batch holds at least one request', { sizeMax: options.sizeMax });
    assert(options.windowMs >= 0, 'the batch window is not negative', { windowMs: options.windowMs });
  }

  get size(): number {
    return this.#open.length;
  }

  add(item: T): void {
    this.#open.push(item);
    if (this.#open.length >= this.options.sizeMax) {
      this.flush();
      return;
    }
    if (this.#timer === undefined) {
      this.#timer =
        this.options.windowMs === 0
          ? setImmediate(() => this.flush())
          : setTimeout(() => this.flush(), this.options.windowMs);
    }
  }

  /** Closes the open batch now (no-op when empty). */
  flush(): void {
    this.#clearTimer();
    if (this.#open.length === 0) return;
    const batch = this.#open;
    this.#open = [];
    this.onBatch(batch);
  }

  /** Stops the timer and hands back what was open, for a pipeline that is shutting down. */
  drain(): T[] {
    this.#clearTimer();
    const open = this.#open;
    this.#open = [];
    return open;
  }

  #clearTimer(): void {
    if (this.#timer === undefined) return;
    clearTimeout(this.#timer as NodeJS.Timeout);
    clearImmediate(this.#timer as NodeJS.Immediate);
    this.#timer = undefined;
  }
}
