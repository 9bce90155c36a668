/**
 * The leader pipeline: the I/O shell around the pure LeaderCore (core/leader.ts), which makes every
 * decision — admission, planning against committed state plus the plans in flight, verification, what to
 * record pending, what to wake, what to fail at its deadline, which callers to answer with what. The shell
 * only waits: it keeps the callers' promises by request id, closes batches on the batcher's timer, proposes
 * the core's commands to the log and hands their outcomes back, feeds it committed events, and runs the tick.
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

import { assert } from '../../src/lib/assert.js';
import { TrellisError } from '../../src/lib/errors.js';
import type { TrellisMetrics } from '../../src/lib/metrics.js';
import type { SandboxSpec } from '../commands.js';
import { type Answer, LeaderCore, type LiveRequest, type Proposal, type Step } from '../core/leader.js';
import { errorFromResult, NoCapacityError, NotLeaderError, SandboxCancelledError } from '../errors.js';
import type { ReplicaLog } from '../log.js';
import type { SchedulerState } from '../state.js';
import { encodeProposal } from '../state-machine.js';
import type { Sandbox } from '../types.js';
import { Batcher } from './batcher.js';
import { recordUtilization } from './utilization.js';

export type { PipelineStats } from '../core/leader.js';

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

interface Waiter {
  readonly resolve: (sandbox: Sandbox) => void;
  readonly reject: (err: Error) => void;
}

/** What `LiveRequest.callers` holds in this shell: the one caller, or a list once a retry joined. */
type Callers = Waiter | Waiter[];

export class LeaderPipeline {
  readonly #log: ReplicaLog;
  readonly #opts: PipelineOptions;
  readonly #core: LeaderCore;
  readonly #batcher: Batcher<LiveRequest>;
  readonly #cancelTick: () => void;
  #stopped = false;
  readonly #unsubscribe: () => void;

  constructor(log: ReplicaLog, opts: PipelineOptions) {
    this.#log = log;
    this.#opts = opts;
    // The callers are kept on the live requests (`LiveRequest.callers`): the core names the request it answers.
    this.#core = new LeaderCore({ ...opts, answerWithRequest: true });
    this.#batcher = new Batcher({ sizeMax: opts.batchSizeMax, windowMs: opts.batchWindowMs }, (b) =>
      this.#onBatch(b),
    );
    this.#unsubscribe = log.machine.onApply((applied) =>
      this.#run(this.#core.onCommitted(applied.events, log.machine.state, opts.now())),
    );
    this.#cancelTick = opts.every(() => this.#tick(), opts.heartbeatIntervalMs);
    this.#run(this.#core.start(log.machine.state, opts.now()));
  }

  get stats(): LeaderCore['stats'] {
    return this.#core.stats;
  }

  get pendingCount(): number {
    return this.#core.pendingCount;
  }

  /**
   * Admits a create and resolves with the committed sandbox. Throws (rejects) ValidationError,
   * RequestIdConflictError, QuotaExceededError, OverloadedError; later NoCapacityError at its deadline,
   * SandboxCancelledError when it is terminated while pending, the proposal's own error when its entry's
   * fate is unknown (retry with the same id), or NotLeaderError when this replica stops leading first.
   */
  create(requestId: string, spec: SandboxSpec): Promise<Sandbox> {
    if (this.#stopped) return Promise.reject(new NotLeaderError(`replica ${this.#log.id} no longer leads`));
    const state = this.#log.machine.state;
    const submitted = this.#core.submit(state, requestId, spec, this.#opts.now());
    if (submitted.kind === 'committed') return Promise.resolve(committedSandbox(state, requestId, spec));
    // The callers of an unanswered request are kept on it (`LiveRequest.callers`; the core hands the request
    // back in its answer): the one caller itself, or a list once a retry joined. With 100,000 creates in
    // flight, a list per caller and a second map by request id were more objects and entries for the GC.
    const req = submitted.req;
    const done = new Promise<Sandbox>((resolve, reject) => {
      const callers = req.callers as Callers | undefined;
      if (callers === undefined) req.callers = { resolve, reject };
      else if (Array.isArray(callers)) callers.push({ resolve, reject });
      else req.callers = [callers, { resolve, reject }];
    });
    if (submitted.kind === 'queued') this.#batcher.add(req);
    return done;
  }

  /** Records a node's heartbeat; they are committed together once per interval. */
  heartbeat(nodeId: string): void {
    this.#core.heartbeat(nodeId);
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
    const live = this.#core.stopLive();
    const err = new NotLeaderError(`replica ${this.#log.id} stopped leading`);
    for (const req of live) {
      const callers = req.callers as Callers | undefined;
      req.callers = undefined;
      if (Array.isArray(callers)) for (const w of callers) w.reject(err);
      else callers?.reject(err);
    }
  }

  #onBatch(batch: LiveRequest[]): void {
    if (this.#stopped) return;
    const startedMs = performance.now();
    this.#run(this.#core.onBatch(batch, this.#log.machine.state, this.#opts.now()), undefined, startedMs);
  }

  /**
   * Carries out a step of the core: proposes its commands in order, answers its callers, and hands its
   * requests to the batcher. `unknownCause` is the error a caller of an unknown outcome gets.
   */
  #run(step: Step, unknownCause?: Error, startedMs?: number): void {
    if (startedMs !== undefined && step.planned.length > 0)
      this.#opts.metrics?.placementBatchSeconds.observe((performance.now() - startedMs) / 1_000);
    for (const p of step.proposals) this.#propose(p);
    for (const a of step.answers) this.#answer(a, unknownCause);
    for (const n of step.planned) this.#opts.metrics?.placementBatchSize.observe(n);
    // Outcomes still arrive after stop(); nothing they re-plan is batched then (the callers were told to retry).
    if (!this.#stopped) for (const req of step.toBatch) this.#batcher.add(req);
  }

  #propose(p: Proposal): void {
    void this.#log.propose(encodeProposal(p.command)).then(
      (result) => {
        if (!result.ok) {
          this.#failed(p, errorFromResult(result.error));
          return;
        }
        // A settled place may plan a held batch in the same step: its planning time is measured here.
        const startedMs = performance.now();
        const step = this.#core.onResult(p.ticket, result, this.#log.machine.state, this.#opts.now());
        this.#run(step, undefined, startedMs);
        this.#afterPlace(p);
      },
      (err: unknown) => this.#failed(p, err),
    );
  }

  /**
   * The entry's fate is unknown (leadership moved, a transfer refused it, it was replaced, or it did not
   * commit within the proposal timeout, as while NATS restarts). The core settles every request of a failed
   * `place` with an unknown outcome; their callers get this error and retry with the same ids on whichever
   * replica leads, where the dedup table answers any that did commit, so nothing is placed twice.
   */
  #failed(p: Proposal, err: unknown): void {
    const cause = err instanceof Error ? err : new Error(String(err));
    const startedMs = performance.now();
    const step = this.#core.onProposeFailed(p.ticket, this.#log.machine.state, this.#opts.now());
    this.#run(step, cause, startedMs);
    this.#afterPlace(p);
    // A non-Trellis error from a place is a bug, surfaced as before; the others' failures are expected.
    if (p.command.type === 'place' && !(err instanceof TrellisError)) throw err;
  }

  /** A placement batch settled: the pending depth is sampled (as before, once per batch). */
  #afterPlace(p: Proposal): void {
    if (p.command.type === 'place') this.#opts.metrics?.pendingDepth.set(this.pendingCount);
  }

  #answer(a: Answer, unknownCause: Error | undefined): void {
    this.#countAnswer(a);
    const req = a.req;
    const waiters = req?.callers as Callers | undefined;
    if (req === undefined || waiters === undefined) return;
    req.callers = undefined;
    if (a.kind === 'committed') {
      const state = this.#log.machine.state;
      const sb = committedSandbox(state, a.requestId, a.spec);
      if (Array.isArray(waiters)) for (const w of waiters) w.resolve(sb);
      else waiters.resolve(sb);
      return;
    }
    const err = errorOf(a, unknownCause);
    if (Array.isArray(waiters)) for (const w of waiters) w.reject(err);
    else waiters.reject(err);
  }

  #countAnswer(a: Answer): void {
    const m = this.#opts.metrics;
    if (m === undefined) return;
    if (a.kind === 'committed') m.placements.inc({ result: 'placed', reason: 'none' });
    else if (a.kind === 'refused') m.placements.inc({ result: 'rejected', reason: a.error.code });
    else if (a.kind === 'cancelled') m.placements.inc({ result: 'rejected', reason: 'SCHED_CANCELLED' });
    else if (a.kind === 'no-capacity')
      m.placements.inc({ result: 'rejected', reason: a.reason.split(':')[0] ?? a.reason });
  }

  #tick(): void {
    if (this.#stopped) return;
    const state = this.#log.machine.state;
    this.#run(this.#core.tick(state, this.#opts.now()));
    if (this.#opts.metrics !== undefined) recordUtilization(state.index, this.#opts.metrics);
  }
}

/** The typed error a caller gets for an answer other than `committed`. */
function errorOf(a: Exclude<Answer, { kind: 'committed' }>, unknownCause: Error | undefined): Error {
  switch (a.kind) {
    case 'refused':
      return errorFromResult(a.error);
    case 'cancelled':
      return new SandboxCancelledError(`sandbox ${a.sandboxId} was terminated while pending`);
    case 'no-capacity':
      return new NoCapacityError(`request ${a.requestId} found no node before its deadline: ${a.reason}`, {
        details: { reason: a.reason },
      });
    case 'unknown':
      assert(unknownCause !== undefined, 'an unknown outcome comes with the proposal error', {
        requestId: a.requestId,
      });
      return unknownCause;
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
