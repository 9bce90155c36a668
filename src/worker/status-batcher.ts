/**
 * Batches status reports: a batch goes out when `batchMax` reports are waiting or `flushMs` after the
 * first one arrived, whichever is first (one message per batch, not one per sandbox). A batch the sink
 * refuses (transport down) is kept and retried on the next flush; beyond `pendingMax` the oldest reports
 * are dropped and counted, because reconcile after reconnection repairs what statuses missed.
 */
import { assert } from '../lib/assert.js';
import type { Cancel, Timers } from '../lib/timers.js';
import type { StatusReport, StatusSink } from './protocol.js';

export interface StatusBatcherOptions {
  readonly sink: StatusSink;
  readonly timers: Timers;
  readonly flushMs: number;
  readonly batchMax: number;
  readonly pendingMax: number;
}

export class StatusBatcher {
  readonly #o: StatusBatcherOptions;
  #pending: StatusReport[] = [];
  #timer: Cancel | undefined;
  #flushing: Promise<void> = Promise.resolve();
  /** Reports dropped because the sink failed for longer than `pendingMax` reports. */
  dropped = 0;
  /** Batches the sink refused (each retried later). */
  sinkFailures = 0;
  batchesSent = 0;

  constructor(options: StatusBatcherOptions) {
    assert(options.batchMax >= 1 && options.pendingMax >= options.batchMax, 'pendingMax >= batchMax >= 1', {
      batchMax: options.batchMax,
      pendingMax: options.pendingMax,
    });
    this.#o = options;
  }

  push(report: StatusReport): void {
    this.#pending.push(report);
    if (this.#pending.length > this.#o.pendingMax) {
      const over = this.#pending.length - this.#o.pendingMax;
      this.#pending.splice(0, over);
      this.dropped += over;
    }
    if (this.#pending.length >= this.#o.batchMax) void this.#enqueue(false);
    else this.#arm();
  }

  /** Sends everything waiting now; resolves when the sink has taken it (or refused it). */
  flush(): Promise<void> {
    return this.#enqueue(true);
  }

  /** Sends in order behind any send in progress; `all` = false sends only full batches (size trigger). */
  #enqueue(all: boolean): Promise<void> {
    this.#flushing = this.#flushing.then(() => this.#send(all));
    return this.#flushing;
  }

  get pendingCount(): number {
    return this.#pending.length;
  }

  /** Stops the timer; reports still waiting stay for a last `flush`. */
  stop(): void {
    this.#timer?.();
    this.#timer = undefined;
  }

  #arm(): void {
    if (this.#timer !== undefined) return;
    this.#timer = this.#o.timers.setTimeout(() => {
      this.#timer = undefined;
      void this.flush();
    }, this.#o.flushMs);
  }

  async #send(all: boolean): Promise<void> {
    while (this.#pending.length >= this.#o.batchMax || (all && this.#pending.length > 0)) {
      const batch = this.#pending.slice(0, this.#o.batchMax);
      this.#pending = this.#pending.slice(batch.length);
      try {
        await this.#o.sink(batch);
        this.batchesSent++;
      } catch {
        this.sinkFailures++;
        this.#pending = [...batch, ...this.#pending];
        this.#arm();
        return;
      }
    }
    // A partial batch left after full ones waits for the window rather than leaving alone.
    if (this.#pending.length === 0) this.stop();
    else this.#arm();
  }
}
