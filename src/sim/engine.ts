/**
 * The discrete-event engine. Virtual time only: nothing here reads a clock for a decision (the wall clock is
 * read only to report planning latency). Events sit in a binary heap keyed on (time, rank, sequence); at one
 * instant node events come first, then departures (so freed room is there), then arrivals, then the batch
 * flushes, then sampling.
 *
 * Arrivals collect into a batch, as in the leader's batcher: a batch is planned when it reaches the policy's
 * `batchSize`, or at the end of its window (`batchWindowMs`; 0 = everything arriving at one instant).
 * Departures collect the same way into one `status` entry. Every scheduling decision is the leader's own
 * (scheduler/core/leader.ts, run through `SchedulerCore` by core.ts): admission, planning, verification, a
 * request that fits nowhere waiting as a committed `pending` sandbox until committed room frees where it
 * would fit (woken into the open batch), or its deadline passes (then it fails with the reason placement
 * gave, through the leader's tick at that instant); with `pendingTimeoutMs` 0 it is rejected at once.
 *
 * Protocols: `replay` honours arrival times and lifetimes; `inflation` (as the FGD paper's evaluation) shuffles
 * the arrivals, ignores departures, and keeps submitting until the arrived demand reaches `targetPct` of the
 * cluster's capacity in `resource`, recording allocation against arrived demand.
 */

import { z } from 'zod';
import {
  fragmentation,
  gpuMilliPerDevice,
  type PlanOptions,
  type ReferenceShape,
} from '../../placement/index.js';
import type { PlaceItem, SandboxSpec } from '../../scheduler/commands.js';
import type { Answer, LiveRequest } from '../../scheduler/core/leader.js';
import { assert } from '../lib/assert.js';
import { ConfigError } from '../lib/errors.js';
import { createRng } from '../lib/prng.js';
import { parseWith } from '../lib/validate.js';
import { clusterEvents, clusterNodes } from './cluster.js';
import { reasonLabel, SimCore } from './core.js';
import { EventHeap } from './heap.js';
import {
  decadeBounds,
  histogram,
  type InflationPoint,
  observe,
  type RunResult,
  type Sample,
  type Totals,
  type Utilization,
} from './metrics.js';
import { planOptionsOf } from './policy.js';
import type { ClusterSpec, PolicySpec } from './spec.js';
import type { Arrival } from './workload.js';

/** Samples one replay run keeps at most (the interval grows to fit). */
export const samplesMax = 200;
/** Inflation points kept at most. */
export const inflationPointsMax = 2_000;

export interface InflationOptions {
  /** Stop once arrived demand reaches this share of capacity, in percent (e.g. 100). */
  readonly targetPct: number;
  /** Which resource demand and capacity are measured in; default `gpu` on a cluster with GPUs, else `cpu`. */
  readonly resource?: 'cpu' | 'memory' | 'gpu';
}

export interface SimOptions {
  readonly seed: number;
  readonly protocol?: 'replay' | 'inflation';
  readonly inflation?: InflationOptions;
  readonly policy: PolicySpec;
  /** Virtual ms a batch collects arrivals (and departures); 0 = one instant. Default 0. */
  readonly batchWindowMs?: number;
  /** Virtual ms a request may wait for room; 0 = rejected at once. Default 30,000, as the leader's. */
  readonly pendingTimeoutMs?: number;
  /** Virtual ms between samples; default spreads `samplesMax` over the arrivals' span. */
  readonly sampleEveryMs?: number;
  /** The shape fragmentation is measured against; default the most common arrival shape. */
  readonly fragmentationShape?: ReferenceShape;
  /** Keep request id → node id (for comparisons). */
  readonly recordPlacements?: boolean;
  /** Called now and then with arrivals processed so far, and once at the end of the run. */
  readonly onProgress?: (arrived: number) => void;
}

enum Kind {
  Node = 0,
  Depart = 1,
  Suspend = 2,
  Resume = 3,
  ReleaseFlush = 4,
  Arrive = 5,
  Deadline = 6,
  BatchFlush = 7,
  Sample = 8,
}

/**
 * What an event carries; its kind is its rank in the heap. A departure, suspend or resume carries the live
 * sandbox's own record, a deadline the request id and an arrival its `Arrival`, with no wrapper: a departure
 * waits in the heap for the sandbox's whole life, so a wrapper per sandbox was one more old-generation object
 * each, and carrying the record spares a lookup by id per event (a map of every live sandbox, read, written
 * and deleted once each per sandbox, was ~8% of the 1M-event bench).
 */
type NodeEv = { readonly nodeId: string; readonly what: 'fail' | 'drain' | 'return' };
type Ev = NodeEv | Arrival | Live | string | undefined;

interface Live {
  readonly a: Arrival;
  /** The arrival's id, kept here too: a departure then reads this record alone. */
  readonly id: string;
  nodeId: string;
  state: 'placed' | 'suspended';
  /** Resumed once: the scheduler holds it `running` (a placed one stays `placed` in the simulator). */
  running: boolean;
  gpuMilli: number;
  /** Departed or lost: later events for it (still in the heap) do nothing. */
  gone: boolean;
}

/** The GPU share a spec asks for, in milli-GPU. */
export function gpuMilliOf(spec: SandboxSpec): number {
  return spec.gpu === undefined ? 0 : (spec.gpu.count ?? 0) * gpuMilliPerDevice + (spec.gpu.milli ?? 0);
}

/**
 * The numbers of SimOptions a library caller may get wrong (the CLI checks its flags itself): a batch size
 * or sample interval of 0 ran for ever, and a NaN failed as an internal assertion. Functions and objects the
 * schema does not name pass through.
 */
const simOptionsSchema = z
  .object({
    seed: z.int(),
    inflation: z
      .object({
        targetPct: z.number().positive().max(1000),
        resource: z.enum(['cpu', 'memory', 'gpu']).optional(),
      })
      .optional(),
    policy: z.object({ batchSize: z.int().min(1).optional() }).loose(),
    batchWindowMs: z.number().min(0).max(1e12).optional(),
    pendingTimeoutMs: z.number().min(0).max(1e13).optional(),
    sampleEveryMs: z.number().min(1).max(1e15).optional(),
  })
  .loose();

/** Runs one simulation of `arrivals` (in time order for replay) on `cluster` under `options.policy`. */
export function simulate(cluster: ClusterSpec, arrivals: readonly Arrival[], options: SimOptions): RunResult {
  parseWith(simOptionsSchema, options, 'options');
  return new Run(cluster, arrivals, options).run();
}

class Run {
  readonly #o: SimOptions;
  readonly #core: SimCore;
  readonly #heap = new EventHeap<Ev>();
  readonly #plan: PlanOptions;
  readonly #batchSize: number;
  readonly #windowMs: number;
  readonly #timeoutMs: number;
  readonly #protocol: 'replay' | 'inflation';
  readonly #arrivals: readonly Arrival[];
  readonly #cluster: ClusterSpec;
  #next = 0;
  #now = 0;
  /** Arrivals admitted and not yet answered (in the open batch or pending), by id. */
  readonly #open = new Map<string, Arrival>();
  /** Instants a leader tick is scheduled at (a parked request's deadline). */
  readonly #ticksAt = new Set<number>();
  #batchFlushAt = -1;
  /** Departures since the last release flush; `running` ones end through `terminating`. */
  #releases: { readonly id: string; readonly running: boolean }[] = [];
  /**
   * Some node gave room back since the last wake (only whether, not which: the resumes retry all the same; a
   * set of node ids was a hash per departure).
   */
  #freed = false;
  #releaseFlushAt = -1;
  /** Sandboxes placed or suspended and not yet departed or lost. */
  #liveCount = 0;
  /**
   * The same by id, kept only when the cluster has node failures: a failure names its lost sandboxes by id,
   * and that is the only place the engine finds a sandbox by id (every other event carries its record).
   */
  #liveById: Map<string, Live> | undefined;
  /** Suspended sandboxes whose resume found no room, in the order they first tried. */
  readonly #resumeWaiting = new Set<Live>();
  #gpuAllocated = 0;
  readonly #totals: Totals = {
    arrived: 0,
    placed: 0,
    rejected: 0,
    rejectedByReason: {},
    pendingAtEnd: 0,
    departed: 0,
    lost: 0,
    suspended: 0,
    resumed: 0,
    events: 0,
  };
  readonly #samples: Sample[] = [];
  readonly #inflation: InflationPoint[] = [];
  readonly #waitMs = histogram(decadeBounds(1, 1e7));
  readonly #planMs = histogram(decadeBounds(0.01, 1e4));
  #planCalls = 0;
  readonly #placements = new Map<string, string>();
  readonly #rejections = new Map<string, string>();
  readonly #shape: ReferenceShape;
  #sampleEveryMs = 0;
  // Inflation: demand arrived so far, in the measured resource, and the capacity it is measured against.
  #arrivedDemand = 0;
  #demandCapacity = 0;
  #demandResource: 'cpu' | 'memory' | 'gpu' = 'cpu';
  #lastPointPct = -1;

  constructor(cluster: ClusterSpec, arrivals: readonly Arrival[], o: SimOptions) {
    this.#o = o;
    this.#cluster = cluster;
    this.#protocol = o.protocol ?? 'replay';
    this.#plan = planOptionsOf(o.policy, arrivals);
    this.#batchSize = o.policy.batchSize ?? 4096;
    this.#windowMs = o.batchWindowMs ?? 0;
    this.#timeoutMs = this.#protocol === 'inflation' ? 0 : (o.pendingTimeoutMs ?? 30_000);
    this.#core = new SimCore(this.#timeoutMs, this.#plan);
    if (this.#protocol === 'inflation') {
      // Shuffled (seeded), submitted one millisecond apart, no lifetimes.
      const shuffled = createRng(o.seed).shuffle([...arrivals]);
      this.#arrivals = shuffled.map((a, i) => ({
        id: a.id,
        spec: a.spec,
        atMs: i,
        lifetimeMs: Number.POSITIVE_INFINITY,
      }));
    } else {
      // A library caller's arrivals are checked as the readers check a trace's rows: a time or lifetime
      // that is negative or not a number was an internal assertion deep in the run.
      for (let i = 0; i < arrivals.length; i++) {
        const a = arrivals[i] as Arrival;
        if (!(Number.isFinite(a.atMs) && a.atMs >= 0))
          throw new ConfigError(`arrivals.${i}.atMs: a time of 0 or more, got ${a.atMs}`);
        if (!(a.lifetimeMs >= 0))
          throw new ConfigError(
            `arrivals.${i}.lifetimeMs: 0 or more (Infinity: for ever), got ${a.lifetimeMs}`,
          );
        if (i > 0 && a.atMs < (arrivals[i - 1] as Arrival).atMs)
          throw new ConfigError(`arrivals must be in time order (arrival ${i} is earlier than ${i - 1})`);
      }
      this.#arrivals = arrivals;
    }
    this.#shape = o.fragmentationShape ?? commonShape(arrivals);
  }

  run(): RunResult {
    const t0 = performance.now();
    const nodes = clusterNodes(this.#cluster);
    this.#core.registerNodes(nodes, 0);
    for (const [tenant, quota] of Object.entries(this.#cluster.quotas ?? {}))
      this.#core.setQuota(tenant, quota, 0);
    for (const e of clusterEvents(this.#cluster, nodes)) {
      this.#heap.push(e.atMs, Kind.Node, { nodeId: e.nodeId, what: e.kind });
      if (e.kind === 'fail') this.#liveById ??= new Map();
    }
    const index = this.#core.index;
    const capacity = { ...index.readyCapacity, gpu: index.readyGpuMilli };
    this.#setupInflation(capacity);
    this.#pushNextArrival();
    const last = this.#arrivals[this.#arrivals.length - 1];
    const spanMs = last === undefined ? 0 : last.atMs;
    this.#sampleEveryMs = this.#o.sampleEveryMs ?? Math.max(1, Math.ceil(spanMs / (samplesMax / 2)));
    if (this.#protocol === 'replay') this.#heap.push(0, Kind.Sample, undefined);
    this.#loop();
    this.#flushReleases();
    this.#flushBatch();
    if (this.#protocol === 'replay') this.#sample();
    this.#totals.pendingAtEnd = this.#core.leader.pendingCount;
    this.#o.onProgress?.(this.#totals.arrived);
    const wallSeconds = (performance.now() - t0) / 1000;
    return {
      name: this.#o.policy.name,
      protocol: this.#protocol,
      seed: this.#o.seed,
      nodes: nodes.length,
      capacity,
      totals: this.#totals,
      samples: this.#samples,
      waitMs: this.#waitMs,
      ...(this.#protocol === 'inflation' ? { inflation: this.#inflation } : {}),
      ...(this.#o.recordPlacements === true
        ? { placements: this.#placements, rejections: this.#rejections }
        : {}),
      timing: {
        wallSeconds,
        eventsPerSec: wallSeconds === 0 ? 0 : this.#totals.events / wallSeconds,
        planCalls: this.#planCalls,
        planMs: this.#planMs,
      },
    };
  }

  #setupInflation(capacity: Utilization): void {
    if (this.#protocol !== 'inflation') return;
    const resource = this.#o.inflation?.resource ?? (capacity.gpu > 0 ? 'gpu' : 'cpu');
    this.#demandResource = resource;
    this.#demandCapacity = capacity[resource];
    if (this.#demandCapacity <= 0)
      throw new ConfigError(`inflation: the cluster has no ${resource} capacity`);
  }

  #inflationDone(): boolean {
    if (this.#protocol !== 'inflation') return false;
    const target = this.#o.inflation?.targetPct ?? 100;
    return (100 * this.#arrivedDemand) / this.#demandCapacity >= target;
  }

  #pushNextArrival(): void {
    if (this.#inflationDone()) return;
    const a = this.#arrivals[this.#next];
    if (a === undefined) return;
    this.#next += 1;
    this.#heap.push(a.atMs, Kind.Arrive, a);
  }

  #loop(): void {
    const progressEvery = 10_000;
    const heap = this.#heap;
    while (heap.size > 0) {
      const item = heap.popItem();
      const timeMs = heap.poppedTimeMs;
      assert(timeMs >= this.#now, 'virtual time never goes back', { at: timeMs, now: this.#now });
      this.#now = timeMs;
      this.#step(heap.poppedRank as Kind, item);
      if (this.#o.onProgress !== undefined && this.#totals.events % progressEvery === 0)
        this.#o.onProgress(this.#totals.arrived);
    }
  }

  #step(kind: Kind, ev: Ev): void {
    switch (kind) {
      case Kind.Arrive:
        this.#totals.events += 1;
        this.#onArrive(ev as Arrival);
        return;
      case Kind.Depart:
        this.#totals.events += 1;
        this.#onDepart(ev as Live);
        return;
      case Kind.Suspend:
        this.#totals.events += 1;
        this.#onSuspend(ev as Live);
        return;
      case Kind.Resume:
        this.#totals.events += 1;
        this.#onResume(ev as Live);
        return;
      case Kind.Node:
        this.#totals.events += 1;
        this.#onNode((ev as NodeEv).nodeId, (ev as NodeEv).what);
        return;
      case Kind.ReleaseFlush:
        this.#flushReleases();
        return;
      case Kind.BatchFlush:
        this.#flushBatch();
        return;
      case Kind.Deadline:
        this.#ticksAt.delete(this.#now);
        this.#core.tick(this.#now);
        this.#afterCore();
        return;
      case Kind.Sample:
        this.#sample();
        // Keep sampling while anything else is still to happen.
        if (this.#heap.size > 0) this.#heap.push(this.#now + this.#sampleEveryMs, Kind.Sample, undefined);
        return;
    }
  }

  #windowEnd(): number {
    return this.#windowMs === 0 ? this.#now : Math.ceil(this.#now / this.#windowMs) * this.#windowMs;
  }

  #onArrive(a: Arrival): void {
    this.#totals.arrived += 1;
    if (this.#protocol === 'inflation') {
      const s = a.spec.resources;
      this.#arrivedDemand +=
        this.#demandResource === 'gpu'
          ? gpuMilliOf(a.spec)
          : this.#demandResource === 'cpu'
            ? s.cpu
            : s.memory;
    }
    const refused = this.#core.submit(a.id, a.spec, this.#now);
    if (refused !== undefined) this.#reject(a.id, refused.code);
    else this.#open.set(a.id, a);
    this.#afterCore();
    this.#pushNextArrival();
  }

  /**
   * After any call into the core: its answers are recorded, each newly parked request gets a leader tick at
   * its deadline, and the open batch (arrivals, woken and re-planned requests) is flushed at `batchSize` or
   * at the end of its window.
   */
  #afterCore(): void {
    // Index loops: a for-of iterator per call was ~2% of the allocation (once per arrival).
    const answers = this.#core.takeAnswers();
    for (let i = 0; i < answers.length; i++) this.#onAnswer(answers[i] as Answer);
    const parked = this.#core.takeParked();
    for (let i = 0; i < parked.length; i++) {
      const r = parked[i] as LiveRequest;
      if (this.#ticksAt.has(r.deadlineMs)) continue;
      this.#ticksAt.add(r.deadlineMs);
      this.#heap.push(r.deadlineMs, Kind.Deadline, r.requestId);
    }
    if (this.#core.batchSize >= this.#batchSize) {
      this.#flushBatch();
      return;
    }
    // Inflation plans exactly `batchSize` requests at a time (the last batch at the end of the run).
    if (this.#core.batchSize > 0 && this.#batchFlushAt < 0 && this.#protocol === 'replay') {
      this.#batchFlushAt = this.#windowEnd();
      this.#heap.push(this.#batchFlushAt, Kind.BatchFlush, undefined);
    }
  }

  #flushBatch(): void {
    this.#batchFlushAt = -1;
    // Full batches now; a remainder waits for the end of its window, as the leader's batcher does.
    let flushed = false;
    while (this.#core.batchSize >= this.#batchSize || (!flushed && this.#core.batchSize > 0)) {
      flushed = true;
      const t0 = performance.now();
      this.#core.flush(this.#now, this.#batchSize);
      this.#planCalls += 1;
      observe(this.#planMs, performance.now() - t0);
      const answers = this.#core.takeAnswers();
      for (let i = 0; i < answers.length; i++) this.#onAnswer(answers[i] as Answer);
      if (this.#protocol === 'inflation') this.#point();
    }
    this.#afterCore();
  }

  #onAnswer(ans: Answer): void {
    const a = this.#open.get(ans.requestId);
    assert(a !== undefined, 'an answer is for an open arrival', { requestId: ans.requestId, kind: ans.kind });
    this.#open.delete(ans.requestId);
    if (ans.kind === 'committed') this.#onPlaced(a, ans.placed);
    else if (ans.kind === 'no-capacity') this.#reject(a.id, reasonLabel(ans.reason));
    else if (ans.kind === 'refused')
      this.#reject(a.id, reasonLabel(`${ans.error.code}: ${ans.error.message}`));
    else assert(false, 'the simulator neither cancels pending sandboxes nor loses proposals', { ans });
  }

  #onPlaced(a: Arrival, placed: PlaceItem | undefined): void {
    // Placed by the leader's own entry (always, in the simulator); else read back from committed state.
    const sb = placed ?? this.#core.state.sandbox(a.id);
    assert(sb?.nodeId !== undefined, 'a committed arrival is placed', { id: a.id });
    let gpuMilli = 0;
    for (const g of sb.gpuDevices) gpuMilli += g.milli;
    this.#gpuAllocated += gpuMilli;
    const l: Live = {
      a,
      id: a.id,
      nodeId: sb.nodeId,
      state: 'placed',
      running: false,
      gpuMilli,
      gone: false,
    };
    this.#liveCount += 1;
    this.#liveById?.set(a.id, l);
    this.#totals.placed += 1;
    observe(this.#waitMs, this.#now - a.atMs);
    if (this.#o.recordPlacements === true) this.#placements.set(a.id, sb.nodeId);
    if (this.#protocol !== 'replay') return;
    if (a.suspendAfterMs !== undefined) {
      this.#heap.push(this.#now + a.suspendAfterMs, Kind.Suspend, l);
    } else if (Number.isFinite(a.lifetimeMs)) {
      this.#heap.push(this.#now + a.lifetimeMs, Kind.Depart, l);
    }
  }

  #reject(id: string, reason: string): void {
    this.#totals.rejected += 1;
    if (this.#o.recordPlacements === true) this.#rejections.set(id, reason);
    this.#totals.rejectedByReason[reason] = (this.#totals.rejectedByReason[reason] ?? 0) + 1;
  }

  /** A live sandbox leaves the engine's books (departed or lost). */
  #forget(l: Live): void {
    l.gone = true;
    this.#liveCount -= 1;
    this.#liveById?.delete(l.id);
    this.#gpuAllocated -= l.gpuMilli;
  }

  #onDepart(l: Live): void {
    if (l.gone) return;
    this.#forget(l);
    if (l.state === 'suspended') this.#resumeWaiting.delete(l);
    this.#totals.departed += 1;
    if (l.state === 'placed') this.#freed = true;
    this.#releases.push({ id: l.id, running: l.state === 'placed' && l.running });
    if (this.#releaseFlushAt < 0) {
      this.#releaseFlushAt = this.#windowEnd();
      this.#heap.push(this.#releaseFlushAt, Kind.ReleaseFlush, undefined);
    }
  }

  #flushReleases(): void {
    this.#releaseFlushAt = -1;
    if (this.#releases.length === 0) return;
    const ids = this.#releases;
    this.#releases = [];
    this.#core.finish(ids, this.#now);
    this.#retryResumes();
    this.#afterCore();
  }

  /**
   * Room freed: suspended sandboxes waiting to resume on a node that gave room back (or on any, when a node
   * came back) try again. Pending creates are woken by the leader core itself, from the committed events.
   */
  #retryResumes(all = false): void {
    const freed = this.#freed;
    this.#freed = false;
    if (!all && !freed) return;
    for (const l of [...this.#resumeWaiting]) this.#onResume(l);
  }

  #onSuspend(l: Live): void {
    if (l.gone || l.state !== 'placed') return;
    this.#core.suspend(l.id, this.#now);
    this.#freed = true;
    l.state = 'suspended';
    this.#gpuAllocated -= l.gpuMilli;
    l.gpuMilli = 0;
    this.#totals.suspended += 1;
    this.#heap.push(this.#now + (l.a.suspendForMs ?? 0), Kind.Resume, l);
    this.#retryResumes();
    this.#afterCore();
  }

  #onResume(l: Live): void {
    if (l.gone || l.state !== 'suspended') return;
    const got = this.#core.resume(l.id, this.#now);
    if (got === undefined) {
      this.#resumeWaiting.add(l);
      return;
    }
    this.#resumeWaiting.delete(l);
    l.state = 'placed';
    l.running = true;
    l.nodeId = got.nodeId;
    for (const g of got.gpuDevices) l.gpuMilli += g.milli;
    this.#gpuAllocated += l.gpuMilli;
    this.#totals.resumed += 1;
    // The rest of its life, after the first half it lived before suspending.
    const rest = l.a.lifetimeMs - (l.a.suspendAfterMs ?? 0);
    this.#heap.push(this.#now + Math.max(1, rest), Kind.Depart, l);
  }

  #onNode(nodeId: string, what: 'fail' | 'drain' | 'return'): void {
    this.#flushReleases();
    if (what === 'return') {
      this.#core.returnNode(nodeId, this.#now);
      this.#retryResumes(true);
      this.#afterCore();
      return;
    }
    const lost = this.#core.setNodeState(nodeId, what === 'fail' ? 'down' : 'draining', this.#now);
    for (const id of lost) {
      const l = this.#liveById?.get(id);
      if (l === undefined) continue;
      this.#forget(l);
      this.#totals.lost += 1;
    }
    // Lost sandboxes are ended (terminated) at once, as their owner would after hearing they were lost.
    this.#core.finish(
      lost.map((id) => ({ id, running: false })),
      this.#now,
    );
    this.#afterCore();
  }

  #utilization(): Utilization {
    const index = this.#core.index;
    const cap = index.readyCapacity;
    const used = index.readyAllocated;
    let gpuCap = 0;
    let gpuUsed = 0;
    if (index.readyGpuMilli > 0) {
      const slotCount = index.slotCount;
      for (let slot = 0; slot < slotCount; slot++) {
        if (!index.isLive(slot) || !index.isReady(slot)) continue;
        for (let d = 0; d < index.gpuCount(slot); d++) {
          gpuCap += gpuMilliPerDevice;
          gpuUsed += gpuMilliPerDevice - index.gpuFree(slot, d);
        }
      }
    }
    const share = (u: number, c: number): number => (c <= 0 ? 0 : u / c);
    return {
      cpu: share(used.cpu, cap.cpu),
      memory: share(used.memory, cap.memory),
      disk: share(used.disk, cap.disk),
      gpu: share(gpuUsed, gpuCap),
    };
  }

  #sample(): void {
    if (this.#samples.length >= samplesMax) {
      // Keep every other sample and halve the rate, so a long tail of departures stays within the bound.
      const kept = this.#samples.filter((_, i) => i % 2 === 0);
      this.#samples.length = 0;
      this.#samples.push(...kept);
      this.#sampleEveryMs *= 2;
    }
    const pendingByReason: Record<string, number> = {};
    for (const r of this.#core.leader.pending()) {
      const reason = reasonLabel(r.reason ?? 'resources:');
      pendingByReason[reason] = (pendingByReason[reason] ?? 0) + 1;
    }
    this.#samples.push({
      tMs: this.#now,
      util: this.#utilization(),
      pendingByReason,
      rejectedByReason: { ...this.#totals.rejectedByReason },
      fragmentation: fragmentation(this.#core.index, this.#shape).strandedFraction,
      live: this.#liveCount,
    });
  }

  #point(): void {
    const arrivedPct = (100 * this.#arrivedDemand) / this.#demandCapacity;
    const step = 100 / (inflationPointsMax / 2);
    if (arrivedPct - this.#lastPointPct < step && !this.#inflationDone()) return;
    this.#lastPointPct = arrivedPct;
    const index = this.#core.index;
    const cap = index.readyCapacity;
    const used = index.readyAllocated;
    const pct = (u: number, c: number): number => (c <= 0 ? 0 : (100 * u) / c);
    this.#inflation.push({
      arrivedPct,
      allocatedPct: {
        cpu: pct(used.cpu, cap.cpu),
        memory: pct(used.memory, cap.memory),
        disk: pct(used.disk, cap.disk),
        gpu: pct(this.#gpuAllocated, index.readyGpuMilli),
      },
    });
  }
}

/** The most common request shape among the first arrivals: the default reference for fragmentation. */
export function commonShape(arrivals: readonly Arrival[]): ReferenceShape {
  const counts = new Map<string, { n: number; spec: SandboxSpec }>();
  for (const a of arrivals.slice(0, 10_000)) {
    const key = JSON.stringify([a.spec.resources, a.spec.gpu ?? null]);
    const c = counts.get(key);
    if (c === undefined) counts.set(key, { n: 1, spec: a.spec });
    else c.n += 1;
  }
  let best: { n: number; spec: SandboxSpec } | undefined;
  for (const c of counts.values()) if (best === undefined || c.n > best.n) best = c;
  const spec = best?.spec;
  if (spec === undefined) return { resources: { cpu: 1000, memory: 2048, disk: 0 } };
  const gpu = spec.gpu;
  if (gpu === undefined) return { resources: spec.resources };
  return {
    resources: spec.resources,
    gpu: {
      ...(gpu.count === undefined ? {} : { count: gpu.count }),
      ...(gpu.milli === undefined ? {} : { milli: gpu.milli }),
      ...(gpu.model === undefined ? {} : { model: gpu.model }),
    },
  };
}
