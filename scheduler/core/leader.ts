/**
 * LeaderCore: every decision the leader makes about creates, with nothing that waits — the RawNode half of
 * etcd's RawNode/Node split applied to the leader pipeline. The shell (pipeline/leader.ts) owns the
 * callers' promises, the batcher's timer, the tick and the log; it hands the core the committed state and
 * the time, and the core answers with a `Step`:
 *
 *   proposals — commands to propose, in order, each under a ticket; the shell calls `onResult(ticket, …)`
 *               when it commits and `onProposeFailed(ticket, …)` when its fate is unknown;
 *   answers   — which callers to answer with what (committed, refused, cancelled, no capacity, unknown);
 *   toBatch   — requests to plan in a coming batch (new, woken, re-planned, adopted).
 *
 * Stages, in order: admission (`submit`: idempotency, overload, quota counting the admitted creates not yet
 * committed), planner (against committed state plus the overlay of the `inFlightBatchesMax` plans in
 * Raft), verifier (drop what the newest state contradicts), one `place` per batch, and the pending queue:
 * what fits nowhere is committed `pending` (one `pend` per step) with its reason and deadline, woken when
 * committed events free room, and failed through a committed `status` at its deadline, so no later leader
 * places a request its caller was told had failed. A new leader adopts committed pending sandboxes
 * (`start`, `onCommitted`). The tick also batches heartbeats, marks silent nodes down and places lost
 * stateless sandboxes again. No promises, no timers, no clock: the same calls give the same steps.
 */
import { type PlanOptions, planBatch, type Strategy } from '../../placement/index.js';
import { assert } from '../../src/lib/assert.js';
import { checkQuota, checkRequestId, placementRequestOf } from './admission.js';
import { type Command, type PlaceItem, type SandboxSpec, textLengthMax } from './commands.js';
import { type ErrorResult, OverloadedError, RequestIdConflictError } from './errors.js';
import { holdsAllocation } from './lifecycle.js';
import { PendingQueue, pendingMax } from './pending.js';
import { Planner } from './plan.js';
import type { CoreRequest } from './request.js';
import type { SlotTable } from './slot-table.js';
import {
  type CommandResult,
  type DedupEntry,
  type PlaceHint,
  type SchedulerState,
  specDigest,
} from './state.js';
import type { Sandbox, SchedulerEvent, Usage } from './types.js';
import { verify } from './verify.js';

export interface LeaderCoreOptions {
  /** How long a create may wait for capacity before NoCapacityError. */
  readonly pendingTimeoutMs: number;
  /** A placement refused at commit is planned again at most this many times. */
  readonly replanMax: number;
  /** Batches planned and not yet committed, at most; further batches wait for one to settle. */
  readonly inFlightBatchesMax: number;
  /** A node silent for this long is marked down and its sandboxes lost; 0 turns health checking off. */
  readonly nodeDownAfterMs: number;
  readonly strategy?: Strategy;
  /** Placement options beyond the strategy (scorers, bounds), as the capacity simulator's policies set them. */
  readonly plan?: Omit<PlanOptions, 'seed'>;
  /**
   * Each answer also names the live request it answers (`Answer.req`), for a shell that keeps its callers on
   * the request (`LiveRequest.callers`) instead of in a map of its own by request id. Default false.
   */
  readonly answerWithRequest?: boolean;
}

/** One admitted create the leader is deciding about. The shell keeps its callers, by request id. */
export interface LiveRequest extends CoreRequest {
  /** Leader time after which a request that still fits nowhere fails with NoCapacityError. */
  readonly deadlineMs: number;
  /** Times a planned placement of it was refused at commit (a race); bounded by `replanMax`. */
  replans: number;
  /** The last reason it could not be placed, kept while it waits in the pending queue. */
  reason?: string;
  /** `pend` proposed for it (it may be committed `pending`): its failure must then be committed too. */
  pendProposed: boolean;
  /** Its resources are counted in the in-flight usage (until committed state counts them). */
  usageCounted: boolean;
  /**
   * The dedup table version in which admission found its id absent, so the verifier skips the second read
   * while the state still has that version (`verify`). Cleared when it waits (parked, re-planned): a request
   * out of its first batch would only pin an old version in memory.
   */
  admittedNewIn?: SlotTable<DedupEntry> | undefined;
  /**
   * The shell's callers waiting for this request, kept with it rather than in a second map by request id (with
   * 100,000 creates in flight, one more entry and lookup each). Opaque here: the core never reads it; with
   * `answerWithRequest` it hands the request back in its answer.
   */
  callers?: unknown;
}

/** What a caller of `requestId` is told (`req`: the live request answered, with `answerWithRequest`). */
export type Answer = { readonly req?: LiveRequest } /**
 * The request committed (placed, or placed earlier): resolve with its committed sandbox. `placed` is where
 * this leader's own `place` entry put it, when that is how it committed (so a reader need not look it up).
 */ & (
  | {
      readonly requestId: string;
      readonly kind: 'committed';
      readonly spec: SandboxSpec;
      readonly placed?: PlaceItem;
    }
  /** The state machine refused it for good (quota passed since admission, say). */
  | { readonly requestId: string; readonly kind: 'refused'; readonly error: ErrorResult }
  /** Terminated while pending. */
  | { readonly requestId: string; readonly kind: 'cancelled'; readonly sandboxId: string }
  /** No node before its deadline; `reason` is placement's last one. */
  | { readonly requestId: string; readonly kind: 'no-capacity'; readonly reason: string }
  /** Its `place` entry's fate is unknown (the proposal failed): the caller retries with the same id. */
  | { readonly requestId: string; readonly kind: 'unknown' }
);

export interface Proposal {
  readonly ticket: number;
  readonly command: Command;
  /**
   * For a `place`: what the verifier learned of its items' request ids, for `applyCommand` in this process
   * (SchedulerCore passes it; the Raft shell proposes the command alone, and replicas look every id up).
   */
  readonly hint?: PlaceHint;
}

export interface Step {
  /** Commands to propose, in this order (a `place` before the `pend` of the same step). */
  readonly proposals: readonly Proposal[];
  /** Callers to answer; each live request is answered exactly once. */
  readonly answers: readonly Answer[];
  /** Requests to hand to the batcher for a coming batch. */
  readonly toBatch: readonly LiveRequest[];
  /** The size of each batch planned in this step (for the shell's metrics). */
  readonly planned: readonly number[];
  /** Requests that began waiting in the pending queue in this step (each until its `deadlineMs`). */
  readonly parked: readonly LiveRequest[];
}

/** What `submit` decided about one create. */
export type Submitted =
  /** Admitted (or adopted from a committed pending sandbox): the shell batches `req` and waits. */
  | { readonly kind: 'queued'; readonly req: LiveRequest }
  /** A retry of a request in progress here (`req`): the shell waits with the first caller. */
  | { readonly kind: 'joined'; readonly req: LiveRequest }
  /** The id committed already (not pending): the shell answers with the committed sandbox at once. */
  | { readonly kind: 'committed' };

/** Counters for `stats()` and the demo's summary. */
export interface PipelineStats {
  batches: number;
  batchedRequests: number;
  placed: number;
  rejected: number;
  replans: number;
  batchLatencyMsTotal: number;
  rejectReasons: Map<string, number>;
}

/** Proposals awaiting their outcome, at most (a leader far past it has lost its log). */
export const ticketsMax = 1_000_000;

type Ticket =
  | {
      readonly kind: 'place';
      readonly byId: ReadonlyMap<string, LiveRequest>;
      readonly items: readonly PlaceItem[];
      readonly startMs: number;
    }
  | { readonly kind: 'pend'; readonly byId: ReadonlyMap<string, LiveRequest> }
  | {
      readonly kind: 'fail';
      readonly recorded: readonly {
        readonly req: LiveRequest;
        readonly reason: string;
        readonly sandboxId: string;
      }[];
    }
  | { readonly kind: 'replace' }
  | { readonly kind: 'fire' };

/** The step being built by one call: its outputs, and the requests parked in it (one `pend` for all). */
interface Draft {
  readonly state: SchedulerState;
  readonly nowMs: number;
  readonly proposals: Proposal[];
  readonly answers: Answer[];
  readonly toBatch: LiveRequest[];
  readonly planned: number[];
  readonly parked: LiveRequest[];
  readonly toPend: LiveRequest[];
}

export class LeaderCore {
  readonly #o: LeaderCoreOptions;
  readonly #planner: Planner;
  readonly #pending = new PendingQueue<LiveRequest>();
  /** Every request admitted and not yet answered, by id: a retry joins the first one. */
  readonly #live = new Map<string, LiveRequest>();
  /** Per tenant, the usage of admitted creates committed state does not count yet (records owned here). */
  readonly #inFlightUsage = new Map<string, { -readonly [K in keyof Usage]: Usage[K] }>();
  /** Batches waiting for a free in-flight slot. */
  #held: LiveRequest[][] = [];
  readonly #tickets = new Map<number, Ticket>();
  #nextTicket = 1;
  #heartbeats = new Set<string>();
  /** Lost stateless sandboxes waiting to be placed again; retried when capacity frees. */
  readonly #lost = new Set<string>();
  #lostDirty = true;
  #replacing = false;
  #stopped = false;
  readonly stats: PipelineStats = {
    batches: 0,
    batchedRequests: 0,
    placed: 0,
    rejected: 0,
    replans: 0,
    batchLatencyMsTotal: 0,
    rejectReasons: new Map(),
  };

  constructor(options: LeaderCoreOptions) {
    assert(options.inFlightBatchesMax >= 1, 'at least one batch may be in flight', {
      inFlightBatchesMax: options.inFlightBatchesMax,
    });
    this.#o = options;
    this.#planner = new Planner({
      ...(options.strategy === undefined ? {} : { strategy: options.strategy }),
      ...options.plan,
    });
  }

  get pendingCount(): number {
    return this.#pending.size;
  }
  get liveCount(): number {
    return this.#live.size;
  }
  /** The requests waiting for room, in arrival order (read-only: for reports). */
  pending(): IterableIterator<LiveRequest> {
    return this.#pending.values();
  }
  /** Plans proposed and not yet settled. */
  get inFlightBatches(): number {
    return this.#planner.inFlight;
  }

  /**
   * Takes over from committed state at the start of a term: lost stateless sandboxes a previous leader had
   * not placed again yet, and the pending queue (each planned once at once, since room may have freed while
   * no one led). What this replica applies later arrives through `onCommitted`, adopted the same way.
   */
  start(state: SchedulerState, nowMs: number): Step {
    const d = this.#draft(state, nowMs);
    for (const sb of state.sandboxes.values()) {
      if (sb.state === 'lost' && sb.spec.stateless === true) this.#lost.add(sb.id);
      if (sb.state === 'pending') d.toBatch.push(this.#adopt(sb));
    }
    return this.#close(d);
  }

  /**
   * Admits one create. Throws ValidationError (malformed id), RequestIdConflictError (the id is committed or
   * in progress for another spec), OverloadedError (`pendingMax` creates in progress), QuotaExceededError.
   * A throw changes nothing.
   */
  submit(state: SchedulerState, requestId: string, spec: SandboxSpec, nowMs: number): Submitted {
    assert(!this.#stopped, 'a stopped leader core admits nothing', { requestId });
    const idem = checkRequestId(state, requestId, spec);
    const live = this.#live.get(requestId);
    if (live !== undefined) {
      // A retry joins the request in progress (a committed pending one included), for the same spec only.
      if (specDigest(live.spec) !== specDigest(spec))
        throw new RequestIdConflictError(`request id ${requestId} is in progress for a different spec`, {
          details: { requestId },
        });
      return { kind: 'joined', req: live };
    }
    if (idem.kind === 'committed') {
      const sb = state.sandbox(idem.sandboxId);
      if (sb?.state !== 'pending') return { kind: 'committed' };
      // Pending but not live here: adopted now (normally `start` or `onCommitted` did it already).
      return { kind: 'queued', req: this.#adopt(sb) };
    }
    if (this.#live.size >= pendingMax)
      throw new OverloadedError(`${this.#live.size} creates are already in progress`);
    checkQuota(state, spec, this.#inFlightUsage.get(spec.tenant));
    const req: LiveRequest = {
      requestId,
      spec,
      deadlineMs: nowMs + this.#o.pendingTimeoutMs,
      replans: 0,
      pendProposed: false,
      usageCounted: true,
      admittedNewIn: state.dedup,
    };
    this.#live.set(requestId, req);
    this.#addUsage(spec, 1);
    return { kind: 'queued', req };
  }

  /** Records a node's heartbeat; the tick commits them together. */
  heartbeat(nodeId: string): void {
    this.#heartbeats.add(nodeId);
  }

  /**
   * A batch closed: it is planned now against committed state plus the plans in flight, or held until a
   * plan settles when `inFlightBatchesMax` are in Raft already.
   */
  onBatch(batch: readonly LiveRequest[], state: SchedulerState, nowMs: number): Step {
    const d = this.#draft(state, nowMs);
    if (this.#stopped || batch.length === 0) return this.#close(d);
    if (this.#planner.inFlight >= this.#o.inFlightBatchesMax) this.#held.push([...batch]);
    else this.#runBatch(batch, d);
    return this.#close(d);
  }

  /** The proposal under `ticket` committed with `result` (`state` has applied it). */
  onResult(ticket: number, result: CommandResult, state: SchedulerState, nowMs: number): Step {
    const t = this.#take(ticket);
    const d = this.#draft(state, nowMs);
    if (!result.ok) return this.#failed(t, d);
    switch (t.kind) {
      case 'place': {
        // Apply answers a place entry item by item, in order.
        let i = 0;
        for (const r of result.items ?? []) {
          const req = t.byId.get(r.requestId);
          assert(req !== undefined, 'a place result names a planned request', { requestId: r.requestId });
          if (r.outcome === 'rejected') this.#replan(req, `${r.error.code}: ${r.error.message}`, d);
          else this.#answerCommitted(req, d, r.outcome === 'placed' ? t.items[i] : undefined);
          i += 1;
        }
        this.#batchDone(t.startMs, d);
        break;
      }
      case 'pend':
        for (const r of result.items ?? []) {
          const req = t.byId.get(r.requestId);
          assert(req !== undefined, 'a pend result names a parked request', { requestId: r.requestId });
          if (r.outcome === 'pending') this.#uncount(req);
          else if (r.outcome === 'rejected') this.#refuse(req, r.error, d);
          else if (r.outcome === 'duplicate' && state.sandbox(r.sandboxId)?.state !== 'pending')
            // The id committed meanwhile: placed by an earlier leader, or recorded by an earlier pend.
            this.#answerCommitted(req, d);
        }
        break;
      case 'fail':
        // The pend entries went first, so this status applied after them if they committed at all, and
        // `onCommitted` answered those callers. A sandbox still unknown was never recorded: answered here.
        for (const { req, reason, sandboxId } of t.recorded)
          if (state.sandbox(sandboxId) === undefined) this.#noCapacity(req, reason, d);
        break;
      case 'replace':
        this.#replacing = false;
        this.#lostDirty = true;
        break;
      case 'fire':
        break;
    }
    return this.#close(d);
  }

  /**
   * The proposal under `ticket` failed: its fate is unknown (leadership moved, a transfer refused it, it
   * did not commit in time) or the state machine refused it whole. A `place` settles every request it
   * carried with an unknown outcome — a request left live would make every retry with its id wait on it
   * for as long as this replica leads; the retry (same id, any leader) is answered by the dedup table.
   */
  onProposeFailed(ticket: number, state: SchedulerState, nowMs: number): Step {
    return this.#close(this.#failed(this.#take(ticket), this.#draft(state, nowMs)));
  }

  /** Committed events: pending requests that left `pending` are answered; freed room wakes the queue. */
  onCommitted(events: readonly SchedulerEvent[], state: SchedulerState, nowMs: number): Step {
    const d = this.#draft(state, nowMs);
    if (this.#stopped) return this.#close(d);
    for (const e of events) {
      if (e.kind !== 'sandbox') continue;
      if (e.from === 'pending') this.#pendingLeft(e.sandboxId, e.to, e.reason, d);
      if (e.to === 'pending') {
        // Recorded by an earlier leader and applied here only now (this leader's own are live already).
        const sb = state.sandbox(e.sandboxId);
        if (sb?.state === 'pending' && !this.#live.has(sb.requestId)) d.toBatch.push(this.#adopt(sb));
      }
      if (e.to !== 'lost') continue;
      const sb = state.sandbox(e.sandboxId);
      if (sb?.spec.stateless === true) {
        this.#lost.add(sb.id);
        this.#lostDirty = true;
      }
    }
    this.#wake(events, d);
    return this.#close(d);
  }

  /** The leader's periodic decisions at `nowMs`: expired pending requests, lost sandboxes, heartbeats, down nodes. */
  tick(state: SchedulerState, nowMs: number): Step {
    const d = this.#draft(state, nowMs);
    if (this.#stopped) return this.#close(d);
    this.#failAll(
      this.#pending.expire(nowMs).map((req) => ({ req, reason: req.reason ?? 'no capacity' })),
      d,
    );
    this.#replaceLost(d);
    if (this.#heartbeats.size > 0) {
      const nodeIds = [...this.#heartbeats];
      this.#heartbeats = new Set();
      this.#propose({ type: 'node.heartbeat', atMs: nowMs, nodeIds }, { kind: 'fire' }, d);
    }
    if (this.#o.nodeDownAfterMs === 0) return this.#close(d);
    for (const rec of state.nodes.values()) {
      if (rec.spec.state !== 'down' && rec.lastHeartbeatMs + this.#o.nodeDownAfterMs < nowMs) {
        const cmd: Command = { type: 'node.state', atMs: nowMs, nodeId: rec.spec.id, state: 'down' };
        this.#propose(cmd, { kind: 'fire' }, d);
      }
    }
    return this.#close(d);
  }

  /** Stops deciding; returns every unanswered request id (the shell tells their callers to retry). */
  stop(): string[] {
    return this.stopLive().map((r) => r.requestId);
  }

  /** `stop`, returning the unanswered requests themselves (with their `callers`). */
  stopLive(): LiveRequest[] {
    this.#stopped = true;
    this.#pending.takeAll();
    this.#held = [];
    const live = [...this.#live.values()];
    this.#live.clear();
    this.#inFlightUsage.clear();
    return live;
  }

  /** Adds an answer to the step, naming its request when the shell asked for that. */
  #answer(d: Draft, a: Answer, req: LiveRequest): void {
    if (this.#o.answerWithRequest === true) (a as { req?: LiveRequest }).req = req;
    d.answers.push(a);
  }

  #draft(state: SchedulerState, nowMs: number): Draft {
    return { state, nowMs, proposals: [], answers: [], toBatch: [], planned: [], parked: [], toPend: [] };
  }

  /** Ends a step: the requests parked in it are recorded pending by one entry, after the step's others. */
  #close(d: Draft): Step {
    const reqs = d.toPend.filter((r) => this.#live.get(r.requestId) === r);
    if (reqs.length > 0 && !this.#stopped) {
      // Requests of one step often share a spec object (a workload's shape): digest each object once.
      const digests = new Map<SandboxSpec, string>();
      const digestOf = (spec: SandboxSpec): string => {
        let digest = digests.get(spec);
        if (digest === undefined) {
          digest = specDigest(spec);
          digests.set(spec, digest);
        }
        return digest;
      };
      const items = reqs.map((req) => ({
        requestId: req.requestId,
        sandboxId: req.requestId,
        spec: req.spec,
        specDigest: digestOf(req.spec),
        reason: (req.reason ?? 'no capacity').slice(0, textLengthMax),
        deadlineMs: req.deadlineMs,
      }));
      const byId = new Map(reqs.map((r) => [r.requestId, r] as const));
      this.#propose({ type: 'pend', atMs: d.nowMs, items }, { kind: 'pend', byId }, d);
    }
    return {
      proposals: d.proposals,
      answers: d.answers,
      toBatch: d.toBatch,
      planned: d.planned,
      parked: d.parked,
    };
  }

  #propose(command: Command, ticket: Ticket, d: Draft, hint?: PlaceHint): void {
    assert(this.#tickets.size < ticketsMax, 'proposals awaiting an outcome stay bounded', { ticketsMax });
    const id = this.#nextTicket++;
    this.#tickets.set(id, ticket);
    d.proposals.push(hint === undefined ? { ticket: id, command } : { ticket: id, command, hint });
  }

  #take(ticket: number): Ticket {
    const t = this.#tickets.get(ticket);
    assert(t !== undefined, 'an outcome names a ticket awaiting one', { ticket });
    this.#tickets.delete(ticket);
    return t;
  }

  #adopt(sb: Sandbox): LiveRequest {
    const req: LiveRequest = {
      requestId: sb.requestId,
      spec: sb.spec,
      deadlineMs: sb.pendingUntilMs ?? 0,
      replans: 0,
      pendProposed: true,
      usageCounted: false,
      ...(sb.reason === undefined ? {} : { reason: sb.reason }),
    };
    this.#live.set(req.requestId, req);
    return req;
  }

  #runBatch(batch: readonly LiveRequest[], d: Draft): void {
    const startMs = d.nowMs;
    const { plan, base } = this.#planner.plan(batch, d.state.index);
    d.planned.push(batch.length);
    // One map of the batch by id for the verifier and the ticket, built by a loop (a [id, request] pair per
    // request, twice, was ~2% of a simulation's allocation).
    const byId = new Map<string, LiveRequest>();
    for (let i = 0; i < batch.length; i++) {
      const r = batch[i] as LiveRequest;
      byId.set(r.requestId, r);
    }
    const verified = verify(plan, batch, d.state, byId, base);
    for (const req of verified.committed) this.#answerCommitted(req, d);
    for (const { req, reason } of verified.unplaced) this.#park(req, reason, d);
    for (const { req, reason } of verified.retry) this.#replan(req, reason, d);
    this.stats.batches += 1;
    this.stats.batchedRequests += batch.length;
    if (verified.items.length === 0) {
      this.#batchDone(startMs, d);
      return;
    }
    const items = verified.items;
    this.#propose(
      { type: 'place', atMs: d.nowMs, items: verified.items },
      { kind: 'place', byId, items, startMs },
      d,
      verified.hint,
    );
  }

  /** A planned batch settled: its in-flight slot goes to the next held batch. */
  #batchDone(startMs: number, d: Draft): void {
    this.stats.batchLatencyMsTotal += d.nowMs - startMs;
    this.#planner.settled();
    const next = this.#held.shift();
    if (next !== undefined && !this.#stopped) this.#runBatch(next, d);
  }

  #failed(t: Ticket, d: Draft): Draft {
    switch (t.kind) {
      case 'place':
        for (const { requestId } of t.items) {
          const req = t.byId.get(requestId);
          if (req !== undefined && this.#settle(req)) this.#answer(d, { requestId, kind: 'unknown' }, req);
        }
        this.#batchDone(t.startMs, d);
        break;
      case 'fail':
        // Not committed: back in the queue, so the next tick tries again.
        for (const { req, reason } of t.recorded)
          if (!this.#stopped && this.#live.get(req.requestId) === req) this.#pending.add(req, reason);
        break;
      case 'replace':
        this.#replacing = false;
        this.#lostDirty = true;
        break;
      case 'pend': // Its fate is unknown only when leadership moved, and then stop() answers every caller.
      case 'fire':
        break;
    }
    return d;
  }

  #addUsage(spec: SandboxSpec, sign: 1 | -1): void {
    let u = this.#inFlightUsage.get(spec.tenant);
    if (u === undefined) {
      u = { cpu: 0, memory: 0, disk: 0, sandboxes: 0 };
      this.#inFlightUsage.set(spec.tenant, u);
    }
    u.cpu += sign * spec.resources.cpu;
    u.memory += sign * spec.resources.memory;
    u.disk += sign * spec.resources.disk;
    u.sandboxes += sign;
  }

  /** Takes a live request out of every queue; false when it was answered already. */
  #settle(req: LiveRequest): boolean {
    if (this.#live.get(req.requestId) !== req) return false;
    this.#live.delete(req.requestId);
    this.#pending.remove(req.requestId);
    this.#uncount(req);
    return true;
  }

  /** Committed state counts the request now (or it is settled): drop it from the in-flight usage. */
  #uncount(req: LiveRequest): void {
    if (!req.usageCounted) return;
    req.usageCounted = false;
    this.#addUsage(req.spec, -1);
  }

  #answerCommitted(req: LiveRequest, d: Draft, placed?: PlaceItem): void {
    if (!this.#settle(req)) return;
    this.stats.placed += 1;
    this.#answer(
      d,
      placed === undefined
        ? { requestId: req.requestId, kind: 'committed', spec: req.spec }
        : { requestId: req.requestId, kind: 'committed', spec: req.spec, placed },
      req,
    );
  }

  #refuse(req: LiveRequest, error: ErrorResult, d: Draft): void {
    if (!this.#settle(req)) return;
    this.stats.rejected += 1;
    this.#answer(d, { requestId: req.requestId, kind: 'refused', error }, req);
  }

  #noCapacity(req: LiveRequest, reason: string, d: Draft): void {
    if (!this.#settle(req)) return;
    this.stats.rejected += 1;
    const key = reason.split(':')[0] ?? reason;
    this.stats.rejectReasons.set(key, (this.stats.rejectReasons.get(key) ?? 0) + 1);
    this.#answer(d, { requestId: req.requestId, kind: 'no-capacity', reason }, req);
  }

  #replan(req: LiveRequest, reason: string, d: Draft): void {
    req.admittedNewIn = undefined;
    req.replans += 1;
    this.stats.replans += 1;
    if (req.replans > this.#o.replanMax) this.#park(req, reason, d);
    else d.toBatch.push(req);
  }

  #park(req: LiveRequest, reason: string, d: Draft): void {
    req.admittedNewIn = undefined;
    if (this.#live.get(req.requestId) !== req) return;
    if (d.nowMs >= req.deadlineMs) {
      this.#failAll([{ req, reason }], d);
      return;
    }
    this.#pending.add(req, reason);
    d.parked.push(req);
    if (!req.pendProposed) {
      req.pendProposed = true;
      d.toPend.push(req);
    }
  }

  /**
   * Deadlines passed. A request recorded `pending` (or that may be) fails through a committed status first,
   * so that no later leader places it after its caller heard it failed; until that commits it stays live,
   * and a retry joins it. One `status` entry carries every committed failure of a step.
   */
  #failAll(expired: readonly { readonly req: LiveRequest; readonly reason: string }[], d: Draft): void {
    const recorded: { req: LiveRequest; reason: string; sandboxId: string }[] = [];
    for (const { req, reason } of expired) {
      if (this.#live.get(req.requestId) !== req) continue;
      if (!req.pendProposed) {
        this.#noCapacity(req, reason, d);
        continue;
      }
      this.#pending.remove(req.requestId);
      const sandboxId = d.state.dedup.get(req.requestId)?.sandboxId ?? req.requestId;
      recorded.push({ req, reason, sandboxId });
    }
    if (recorded.length === 0) return;
    const items = recorded.map(({ reason, sandboxId }) => ({
      sandboxId,
      state: 'failed' as const,
      reason: reason.slice(0, textLengthMax),
    }));
    this.#propose({ type: 'status', atMs: d.nowMs, items }, { kind: 'fail', recorded }, d);
  }

  /**
   * A committed pending sandbox left `pending`: its live request, if any, is answered accordingly. Live
   * requests are keyed by request id, and the leader gives a sandbox its request's id; a sandbox recorded
   * under another id is answered by its `place` result instead.
   */
  #pendingLeft(sandboxId: string, to: string, reason: string | undefined, d: Draft): void {
    const req = this.#live.get(sandboxId);
    if (req === undefined) return;
    if (to === 'placed') this.#answerCommitted(req, d);
    else if (to === 'terminated') {
      if (!this.#settle(req)) return;
      this.stats.rejected += 1;
      this.#answer(d, { requestId: req.requestId, kind: 'cancelled', sandboxId }, req);
    } else if (to === 'failed') this.#noCapacity(req, reason ?? req.reason ?? 'no capacity', d);
  }

  /**
   * Committed events that free capacity wake the pending queue (once per committed entry): nodes that
   * released an allocation wake the requests that fit in their free room; a node that joined, changed or
   * came back wakes everything.
   */
  #wake(events: readonly SchedulerEvent[], d: Draft): void {
    if (this.#pending.size === 0 && this.#lost.size === 0) return;
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
    const index = d.state.index;
    const rooms = [...released].map((id) => index.get(id)).filter((v) => v !== undefined);
    // Only the released nodes changed, so a request can newly fit only on one of them, and only if its
    // resources fit in that node's free room: a necessary condition, so no request misses its wake-up.
    const fitsSomewhere = (req: LiveRequest): boolean =>
      rooms.some(
        (v) =>
          v.spec.capacity.cpu - v.allocated.cpu >= req.spec.resources.cpu &&
          v.spec.capacity.memory - v.allocated.memory >= req.spec.resources.memory &&
          v.spec.capacity.disk - v.allocated.disk >= req.spec.resources.disk,
      );
    const woken = nodeChanged ? this.#pending.wake() : this.#pending.wakeWhere(fitsSomewhere);
    for (const req of woken) {
      req.replans = 0;
      d.toBatch.push(req);
    }
  }

  /**
   * Places lost stateless sandboxes again, one `replace` entry at a time, when some were lost or capacity
   * freed since the last try. Those that fit nowhere stay lost and are tried again on the next change.
   */
  #replaceLost(d: Draft): void {
    if (this.#lost.size === 0 || !this.#lostDirty || this.#replacing) return;
    this.#lostDirty = false;
    const candidates: Sandbox[] = [];
    for (const id of this.#lost) {
      const sb = d.state.sandbox(id);
      if (sb === undefined || sb.state !== 'lost') this.#lost.delete(id);
      else candidates.push(sb);
    }
    if (candidates.length === 0) return;
    const plan = planBatch(
      d.state.index,
      candidates.map((sb) => placementRequestOf(sb.id, sb.spec, undefined)),
    );
    if (plan.placements.length === 0) return;
    this.#replacing = true;
    const items = plan.placements.map((p) => ({
      sandboxId: p.requestId,
      nodeId: p.nodeId,
      gpuDevices: p.gpuDevices.map((g) => ({ ...g })),
    }));
    this.#propose({ type: 'replace', atMs: d.nowMs, items }, { kind: 'replace' }, d);
  }
}
