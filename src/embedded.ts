/**
 * The embedded scheduler with machines: `createScheduler({ workers: { driver: 'sim' } })` runs an in-process
 * `NodeWorker` (sim driver) for every node a placement is sent to, so an embedded scheduler takes a sandbox
 * from create to running to terminated with no server and no process.
 *
 * The leader's dispatcher calls the workers directly (`localCommandSink`); the workers' status reports go
 * back through `reportStatus` by the same path as from a `trellis worker` process, merged across nodes: one
 * `status` Raft entry carries every report of a window, whatever node it came from, so thousands of sandboxes
 * starting at once cost a handful of entries.
 */

import type { StatusItem } from '../scheduler/api.js';
import { Scheduler, type SchedulerConfig } from '../scheduler/scheduler.js';
import { assert } from './lib/assert.js';
import type { NodeId } from './lib/ids.js';
import { trellisMetrics } from './lib/metrics.js';
import { createRng } from './lib/prng.js';
import { realTimers, type Timers } from './lib/timers.js';
import { localCommandSink } from './worker/command-sink.js';
import { SimDriver, type SimLatencyModel } from './worker/drivers/sim.js';
import { NodeWorker } from './worker/node-worker.js';
import type { StatusSink } from './worker/protocol.js';
import { mergedStatusSink, StatusMerger, statusMergeWindowMsDefault } from './worker/status-merger.js';

export interface EmbeddedWorkersOptions {
  /** What stands in for a VM. Only `sim` runs in-process. */
  readonly driver: 'sim';
  /** The sim driver's latency model. Default `defaultSimLatencyModel`. */
  readonly model?: SimLatencyModel;
  /** Seed of the latency model; node workers draw from forks of it in the order they start. Default 1. */
  readonly seed?: number;
  /** The workers' clock and timers. Default real time; pass `VirtualTimers` to run boots without waiting. */
  readonly timers?: Timers;
  /**
   * The nodes' status batches are merged into one `reportStatus` call per this window (each node first
   * batches its own reports for the worker's `statusFlushMs`). Default `statusMergeWindowMsDefault`.
   */
  readonly statusFlushMs?: number;
  /** Boots one node runs at once (more queue). Default the worker's. */
  readonly bootsConcurrentMax?: number;
}

export interface EmbeddedSchedulerConfig extends SchedulerConfig {
  /** Run in-process node workers for the registered nodes (see EmbeddedWorkersOptions). Default: none. */
  readonly workers?: EmbeddedWorkersOptions;
}

/** Reports one merged status call carries, at most (the command's own bound is larger). */
export const embeddedStatusBatchMax = 10_000;

/**
 * The in-process workers of an embedded scheduler, one per node, made when the first command arrives. Their
 * status path is the `trellis worker` process's: each node's batcher (retries, bounded backlog), then one
 * merged call for all nodes per window (`StatusMerger`, `mergedStatusSink`).
 */
export class LocalFleet {
  readonly #o: EmbeddedWorkersOptions;
  readonly #timers: Timers;
  readonly #workers = new Map<string, NodeWorker>();
  readonly #rng;
  readonly #merger: StatusMerger;
  #report: (items: readonly StatusItem[]) => Promise<void> = async () => {};
  #closed = false;
  /** Status batches the scheduler refused for good (dropped: resending could not change them). */
  refused = 0;

  constructor(options: EmbeddedWorkersOptions) {
    assert(options.driver === 'sim', 'embedded workers run the sim driver', { driver: options.driver });
    this.#o = options;
    this.#timers = options.timers ?? realTimers;
    this.#rng = createRng(options.seed ?? 1);
    this.#merger = new StatusMerger({
      send: (items) => this.#report(items),
      timers: this.#timers,
      windowMs: options.statusFlushMs ?? statusMergeWindowMsDefault,
      itemsMax: embeddedStatusBatchMax,
    });
  }

  /** Where merged status reports go (the scheduler's `reportStatus`). */
  bind(report: (items: readonly StatusItem[]) => Promise<void>): void {
    this.#report = report;
  }

  /** The worker of `nodeId`, started on first use (undefined once the fleet is closed). */
  workerOf(nodeId: string): NodeWorker | undefined {
    if (this.#closed) return undefined;
    let w = this.#workers.get(nodeId);
    if (w === undefined) {
      w = new NodeWorker({
        nodeId: nodeId as NodeId,
        driver: new SimDriver({
          rng: this.#rng.fork(),
          timers: this.#timers,
          ...(this.#o.model === undefined ? {} : { model: this.#o.model }),
        }),
        timers: this.#timers,
        statusSink: this.#sinkOf(nodeId),
        ...(this.#o.bootsConcurrentMax === undefined
          ? {}
          : { bootsConcurrentMax: this.#o.bootsConcurrentMax }),
      });
      this.#workers.set(nodeId, w);
    }
    return w;
  }

  /** The node's sink; once the fleet closes (after its scheduler), reports have nowhere to go and are dropped. */
  #sinkOf(nodeId: string): StatusSink {
    const merged = mergedStatusSink(this.#merger, nodeId, () => {
      this.refused++;
    });
    return async (batch) => {
      if (!this.#closed) await merged(batch);
    };
  }

  get workers(): ReadonlyMap<string, NodeWorker> {
    return this.#workers;
  }

  /** Ends every machine and stops taking commands; reports still waiting are dropped (the scheduler is closed). */
  async close(): Promise<void> {
    this.#closed = true;
    this.#merger.flush();
    await Promise.all([...this.#workers.values()].map((w) => w.close({ stopMachines: true })));
  }
}

/** A `Scheduler` with in-process node workers; `close()` ends them too. */
export class EmbeddedScheduler extends Scheduler {
  readonly fleet: LocalFleet;

  constructor(config: EmbeddedSchedulerConfig & { readonly workers: EmbeddedWorkersOptions }) {
    const fleet = new LocalFleet(config.workers);
    const { workers: _workers, ...rest } = config;
    super({
      ...rest,
      dispatch: {
        ...(config.metrics === undefined ? {} : { metrics: trellisMetrics(config.metrics) }),
        ...config.dispatch,
        sink: localCommandSink((id) => fleet.workerOf(id)),
      },
    });
    this.fleet = fleet;
    fleet.bind((items) => this.reportStatus(items));
  }

  override async close(): Promise<void> {
    await super.close();
    await this.fleet.close();
  }
}

/**
 * Creates a scheduler; with no `log`, on an in-process cluster of 3 replicas. With `workers`, in-process
 * node workers act on its placements (EmbeddedScheduler).
 */
export function createScheduler(config: EmbeddedSchedulerConfig = {}): Scheduler {
  const workers = config.workers;
  if (workers === undefined) return new Scheduler(config);
  return new EmbeddedScheduler({ ...config, workers });
}
