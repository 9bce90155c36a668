/**
 * Merges the status reports of every node a worker process runs into one `reportStatus` call per window.
 * Each node batches its own reports (status-batcher.ts); with `--sim-nodes` a process runs hundreds of
 * nodes, and one call per node batch was one API request (and one turn of the leader) per node every few
 * milliseconds. Merged, a window's reports from all nodes travel as one request: the items name their
 * node, and the scheduler applies each item as its own report would be (status is idempotent per item).
 *
 * Every caller of a merged call gets that call's outcome: its node's sink decides as before what a
 * failure means (retry the batch, or log and drop it).
 */
import type { StatusItem } from '../../scheduler/api.js';
import { assert } from '../lib/assert.js';
import { TrellisError } from '../lib/errors.js';
import type { Cancel, Timers } from '../lib/timers.js';
import { type StatusReport, type StatusSink, statusItemOf } from './protocol.js';

/** How long a merge stays open by default: short against a boot, long enough to gather a burst. */
export const statusMergeWindowMsDefault = 5;

export interface StatusMergerOptions {
  /** Sends one merged call (the API's `reportStatus`). */
  readonly send: (items: StatusItem[]) => Promise<void>;
  readonly timers: Timers;
  /** How long a merge stays open after its first items arrive. */
  readonly windowMs: number;
  /** Items one call carries at most (the API's bound); a merge that would exceed it is sent first. */
  readonly itemsMax: number;
}

interface Merge {
  readonly items: StatusItem[];
  readonly waiters: { resolve: () => void; reject: (err: unknown) => void }[];
  cancel: Cancel | undefined;
}

export class StatusMerger {
  readonly #o: StatusMergerOptions;
  #open: Merge | undefined;
  /** Merged calls sent, and the node batches they carried (for tests and logs). */
  readonly counters = { calls: 0, batches: 0 };

  constructor(options: StatusMergerOptions) {
    assert(options.itemsMax >= 1 && options.windowMs >= 0, 'itemsMax >= 1, windowMs >= 0', {
      itemsMax: options.itemsMax,
      windowMs: options.windowMs,
    });
    this.#o = options;
  }

  /** Adds one node's batch to the open merge; resolves or rejects with the merged call's outcome. */
  add(items: readonly StatusItem[]): Promise<void> {
    assert(items.length <= this.#o.itemsMax, 'a node batch fits one call', {
      items: items.length,
      itemsMax: this.#o.itemsMax,
    });
    if (items.length === 0) return Promise.resolve();
    const open = this.#open;
    if (open !== undefined && open.items.length + items.length > this.#o.itemsMax) this.#send(open);
    let merge = this.#open;
    if (merge === undefined) {
      const fresh: Merge = { items: [], waiters: [], cancel: undefined };
      fresh.cancel = this.#o.timers.setTimeout(() => this.#send(fresh), this.#o.windowMs);
      this.#open = fresh;
      merge = fresh;
    }
    merge.items.push(...items);
    const m = merge;
    return new Promise((resolve, reject) => m.waiters.push({ resolve, reject }));
  }

  /** Sends the open merge now (a worker that stops). */
  flush(): void {
    if (this.#open !== undefined) this.#send(this.#open);
  }

  #send(m: Merge): void {
    m.cancel?.();
    if (this.#open === m) this.#open = undefined;
    this.counters.calls++;
    this.counters.batches += m.waiters.length;
    let sent: Promise<void>;
    try {
      sent = this.#o.send(m.items);
    } catch (err) {
      sent = Promise.reject(err);
    }
    sent.then(
      () => {
        for (const w of m.waiters) w.resolve();
      },
      (err: unknown) => {
        for (const w of m.waiters) w.reject(err);
      },
    );
  }
}

/**
 * A node's status sink through `merger`, for every host of node workers (the `trellis worker` process, the
 * embedded fleet). A transport failure (`UNAVAILABLE`, `OUTCOME_UNKNOWN`, anything untyped) rethrows, so the
 * node's batcher keeps the batch and retries it; a definite refusal (a sandbox the scheduler does not know)
 * goes to `refused` and the batch is dropped, since resending cannot change it and would hold back every
 * later report of the node.
 */
export function mergedStatusSink(
  merger: StatusMerger,
  nodeId: string,
  refused: (err: TrellisError) => void,
): StatusSink {
  return async (batch: readonly StatusReport[]): Promise<void> => {
    try {
      await merger.add(batch.map((r) => statusItemOf(nodeId, r)));
    } catch (err) {
      if (err instanceof TrellisError && err.code !== 'UNAVAILABLE' && err.code !== 'OUTCOME_UNKNOWN') {
        refused(err);
        return;
      }
      throw err;
    }
  };
}
