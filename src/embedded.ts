/**
 * The embedded scheduler with machines: `createScheduler({ workers: { driver: 'sim' } })` runs an in-process
 * `NodeWorker` (sim driver) for every node a placement is sent to, so an embedded scheduler takes a sandbox
 * from create to running to terminated with no server and no process.
 *
 * The leader's dispatcher calls the workers directly (`localCommandSink`); the workers' status reports go
 * back through `reportStatus`, merged across nodes: one `status` Raft entry carries every report of a flush
 * window, whatever node it came from, so thousands of sandboxes starting at once cost a handful of entries.
 */

import type { StatusItem } from '../scheduler/api.js';
import { Scheduler, type SchedulerConfig } from '../scheduler/scheduler.js';
import { assert } from './lib/assert.js';
import type { NodeId } from './lib/ids.js';
import { createRng } from './lib/prng.js';
import { type Cancel, realTimers, type Timers } from './lib/timers.js';
import { localCommandSink } from './worker/command-sink.js';
import { SimDriver, type SimLatencyModel } from './worker/drivers/sim.js';
import { NodeWorker } from './worker/node-worker.js';
import { type StatusReport, statusItemOf } from './worker/protocol.js';

export interface EmbeddedWorkersOptions {
  /** What stands in for a VM. Only `sim` runs in-process. */
  readonly driver: 'sim';
  /** The sim driver's latency model. Default `defaultSimLatencyModel`. */
  readonly model?: SimLatencyModel;
  /** Seed of the latency model; node workers draw from forks of it in the order they start. Default 1. */
  readonly seed?: number;
  /** The workers' clock and timers. Default real time; pass `VirtualTimers` to run boots without waiting. */
  readonly timers?: Timers;
  /** Status reports from all nodes are merged and sent once per this window. Default 10 ms. */
  readonly statusFlushMs?: number;
  /** Boots one node runs at once (more queue). Default the worker's. */
  readonly bootsConcurrentMax?: number;
}

export interface EmbeddedSchedulerConfig extends SchedulerConfig {
  /** Run in-process node workers for the registered nodes (see EmbeddedWorkersOptions). Default: none. */
  readonly workers?: EmbeddedWorkersOptions;
}

/** Status reports held while no leader takes them, at most; older ones are dropped (reconcile repairs). */
export const embeddedStatusPendingMax = 100_000;
/** Reports one merged status entry carries, at most (the command's own bound is larger). */
export const embeddedStatusBatchMax = 10_000;

/** The in-process workers of an embedded scheduler, one per node, made when the first command arrives. */
export class LocalFleet {
  readonly #o: EmbeddedWorkersOptions;
  readonly #timers: Timers;
  readonly #workers = new Map<string, NodeWorker>();
  readonly #rng;
  #report: (items: readonly StatusItem[]) => Promise<void> = async () => {};
  #pending: StatusItem[] = [];
  #timer: Cancel | undefined;
  #flushing = false;
  #closed = false;
  /** Reports dropped because no leader took them for too long. */
  dropped = 0;

  constructor(options: EmbeddedWorkersOptions) {
    assert(options.driver === 'sim', 'embedded workers run the sim driver', { driver: options.driver });
    this.#o = options;
    this.#timers = options.timers ?? realTimers;
    this.#rng = createRng(options.seed ?? 1);
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
        // The worker hands each report on at once; this fleet does the batching, across nodes.
        statusFlushMs: 0,
        statusSink: async (batch) => this.#push(nodeId, batch),
        ...(this.#o.bootsConcurrentMax === undefined
          ? {}
          : { bootsConcurrentMax: this.#o.bootsConcurrentMax }),
      });
      this.#workers.set(nodeId, w);
    }
    return w;
  }

  get workers(): ReadonlyMap<string, NodeWorker> {
    return this.#workers;
  }

  #push(nodeId: string, batch: readonly StatusReport[]): void {
    for (const r of batch) this.#pending.push(statusItemOf(nodeId, r));
    if (this.#pending.length > embeddedStatusPendingMax) {
      const over = this.#pending.length - embeddedStatusPendingMax;
      this.#pending.splice(0, over);
      this.dropped += over;
    }
    this.#arm();
  }

  #arm(): void {
    if (this.#timer !== undefined || this.#closed) return;
    this.#timer = this.#timers.setTimeout(() => {
      this.#timer = undefined;
      void this.flush();
    }, this.#o.statusFlushMs ?? 10);
  }

  /** Sends every waiting report, in order; a batch no leader took stays for the next window. */
  async flush(): Promise<void> {
    if (this.#flushing) return;
    this.#flushing = true;
    try {
      while (this.#pending.length > 0) {
        const batch = this.#pending.slice(0, embeddedStatusBatchMax);
        try {
          await this.#report(batch);
        } catch {
          if (!this.#closed) this.#arm();
          return;
        }
        this.#pending = this.#pending.slice(batch.length);
      }
    } finally {
      this.#flushing = false;
    }
  }

  /** Ends every machine and stops taking commands; reports still waiting are dropped. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#timer?.();
    this.#timer = undefined;
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
      dispatch: { ...config.dispatch, sink: localCommandSink((id) => fleet.workerOf(id)) },
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
