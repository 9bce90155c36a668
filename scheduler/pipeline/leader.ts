/**
 * The leader pipeline, wiring the stages in order:
 *   admission (admit)   — refuse bad or over-quota input before it costs anything;
 *   batcher             — many requests per Raft entry, so the log's cost is paid per batch;
 *   planner             — place against committed state plus the overlay of batches in flight;
 *   verifier            — drop placements the newest committed state already contradicts;
 *   proposer            — one entry per batch; apply re-checks capacity item by item;
 *   pending queue       — what fits nowhere waits with its reason until capacity frees or it expires.
 *
 * A request that fits nowhere is committed as a `pending` sandbox (a `pend` entry: reason and deadline), so
 * the queue is part of the replicated state: a new leader rebuilds it from the pending sandboxes, places
 * them when room frees, and commits their failure at the deadline. Its caller's promise lives only on the
 * leader that admitted it; after a leader change the caller's retry (same request id) joins the rebuilt
 * request. Requests planned but not yet committed are not in the log: their callers retry the same way,
 * and the dedup table answers any that did commit (see scheduler.ts).
 *
 * It also batches node heartbeats into one entry per interval and marks silent nodes down.
 */

import { planBatch } from '../../placement/index.js';
import { assert } from '../../src/lib/assert.js';
import { TrellisError } from '../../src/lib/errors.js';
import type { TrellisMetrics } from '../../src/lib/metrics.js';
import { checkQuota, checkRequestId, placementRequestOf } from '../admission.js';
import { commandCodec, type PendItem, type SandboxSpec, textLengthMax } from '../commands.js';
import { Planner } from '../core/plan.js';
import { verify } from '../core/verify.js';
import {
  errorFromResult,
  NoCapacityError,
  NotLeaderError,
  OverloadedError,
  RequestIdConflictError,
  SandboxCancelledError,
} from '../errors.js';
import type { SandboxState } from '../lifecycle.js';
import { holdsAllocation } from '../lifecycle.js';
import type { ReplicaLog } from '../log.js';
import { type SchedulerState, specDigest } from '../state.js';
import type { Sandbox, SchedulerEvent, Usage } from '../types.js';
import { Batcher } from './batcher.js';
import { PendingQueue, pendingMax } from './pending.js';
import { proposePlace } from './proposer.js';
import { type CreateRequest, rejectAll, resolveAll } from './request.js';
import { recordUtilization } from './utilization.js';

export interface PipelineOptions {
  readonly batchSizeMax: number;
  readonly batchWindowMs: number;
  /** Batches planned and not yet committed, at most; further batches wait for one to settle. */
  readonly inFlightBatchesMax: number;
  /** How long a create may wait for capacity before NoCapacityError. */
  readonly pendingTimeoutMs: number;
  /** A placement refused at commit is planned again at most this many times. */
  readonly replanMax: number;
  readonly heartbeatIntervalMs: number;
  /** A node silent for this long is marked down and its sandboxes lost; 0 turns health checking off. */
  readonly nodeDownAfterMs: number;
  readonly now: () => number;
  /** Runs `fn` every `ms` and returns its cancellation; a simulation passes a manual ticker. */
  readonly every: (fn: () => void, ms: number) => () => void;
  /**
   * Where the pipeline records placement batch duration and size, placements by result and reason, and the
   * pending depth. Default: nothing. Durations come from `performance.now()`, never from `now`.
   */
  readonly metrics?: TrellisMetrics;
}

/** The real ticker: setInterval, kept referenced so a pending create still reaches its deadline. */
export function everyInterval(fn: () => void, ms: number): () => void {
  const timer = setInterval(fn, ms);
  return () => clearInterval(timer);
}

export const defaultPipelineOptions: Omit<PipelineOptions, 'now' | 'every'> = {
  batchSizeMax: 4096,
  batchWindowMs: 0,
  inFlightBatchesMax: 4,
  pendingTimeoutMs: 30_000,
  replanMax: 3,
  heartbeatIntervalMs: 1000,
  nodeDownAfterMs: 0,
};

/** Counters the pipeline keeps for `stats()` and the demo's summary. */
export interface PipelineStats {
  batches: number;
  batchedRequests: number;
  placed: number;
  rejected: number;
  replans: number;
  batchLatencyMsTotal: number;
  rejectReasons: Map<string, number>;
}

export class LeaderPipeline {
  readonly #log: ReplicaLog;
  readonly #opts: PipelineOptions;
  readonly #batcher: Batcher<CreateRequest>;
  readonly #planner = new Planner();
  readonly #pending = new PendingQueue();
  /** Every request admitted and not yet answered, by id: a retry joins the first one. */
  readonly #live = new Map<string, CreateRequest>();
  readonly #inFlightUsage = new Map<string, Usage>();
  #held: CreateRequest[][] = [];
  #heartbeats = new Set<string>();
  readonly #cancelTick: () => void;
  #stopped = false;
  readonly #unsubscribe: () => void;
  readonly stats: PipelineStats = {
    batches: 0,
    batchedRequests: 0,
    placed: 0,
    rejected: 0,
    replans: 0,
    batchLatencyMsTotal: 0,
    rejectReasons: new Map(),
  };

  constructor(log: ReplicaLog, opts: PipelineOptions) {
    this.#log = log;
    this.#opts = opts;
    this.#batcher = new Batcher({ sizeMax: opts.batchSizeMax, windowMs: opts.batchWindowMs }, (b) =>
      this.#onBatch(b),
    );
    this.#unsubscribe = log.machine.onApply((applied) => this.#onCommitted(applied.events));
    this.#cancelTick = opts.every(() => this.#tick(), opts.heartbeatIntervalMs);
    // Rebuilt from committed state: lost stateless sandboxes a previous leader had not placed again yet, and
    // the pending queue. A new leader may not have applied everything committed yet: what it applies later
    // arrives through #onCommitted, which adopts it the same way.
    for (const sb of log.machine.state.sandboxes.values()) {
      if (sb.state === 'lost' && sb.spec.stateless === true) this.#lost.add(sb.id);
      if (sb.state === 'pending') this.#adopt(sb);
    }
  }

  /**
   * Takes over a committed pending sandbox this leader did not record: a live request with no caller yet
   * (the caller's retry joins it), planned once at once since room may have freed while no one led; what
   * still fits nowhere waits again.
   */
  #adopt(sb: Sandbox): CreateRequest {
    const req: CreateRequest = {
      requestId: sb.requestId,
      spec: sb.spec,
      deadlineMs: sb.pendingUntilMs ?? 0,
      replans: 0,
      pendProposed: true,
      usageCounted: false,
      waiters: [],
    };
    if (sb.reason !== undefined) req.reason = sb.reason;
    this.#live.set(req.requestId, req);
    this.#batcher.add(req);
    return req;
  }

  /** Lost stateless sandboxes waiting to be placed again; retried when capacity frees. */
  readonly #lost = new Set<string>();
  #lostDirty = true;
  #replacing = false;

  get pendingCount(): number {
    return this.#pending.size;
  }

  /**
   * Admits a create and resolves with the committed sandbox. Throws (rejects) ValidationError,
   * RequestIdConflictError, QuotaExceededError, OverloadedError; later NoCapacityError at its deadline,
   * or NotLeaderError when this replica stops leading first.
   */
  create(requestId: string, spec: SandboxSpec): Promise<Sandbox> {
    if (this.#stopped) return Promise.reject(new NotLeaderError(`replica ${this.#log.id} no longer leads`));
    const state = this.#log.machine.state;
    const idem = checkRequestId(state, requestId, spec);
    const live = this.#live.get(requestId);
    if (live !== undefined) {
      // A retry joins the request in progress (a committed pending one included), for the same spec only.
      if (specDigest(live.spec) !== specDigest(spec))
        throw new RequestIdConflictError(`request id ${requestId} is in progress for a different spec`, {
          details: { requestId },
        });
      return new Promise((resolve, reject) => {
        live.waiters.push({ resolve, reject });
      });
    }
    if (idem.kind === 'committed') {
      const sb = state.sandbox(idem.sandboxId);
      if (sb?.state !== 'pending') return Promise.resolve(committedSandbox(state, requestId, spec));
      // Pending but not live here: adopted now (normally #onCommitted or the constructor did it already).
      const req = this.#adopt(sb);
      return new Promise((resolve, reject) => {
        req.waiters.push({ resolve, reject });
      });
    }
    if (this.#live.size >= pendingMax)
      throw new OverloadedError(`${this.#live.size} creates are already in progress`);
    checkQuota(state, spec, this.#inFlightUsage.get(spec.tenant));
    return new Promise((resolve, reject) => {
      const req: CreateRequest = {
        requestId,
        spec,
        deadlineMs: this.#opts.now() + this.#opts.pendingTimeoutMs,
        replans: 0,
        pendProposed: false,
        usageCounted: true,
        waiters: [{ resolve, reject }],
      };
      this.#live.set(requestId, req);
      this.#addUsage(spec, 1);
      this.#batcher.add(req);
    });
  }

  /** Records a node's heartbeat; they are committed together once per interval. */
  heartbeat(nodeId: string): void {
    this.#heartbeats.add(nodeId);
  }

  /** Proposes any command through this leader and returns its result. */
  propose(data: Uint8Array): ReturnType<ReplicaLog['propose']> {
    return this.#log.propose(data);
  }

  /** Stops the pipeline; every unanswered request is rejected with NotLeaderError so callers retry. */
  stop(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#cancelTick();
    this.#unsubscribe();
    this.#batcher.drain();
    this.#pending.takeAll();
    this.#held = [];
    const err = new NotLeaderError(`replica ${this.#log.id} stopped leading`);
    for (const req of this.#live.values()) rejectAll(req, err);
    this.#live.clear();
  }

  #addUsage(spec: SandboxSpec, sign: 1 | -1): void {
    const u = this.#inFlightUsage.get(spec.tenant) ?? { cpu: 0, memory: 0, disk: 0, sandboxes: 0 };
    this.#inFlightUsage.set(spec.tenant, {
      cpu: u.cpu + sign * spec.resources.cpu,
      memory: u.memory + sign * spec.resources.memory,
      disk: u.disk + sign * spec.resources.disk,
      sandboxes: u.sandboxes + sign,
    });
  }

  #settle(req: CreateRequest): boolean {
    if (this.#live.get(req.requestId) !== req) return false;
    this.#live.delete(req.requestId);
    this.#pending.remove(req.requestId);
    this.#uncount(req);
    return true;
  }

  /** Committed state counts the request now (or it is settled): drop it from the in-flight usage. */
  #uncount(req: CreateRequest): void {
    if (!req.usageCounted) return;
    req.usageCounted = false;
    this.#addUsage(req.spec, -1);
  }

  #onBatch(batch: CreateRequest[]): void {
    if (this.#stopped) return;
    if (this.#planner.inFlight >= this.#opts.inFlightBatchesMax) {
      this.#held.push(batch);
      return;
    }
    void this.#runBatch(batch);
  }

  async #runBatch(batch: CreateRequest[]): Promise<void> {
    const startMs = this.#opts.now();
    const state = this.#log.machine.state;
    const planStartedMs = performance.now();
    const plan = this.#planner.plan(batch, state.index);
    this.#opts.metrics?.placementBatchSeconds.observe((performance.now() - planStartedMs) / 1_000);
    this.#opts.metrics?.placementBatchSize.observe(batch.length);
    const verified = verify(plan, batch, state);
    for (const req of verified.committed) this.#answerCommitted(req);
    for (const { req, reason } of verified.unplaced) this.#park(req, reason);
    for (const { req, reason } of verified.retry) this.#replan(req, reason);
    this.stats.batches += 1;
    this.stats.batchedRequests += batch.length;
    const byId = new Map(batch.map((r) => [r.requestId, r] as const));
    try {
      if (verified.items.length > 0) {
        const results = await proposePlace(this.#log, verified.items, this.#opts.now());
        for (const r of results) {
          const req = byId.get(r.requestId) as CreateRequest;
          if (r.outcome === 'rejected') this.#replan(req, `${r.error.code}: ${r.error.message}`);
          else this.#answerCommitted(req);
        }
      }
    } catch (err) {
      // The entry's fate is unknown (leadership moved, a transfer refused it, it was replaced, or it did not
      // commit within the proposal timeout, as while NATS restarts). Its requests go back to their callers
      // with that error, and they retry with the same ids on whichever replica leads: the dedup table answers
      // any that did commit, so nothing is placed twice. Every error settles them: a request left live here
      // would make every retry with its id wait on it for as long as this replica leads.
      const reason = err instanceof Error ? err : new Error(String(err));
      for (const item of verified.items) {
        const req = byId.get(item.requestId);
        if (req !== undefined && this.#settle(req)) rejectAll(req, reason);
      }
      if (!(err instanceof TrellisError)) throw err;
    } finally {
      this.stats.batchLatencyMsTotal += this.#opts.now() - startMs;
      this.#opts.metrics?.pendingDepth.set(this.pendingCount);
      this.#planner.settled();
      const next = this.#held.shift();
      if (next !== undefined && !this.#stopped) void this.#runBatch(next);
    }
  }

  #answerCommitted(req: CreateRequest): void {
    const state = this.#log.machine.state;
    if (!this.#settle(req)) return;
    this.stats.placed += 1;
    this.#opts.metrics?.placements.inc({ result: 'placed', reason: 'none' });
    resolveAll(req, committedSandbox(state, req.requestId, req.spec));
  }

  #replan(req: CreateRequest, reason: string): void {
    req.replans += 1;
    this.stats.replans += 1;
    if (req.replans > this.#opts.replanMax) this.#park(req, reason);
    else this.#batcher.add(req);
  }

  #park(req: CreateRequest, reason: string): void {
    if (this.#live.get(req.requestId) !== req) return;
    if (this.#opts.now() >= req.deadlineMs) {
      this.#fail(req, reason);
      return;
    }
    this.#pending.add(req, reason);
    if (!req.pendProposed) {
      req.pendProposed = true;
      this.#toPend.push(req);
      if (this.#toPend.length === 1) queueMicrotask(() => this.#proposePend());
    }
  }

  /** Requests parked since the last `pend` entry; recorded together in the next one. */
  #toPend: CreateRequest[] = [];

  /** Commits the newly parked requests as pending sandboxes, one entry for all of them. */
  #proposePend(): void {
    const reqs = this.#toPend;
    this.#toPend = [];
    if (this.#stopped || reqs.length === 0) return;
    const atMs = this.#opts.now();
    const items: PendItem[] = reqs.map((req) => ({
      requestId: req.requestId,
      sandboxId: req.requestId,
      spec: req.spec,
      specDigest: specDigest(req.spec),
      reason: (req.reason ?? 'no capacity').slice(0, textLengthMax),
      deadlineMs: req.deadlineMs,
    }));
    const byId = new Map(reqs.map((r) => [r.requestId, r] as const));
    void this.propose(commandCodec.encode({ type: 'pend', atMs, items })).then(
      (result) => {
        if (!result.ok) throw errorFromResult(result.error);
        for (const r of result.items ?? []) {
          const req = byId.get(r.requestId) as CreateRequest;
          if (r.outcome === 'pending') this.#uncount(req);
          else if (r.outcome === 'rejected') this.#refuse(req, errorFromResult(r.error));
          else if (r.outcome === 'duplicate') {
            // The id committed meanwhile: placed by an earlier leader, or recorded by an earlier pend.
            const sb = this.#log.machine.state.sandbox(r.sandboxId);
            if (sb?.state !== 'pending') this.#answerCommitted(req);
          }
        }
      },
      // The entry's fate is unknown only when leadership moved, and then stop() answers every caller.
      () => {},
    );
  }

  /** Fails a request that may not be placed (quota passed since admission, say). */
  #refuse(req: CreateRequest, err: Error): void {
    if (!this.#settle(req)) return;
    this.stats.rejected += 1;
    this.#opts.metrics?.placements.inc({
      result: 'rejected',
      reason: err instanceof TrellisError ? err.code : 'INTERNAL',
    });
    rejectAll(req, err);
  }

  /**
   * The deadline passed. A request recorded `pending` (or that may be) fails through a committed status
   * first, so that no later leader places it after its caller heard it failed; the caller hears once the
   * failure commits. Until then it stays live, and a retry joins it.
   */
  #fail(req: CreateRequest, reason: string): void {
    this.#failAll([{ req, reason }]);
  }

  /** `#fail` for many requests at once: one `status` entry carries every committed failure of a tick. */
  #failAll(expired: readonly { readonly req: CreateRequest; readonly reason: string }[]): void {
    const recorded: { readonly req: CreateRequest; readonly reason: string }[] = [];
    for (const e of expired) {
      if (this.#live.get(e.req.requestId) !== e.req) continue;
      if (e.req.pendProposed) recorded.push(e);
      else this.#noCapacity(e.req, e.reason);
    }
    if (recorded.length === 0) return;
    const state = this.#log.machine.state;
    const sandboxOf = (req: CreateRequest) => state.dedup.get(req.requestId)?.sandboxId ?? req.requestId;
    for (const { req } of recorded) this.#pending.remove(req.requestId);
    const items = recorded.map(({ req, reason }) => ({
      sandboxId: sandboxOf(req),
      state: 'failed' as const,
      reason: reason.slice(0, textLengthMax),
    }));
    // The pend entries went first on this leader, so this status applies after them if they committed at
    // all, and #pendingLeft answers those callers then. A sandbox still unknown afterwards was never
    // recorded, and its caller is answered here. A placement that committed first wins (#pendingLeft answers
    // it). If leadership moves first, stop() answers the callers, who retry; the next leader fails them.
    void this.propose(commandCodec.encode({ type: 'status', atMs: this.#opts.now(), items })).then(
      () => {
        const after = this.#log.machine.state;
        for (const { req, reason } of recorded)
          if (after.sandbox(sandboxOf(req)) === undefined) this.#noCapacity(req, reason);
      },
      () => {
        // Not committed: back in the queue, so the next tick tries again (stop() clears it if we lost the lead).
        for (const { req, reason } of recorded)
          if (!this.#stopped && this.#live.get(req.requestId) === req) this.#pending.add(req, reason);
      },
    );
  }

  #noCapacity(req: CreateRequest, reason: string): void {
    if (!this.#settle(req)) return;
    this.stats.rejected += 1;
    const key = reason.split(':')[0] ?? reason;
    this.stats.rejectReasons.set(key, (this.stats.rejectReasons.get(key) ?? 0) + 1);
    this.#opts.metrics?.placements.inc({ result: 'rejected', reason: key });
    rejectAll(
      req,
      new NoCapacityError(`request ${req.requestId} found no node before its deadline: ${reason}`, {
        details: { reason },
      }),
    );
  }

  /** Committed events that free capacity wake the pending queue (once per committed entry). */
  #onCommitted(events: readonly SchedulerEvent[]): void {
    if (this.#stopped) return;
    for (const e of events) {
      if (e.kind === 'sandbox' && e.from === 'pending') this.#pendingLeft(e.sandboxId, e.to, e.reason);
      if (e.kind === 'sandbox' && e.to === 'pending') {
        // Recorded by an earlier leader and applied here only now (this leader's own are live already).
        const sb = this.#log.machine.state.sandbox(e.sandboxId);
        if (sb?.state === 'pending' && !this.#live.has(sb.requestId)) this.#adopt(sb);
      }
      if (e.kind !== 'sandbox' || e.to !== 'lost') continue;
      const sb = this.#log.machine.state.sandbox(e.sandboxId);
      if (sb?.spec.stateless === true) {
        this.#lost.add(sb.id);
        this.#lostDirty = true;
      }
    }
    if (this.#pending.size === 0 && this.#lost.size === 0) return;
    // Nodes that released an allocation; a node that joined, changed or came back wakes everything.
    const released = new Set<string>();
    let nodeChanged = false;
    for (const e of events) {
      if (e.kind === 'node')
        nodeChanged ||= e.change === 'registered' || e.change === 'updated' || e.state === 'ready';
      else if (
        e.kind === 'sandbox' &&
        e.from !== 'none' &&
        holdsAllocation(e.from) &&
        !holdsAllocation(e.to) &&
        e.nodeId !== undefined
      )
        released.add(e.nodeId);
    }
    if (!nodeChanged && released.size === 0) return;
    this.#lostDirty = true;
    const index = this.#log.machine.state.index;
    const rooms = [...released].map((id) => index.get(id)).filter((v) => v !== undefined);
    // Only the released nodes changed, so a request can newly fit only on one of them, and only if its
    // resources fit in that node's free room: a necessary condition, so no request misses its wake-up.
    const fitsSomewhere = (req: CreateRequest): boolean =>
      rooms.some(
        (v) =>
          v.spec.capacity.cpu - v.allocated.cpu >= req.spec.resources.cpu &&
          v.spec.capacity.memory - v.allocated.memory >= req.spec.resources.memory &&
          v.spec.capacity.disk - v.allocated.disk >= req.spec.resources.disk,
      );
    const woken = nodeChanged ? this.#pending.wake() : this.#pending.wakeWhere(fitsSomewhere);
    for (const req of woken) {
      req.replans = 0;
      this.#batcher.add(req);
    }
  }

  /**
   * A committed pending sandbox left `pending`: its live request, if any, is answered accordingly. Live
   * requests are keyed by request id, and this pipeline gives a sandbox its request's id; a sandbox recorded
   * under another id is answered by its `place` result instead.
   */
  #pendingLeft(sandboxId: string, to: SandboxState, reason: string | undefined): void {
    const req = this.#live.get(sandboxId);
    if (req === undefined) return;
    if (to === 'placed') {
      this.#answerCommitted(req);
    } else if (to === 'terminated') {
      this.#refuse(req, new SandboxCancelledError(`sandbox ${sandboxId} was terminated while pending`));
    } else if (to === 'failed') {
      this.#noCapacity(req, reason ?? req.reason ?? 'no capacity');
    }
  }

  /**
   * Places lost stateless sandboxes again, one `replace` entry at a time, when some were lost or capacity
   * freed since the last try. Those that fit nowhere stay lost and are tried again on the next change.
   */
  #replaceLost(now: number): void {
    if (this.#lost.size === 0 || !this.#lostDirty || this.#replacing) return;
    this.#lostDirty = false;
    const state = this.#log.machine.state;
    const candidates: Sandbox[] = [];
    for (const id of this.#lost) {
      const sb = state.sandbox(id);
      if (sb === undefined || sb.state !== 'lost') this.#lost.delete(id);
      else candidates.push(sb);
    }
    if (candidates.length === 0) return;
    const plan = planBatch(
      state.index,
      candidates.map((sb) => placementRequestOf(sb.id, sb.spec, undefined)),
    );
    if (plan.placements.length === 0) return;
    this.#replacing = true;
    const items = plan.placements.map((p) => ({
      sandboxId: p.requestId,
      nodeId: p.nodeId,
      gpuDevices: p.gpuDevices.map((g) => ({ ...g })),
    }));
    void this.propose(commandCodec.encode({ type: 'replace', atMs: now, items }))
      .catch(() => {})
      .finally(() => {
        this.#replacing = false;
        this.#lostDirty = true;
      });
  }

  #tick(): void {
    if (this.#stopped) return;
    const now = this.#opts.now();
    this.#failAll(this.#pending.expire(now).map((req) => ({ req, reason: req.reason ?? 'no capacity' })));
    this.#replaceLost(now);
    const state = this.#log.machine.state;
    if (this.#opts.metrics !== undefined) recordUtilization(state.index, this.#opts.metrics);
    if (this.#heartbeats.size > 0) {
      const nodeIds = [...this.#heartbeats];
      this.#heartbeats = new Set();
      void this.propose(commandCodec.encode({ type: 'node.heartbeat', atMs: now, nodeIds })).catch(() => {});
    }
    if (this.#opts.nodeDownAfterMs === 0) return;
    for (const rec of state.nodes.values()) {
      if (rec.spec.state !== 'down' && rec.lastHeartbeatMs + this.#opts.nodeDownAfterMs < now) {
        void this.propose(
          commandCodec.encode({ type: 'node.state', atMs: now, nodeId: rec.spec.id, state: 'down' }),
        ).catch(() => {});
      }
    }
  }
}

/**
 * The sandbox a committed request id created. One terminated since is gone from state; the caller then
 * gets what committed, marked terminated, rather than nothing.
 */
function committedSandbox(state: SchedulerState, requestId: string, spec: SandboxSpec): Sandbox {
  const seen = state.dedup.get(requestId);
  assert(seen !== undefined, 'an answered request has committed', { requestId });
  return (
    state.sandbox(seen.sandboxId) ?? {
      id: seen.sandboxId,
      requestId,
      tenant: spec.tenant,
      spec,
      state: 'terminated',
      gpuDevices: [],
      createdAtMs: seen.atMs,
      updatedAtMs: seen.atMs,
    }
  );
}
