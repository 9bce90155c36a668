/**
 * The embedding API: a `Scheduler` over a group of replicas in this process, one `SchedulerReplica` on each
 * replica log. The caller is attached to one replica (`config.replica`, default 0): its mutating calls go
 * to that replica, which runs them on its pipeline when it leads and forwards them to the leader otherwise;
 * reads come from that replica after a ReadIndex barrier through the leader, or straight from its applied
 * state when the caller asks for a stale read.
 *
 * When leadership moves, the old leader's pipeline is stopped and its unanswered requests are retried on
 * the new leader with the same request ids, so a create is never lost and, thanks to the committed dedup
 * table, never placed twice. A retry goes to the replica the group knows leads, so a caller whose own
 * replica is down keeps working.
 */
import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import { type NodeSpec, type NodeView, planBatch } from '../placement/index.js';
import { assert } from '../src/lib/assert.js';
import { Deadline } from '../src/lib/deadline.js';
import { UnavailableError, ValidationError } from '../src/lib/errors.js';
import { requestId as parseRequestId, sandboxId as parseSandboxId } from '../src/lib/ids.js';
import { type MetricsSink, trellisMetrics } from '../src/lib/metrics.js';
import { parseWith } from '../src/lib/validate.js';
import { placementRequestOf, refuseUnsafeText, validateSpec } from './admission.js';
import type { MutationOptions, SchedulerApi, StatusItem, WatchOptions } from './api.js';
import {
  type Command,
  commandCodec,
  commandItemsMax,
  idSchema,
  nodeSpecSchema,
  type Quota,
  quotaSchema,
  type ReconcileEntry,
  reconcileReportSchema,
  type SandboxSpec,
  statusItemSchema,
} from './commands.js';
import type { NodeCommandSink, NodeExecRequest } from './dispatch.js';
import {
  errorFromResult,
  NotLeaderError,
  SandboxNotRunningError,
  SchedulerClosedError,
  UnknownSandboxError,
  WatchGapError,
  WatchOverflowError,
} from './errors.js';
import type { SandboxState } from './lifecycle.js';
import { execTimeoutMsMax, runningWaitMsDefault, runningWaitMsMax } from './limits.js';
import type { ReplicaGroup } from './log.js';
import { defaultPipelineOptions, everyInterval, type PipelineOptions } from './pipeline/leader.js';
import { RaftGroupLog } from './raft-group.js';
import { type ReplicaDispatchOptions, SchedulerReplica } from './replica.js';
import type { CommandResult, ReconcileResult } from './state.js';
import type { Sandbox, SchedulerEvent } from './types.js';

/** Times a call is retried on a new leader before it gives up with NotLeaderError. */
export const leaderRetriesMax = 8;
/** Committed events a `watch()` iterator buffers for a slow reader before it ends with an error. */
export const watchBufferMax = 100_000;
/** Committed events the scheduler keeps for `watch({ fromIndex })` (up to twice this between trims). */
export const watchHistoryMax = 10_000;

export interface SchedulerConfig {
  /** Replicas of the in-process Raft group when no `log` is given. Default 3. */
  readonly replicas?: number;
  /**
   * The replicated log to run on. Default: a Raft group of `replicas` in-process replicas on memory storage
   * (`RaftGroupLog.inMemory`), closed with the scheduler. Pass `await RaftGroupLog.open({ dir })` for fsynced
   * file storage, or `InProcessLog` for a log without Raft (deterministic unit tests).
   */
  readonly log?: ReplicaGroup;
  /** The replica this scheduler is attached to: its calls enter there and its reads are served there. Default 0. */
  readonly replica?: number;
  readonly pipeline?: Partial<Omit<PipelineOptions, 'now' | 'every'>>;
  /** The leader's clock, stamped into commands. Default Date.now. */
  readonly now?: () => number;
  /** The leader's periodic ticker (heartbeats, health, deadlines). Default setInterval. */
  readonly every?: PipelineOptions['every'];
  /**
   * Where the leaders' pipelines record placement metrics (batch duration and size, placements by result and
   * reason, pending depth): a `MemoryMetrics`, a `PrometheusMetrics` (src/metrics) or any `MetricsSink`.
   * Default: nothing recorded.
   */
  readonly metrics?: MetricsSink;
  /**
   * How long a call waits for a leader (during an election, or after its leader was lost) before it fails
   * with NotLeaderError. Measured on `now`. Default 10,000 ms.
   */
  readonly leaderWaitMs?: number;
  /**
   * Makes the request id of a call made without one. Default `crypto.randomUUID`; simulations pass a
   * seeded or counting source so a run replays exactly.
   */
  readonly requestIds?: () => string;
  /**
   * Sends committed placements, terminates, suspends and resumes to node workers from the leader
   * (scheduler/dispatch.ts) through `dispatch.sink`. Default: none (nothing is sent to nodes).
   */
  readonly dispatch?: ReplicaDispatchOptions;
}

export interface CreateOptions {
  /** Makes the create idempotent: the same id with the same spec returns the same sandbox. */
  readonly requestId?: string;
  /** Resolve once placed (default) or once the node reports it running. */
  readonly wait?: 'placed' | 'running';
  /**
   * With `wait: 'running'`: how long to wait for the node to report it running before
   * SandboxNotRunningError (the sandbox itself is not touched). Default `runningWaitMsDefault`.
   */
  readonly runningWaitMs?: number;
  /**
   * Answer with the sandbox as committed once this long has passed without a node for it: `pending`, with
   * the reason it waits (with `wait: 'running'`, SandboxNotRunningError saying so, and never later than
   * `runningWaitMs`), instead of waiting until it is placed or fails at the pending deadline (30 s by
   * default). A replica serving a remote caller sets it from the caller's deadline, so a create that waits
   * for room is answered `pending`, not OUTCOME_UNKNOWN. When the request is not yet committed at that
   * time, the wait goes on as without it. The remote client does not send it: the replica derives it from
   * the call's deadline.
   */
  readonly pendingReplyMs?: number;
}

interface StatusQueue {
  readonly items: z.output<typeof statusItemSchema>[];
  readonly waiters: { resolve: () => void; reject: (err: unknown) => void }[];
}

export { execTimeoutMsMax, runningWaitMsDefault, runningWaitMsMax };
export const execTimeoutMsDefault = 30_000;
/** Output kept per stream by default, and at most: an exec result must fit one API reply frame. */
export const execOutputBytesDefault = 64 << 10;
export const execOutputBytesMax = 256 << 10;
/** Largest stdin an exec carries through the scheduler. */
export const execStdinBytesMax = 256 << 10;

export interface ExecOptions {
  /** The command is killed after this long (`timedOut` in the result). Default 30,000 ms. */
  readonly timeoutMs?: number;
  /** Bytes written to the command's stdin. */
  readonly stdinBytes?: Uint8Array;
  /** Output kept per stream. Default 64 KiB, at most 256 KiB. */
  readonly outputBytesMax?: number;
  /**
   * Names this exec (default: a fresh id). A retry with the same id, after an OutcomeUnknownError, gets the
   * first run's result from the worker instead of running the command again.
   */
  readonly requestId?: string;
}

/**
 * `requestId` makes a mutating call idempotent: the committed state remembers the id with the first
 * outcome, so a retry with the same id (after a timeout, a leader change, or from another process) returns
 * that outcome without applying twice, and the same id with other arguments throws
 * RequestIdConflictError. One is generated when absent, and reused for the scheduler's own retries.
 */
export interface ReadOptions {
  /** Read this replica's applied state without a ReadIndex round. */
  readonly stale?: boolean;
}

export interface ListFilter {
  readonly tenant?: string;
  readonly nodeId?: string;
  readonly state?: SandboxState;
}

export interface SchedulerStats {
  readonly leader: number | undefined;
  readonly applied: number;
  readonly nodes: number;
  readonly sandboxes: number;
  readonly pending: number;
  readonly batches: number;
  readonly meanBatch: number;
  readonly meanBatchLatencyMs: number;
  readonly placed: number;
  readonly rejected: number;
  readonly replans: number;
  readonly rejectReasons: Readonly<Record<string, number>>;
}

export class Scheduler implements SchedulerApi {
  readonly log: ReplicaGroup;
  /** One replica per replica log of the group, each with its pipeline while it leads. */
  readonly replicas: readonly SchedulerReplica[];
  readonly #attached: number;
  readonly #opts: PipelineOptions;
  readonly #leaderWaitMs: number;
  readonly #ownsLog: boolean;
  readonly #newRequestId: () => string;
  readonly #execSink: NodeCommandSink['exec'];
  /** Status reports waiting for this turn's merged entry. */
  #statusQueue: StatusQueue | undefined;
  #closed = false;
  /** What ends each open `watch()` iterator when the scheduler closes. */
  readonly #watchers = new Set<() => void>();
  /**
   * Committed events of the attached replica since this scheduler started, the last `watchHistoryMax` or
   * a few more (whole entries), for `watch({ fromIndex })`; every event of entries >= `#historyFrom` is held.
   */
  #history: SchedulerEvent[] = [];
  #historyFrom = 0;
  #historyOff: (() => void) | undefined;
  /**
   * Creates waiting to run, by sandbox id: one apply listener serves them all (`#waitRunning`), so an apply
   * costs its events, not its events times the waiters (a listener per waiter scanned every event: 2.5% of
   * the leader's CPU with 1,024 waiting in bench:load).
   */
  readonly #runningWaiters = new Map<string, Set<() => void>>();
  #runningOff: (() => void) | undefined;

  constructor(config: SchedulerConfig = {}) {
    // The embedded default: a real Raft group of in-process replicas on memory storage.
    this.#ownsLog = config.log === undefined;
    this.log = config.log ?? RaftGroupLog.inMemory({ replicas: config.replicas ?? 3 });
    this.#leaderWaitMs = config.leaderWaitMs ?? 10_000;
    this.#newRequestId = config.requestIds ?? randomUUID;
    this.#attached = config.replica ?? 0;
    this.#execSink = config.dispatch?.sink.exec?.bind(config.dispatch.sink);
    assert(this.#attached < this.log.size, 'replica out of range', {
      replica: this.#attached,
      size: this.log.size,
    });
    this.#opts = {
      ...defaultPipelineOptions,
      ...config.pipeline,
      now: config.now ?? Date.now,
      every: config.every ?? everyInterval,
      ...(config.metrics === undefined ? {} : { metrics: trellisMetrics(config.metrics) }),
    };
    const replicas: SchedulerReplica[] = [];
    // In one process a forwarded request is handed to the other replica's `handle`, as bytes, exactly as
    // it would travel between processes.
    const forwarder = async (leaderId: string, request: Uint8Array): Promise<Uint8Array> => {
      const to = replicas.find((r) => r.id === leaderId);
      if (to === undefined) throw new NotLeaderError(`no replica ${leaderId} in this group`);
      return to.handle(request);
    };
    for (let i = 0; i < this.log.size; i++)
      replicas.push(
        new SchedulerReplica(this.log.replica(i), {
          pipeline: this.#opts,
          forwarder,
          ...(config.dispatch === undefined ? {} : { dispatch: config.dispatch }),
        }),
      );
    this.replicas = replicas;
    this.#keepHistory();
  }

  /** Follows the attached replica's applied entries into `#history` (see `watch`). */
  #keepHistory(): void {
    const machine = this.#home.machine;
    let seen = machine.state.applied;
    this.#historyFrom = seen + 1;
    this.#historyOff = machine.onApply(({ events }, entry) => {
      // A replica restarted from its storage replays entries it had applied; skip them by index.
      if (entry.index <= seen) return;
      seen = entry.index;
      this.#history.push(...events);
      if (this.#history.length <= 2 * watchHistoryMax) return;
      // Drop from the front down to about `watchHistoryMax`, on an entry boundary.
      let cut = this.#history.length - watchHistoryMax;
      const at = this.#history[cut]?.index ?? seen;
      while (cut > 0 && this.#history[cut - 1]?.index === at) cut--;
      this.#history = this.#history.slice(cut);
      this.#historyFrom = this.#history[0]?.index ?? seen + 1;
    });
  }

  /**
   * The replica a call's attempt enters: the attached one first; on a retry the one the group knows leads
   * (the attached replica may be down or cut off), else the attached one again.
   */
  #entry(attempt: number): SchedulerReplica {
    const leader = attempt === 0 ? undefined : this.log.leader();
    return this.replicas[leader ?? this.#attached] as SchedulerReplica;
  }

  get #home(): SchedulerReplica {
    return this.replicas[this.#attached] as SchedulerReplica;
  }

  /**
   * Runs `f` through a replica with the call's deadline. On NotLeaderError (the leader was lost, or there
   * is none) it waits for the next leader and retries with the same request — safe, since request ids
   * make it idempotent — until `leaderWaitMs` has passed without one.
   */
  /**
   * Runs `f` on the replica to ask, again on NotLeaderError (a few times at once, then as leaders change)
   * until the deadline. The first attempt is a plain call, not an async frame: with the leader known, that
   * is every call, and a create's promise chain is what 100,000 creates in flight keep alive.
   */
  #onLeader<T>(f: (r: SchedulerReplica, deadline: Deadline) => Promise<T>): Promise<T> {
    const deadline = Deadline.after(this.#leaderWaitMs, this.#opts.now);
    if (this.#closed) return Promise.reject(new SchedulerClosedError('the scheduler is closed'));
    let first: Promise<T>;
    try {
      first = f(this.#entry(0), deadline);
    } catch (err) {
      first = Promise.reject(err);
    }
    return first.catch((err: unknown) => this.#retryOnLeader(f, deadline, err));
  }

  /** `#onLeader` after its first attempt failed with `err`. */
  async #retryOnLeader<T>(
    f: (r: SchedulerReplica, deadline: Deadline) => Promise<T>,
    deadline: Deadline,
    err: unknown,
  ): Promise<T> {
    let last = err;
    for (let attempt = 1; ; attempt++) {
      if (!(last instanceof NotLeaderError)) throw last;
      if (attempt - 1 < leaderRetriesMax) await new Promise((r) => setImmediate(r));
      else await this.#nextLeader(deadline.atMs, last);
      if (this.#closed) throw new SchedulerClosedError('the scheduler is closed');
      try {
        return await f(this.#entry(attempt), deadline);
      } catch (e) {
        last = e;
      }
    }
  }

  /** Resolves when a leader is (or becomes) available; rejects with `cause` once `deadline` passes. */
  #nextLeader(deadline: number, cause: NotLeaderError): Promise<void> {
    const onTick = this.#opts.every;
    if (this.log.leader() !== undefined && this.#opts.now() <= deadline) {
      // A leader exists but refused: give it a tick before asking again.
      return new Promise((resolve) => {
        const cancel = onTick(() => {
          cancel();
          resolve();
        }, this.#opts.heartbeatIntervalMs);
      });
    }
    return new Promise((resolve, reject) => {
      let cancel: () => void = () => {};
      const off = this.log.onLeaderChange((leader) => {
        if (leader === undefined) return;
        off();
        cancel();
        resolve();
      });
      cancel = onTick(() => {
        if (!this.#closed && this.#opts.now() <= deadline) return;
        off();
        cancel();
        reject(this.#closed ? new SchedulerClosedError('the scheduler is closed') : cause);
      }, this.#opts.heartbeatIntervalMs);
    });
  }

  async #command(cmd: Command): Promise<CommandResult> {
    const data = commandCodec.encode(cmd);
    const result = await this.#onLeader((r, deadline) => r.command(data, deadline));
    if (!result.ok) throw errorFromResult(result.error);
    return result;
  }

  /**
   * Creates a sandbox; resolves once its placement is committed (or once it runs, with `wait:
   * 'running'`). Throws ValidationError for a bad spec, RequestIdConflictError when the request id was
   * used for another spec, QuotaExceededError, OverloadedError, and NoCapacityError when it found no
   * node before its deadline (the error's `details.reason` says why).
   */
  /**
   * Not an async function: a create that waits for neither `pendingReplyMs` nor running is the placement's
   * own promise. With 100,000 creates in flight (bench:scheduler), one suspended async frame per create
   * was ~1.2 KB of young-generation survivors each; bad input still rejects, never throws.
   */
  create(spec: SandboxSpec, options: CreateOptions = {}): Promise<Sandbox> {
    try {
      return this.#create(spec, options);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  #create(spec: SandboxSpec, options: CreateOptions): Promise<Sandbox> {
    // Typed for callers, still validated: JavaScript callers and data from the wire reach here unchecked.
    const checked = validateSpec(spec);
    const requestId = options.requestId ?? this.#newRequestId();
    const waitMs = options.runningWaitMs ?? runningWaitMsDefault;
    if (!(Number.isInteger(waitMs) && waitMs >= 1 && waitMs <= runningWaitMsMax))
      throw new ValidationError('runningWaitMs', `must be an integer of 1..${runningWaitMsMax} ms`);
    const askedReplyMs = options.pendingReplyMs;
    if (
      askedReplyMs !== undefined &&
      !(Number.isInteger(askedReplyMs) && askedReplyMs >= 1 && askedReplyMs <= runningWaitMsMax)
    )
      throw new ValidationError('pendingReplyMs', `must be an integer of 1..${runningWaitMsMax} ms`);
    // A caller waiting for running waits at most `waitMs` in all: still pending by then is its answer too.
    const replyMs = options.wait === 'running' ? Math.min(askedReplyMs ?? waitMs, waitMs) : askedReplyMs;
    // The wait for running counts from this call, placement included: a caller's budget is one budget. Taken
    // only by a caller that waits for running (one object fewer per create kept alive until it is placed).
    const runningDeadline = options.wait === 'running' ? Deadline.after(waitMs, this.#opts.now) : undefined;
    const placing = this.#onLeader((r, deadline) => r.create(requestId, checked, deadline));
    if (replyMs === undefined && runningDeadline === undefined) return placing;
    return this.#createWaiting(placing, requestId, replyMs, waitMs, runningDeadline);
  }

  /** The rest of a create that waits: for a placed-or-pending answer within `replyMs`, then for running. */
  async #createWaiting(
    placing: Promise<Sandbox>,
    requestId: string,
    replyMs: number | undefined,
    waitMs: number,
    /** Set when the caller waits for running. */
    runningDeadline: Deadline | undefined,
  ): Promise<Sandbox> {
    const sb =
      replyMs === undefined ? await placing : await this.#placedOrPending(placing, requestId, replyMs);
    if (runningDeadline === undefined) return sb;
    if (sb.state === 'pending') throw notRunning(sb.id, 'pending', sb.reason, `after ${replyMs} ms`);
    return this.#waitRunning(sb.id, requestId, waitMs, runningDeadline);
  }

  /**
   * `placing`'s sandbox, or, once `replyMs` passed without it, the sandbox as committed when a linearizable
   * read finds it (`pending`; or placed just now, the same record `placing` would give). Not committed yet:
   * `placing` itself, however long it takes. Its later outcome is then nobody's to hear: it is swallowed.
   */
  #placedOrPending(placing: Promise<Sandbox>, requestId: string, replyMs: number): Promise<Sandbox> {
    return new Promise((resolve, reject) => {
      let settled = false;
      const settle = (f: () => void) => {
        if (settled) return;
        settled = true;
        cancel();
        f();
      };
      const once = this.#opts.every; // A one-shot: it cancels itself when it fires.
      const cancel = once(() => {
        cancel();
        void this.#committedCreate(requestId).then(
          (sb) => {
            if (sb !== undefined) settle(() => resolve(sb));
          },
          () => {}, // A read that fails leaves the answer to `placing`.
        );
      }, replyMs);
      placing.then(
        (sb) => settle(() => resolve(sb)),
        (err: unknown) => settle(() => reject(err)),
      );
    });
  }

  /** The sandbox a create request committed, read linearizably; undefined while it is not committed. */
  async #committedCreate(requestId: string): Promise<Sandbox | undefined> {
    const state = await this.#read({});
    const sandboxId = state.dedup.get(requestId)?.sandboxId;
    return sandboxId === undefined ? undefined : state.sandbox(sandboxId);
  }

  /**
   * Resolves with the sandbox once this replica's committed state says it runs; rejects with
   * SandboxNotRunningError once it failed, was lost or terminated, or `deadline` (`waitMs` from the create
   * call) passed first. The state is checked before listening, since the status entry may have been applied
   * before this call.
   */
  #waitRunning(sandboxId: string, requestId: string, waitMs: number, deadline: Deadline): Promise<Sandbox> {
    const machine = this.#home.machine;
    return new Promise((resolve, reject) => {
      let off: () => void = () => {};
      let cancel: () => void = () => {};
      const check = (): boolean => {
        const sb = machine.state.sandbox(sandboxId);
        // Absent: terminated (forgotten) once this replica has applied the create; before that (this replica
        // lags the leader that committed it, e.g. after a leadership move) it is not here yet: wait.
        if (sb === undefined && !machine.state.dedup.has(requestId) && !deadline.expired() && !this.#closed)
          return false;
        const state = sb?.state ?? 'terminated';
        if (state === 'running') resolve(sb as Sandbox);
        else if (state === 'failed' || state === 'terminated' || state === 'lost' || this.#closed)
          reject(notRunning(sandboxId, state, sb?.reason, 'before it ran'));
        else if (deadline.expired()) reject(notRunning(sandboxId, state, sb?.reason, `after ${waitMs} ms`));
        else return false;
        off();
        cancel();
        return true;
      };
      if (check()) return;
      off = this.#onSandboxApplied(sandboxId, () => {
        check();
      });
      // The periodic check is the safety net; the one-shot just past the deadline makes the refusal come on
      // time (a 1,200 ms wait checked only every 1,000 ms refused after 2,000, past a remote caller's deadline).
      const every = this.#opts.every;
      const periodic = every(check, Math.min(this.#opts.heartbeatIntervalMs, waitMs));
      const atDeadline = every(
        () => {
          if (deadline.expired()) atDeadline();
          check();
        },
        Math.max(1, deadline.remainingMs() + 1),
      );
      cancel = () => {
        periodic();
        atDeadline();
      };
    });
  }

  /** Calls `f` after each apply with an event of `sandboxId`, until the returned function is called. */
  #onSandboxApplied(sandboxId: string, f: () => void): () => void {
    this.#runningOff ??= this.#home.machine.onApply(({ events }) => {
      for (const e of events) {
        if (e.kind !== 'sandbox') continue;
        const waiting = this.#runningWaiters.get(e.sandboxId);
        // A copy: a waiter that settles removes itself while the set is walked.
        if (waiting !== undefined) for (const w of [...waiting]) w();
      }
    });
    let set = this.#runningWaiters.get(sandboxId);
    if (set === undefined) {
      set = new Set();
      this.#runningWaiters.set(sandboxId, set);
    }
    set.add(f);
    return () => {
      set.delete(f);
      if (set.size === 0 && this.#runningWaiters.get(sandboxId) === set)
        this.#runningWaiters.delete(sandboxId);
    };
  }

  /**
   * Runs `command` in a running sandbox, on the node that holds it, and resolves with its exit code and
   * output (each stream bounded by `outputBytesMax`, the run by `timeoutMs`). Not a Raft entry: a
   * linearizable read finds the sandbox and its node, then the node's worker runs it. Throws
   * ValidationError for bad arguments, UnknownSandboxError, SandboxNotRunningError, UnavailableError when
   * this scheduler has no workers to reach (or the node's worker does not answer), and the worker's own
   * errors (busy, machine gone).
   */
  async exec(sandboxId: string, command: readonly string[], options: ExecOptions = {}) {
    const request = { ...execRequestOf(command, options), requestId: this.#requestId(options) };
    const exec = this.#execSink;
    if (exec === undefined)
      throw new UnavailableError('this scheduler runs no workers and reaches none for exec');
    const id = parseSandboxId(sandboxId);
    const sb = await this.get(id);
    if (sb === undefined) throw new UnknownSandboxError(`sandbox ${id} does not exist`);
    if (sb.state !== 'running' || sb.nodeId === undefined)
      throw notRunning(id, sb.state, sb.reason, 'so exec cannot run');
    return exec(sb.nodeId, id, request);
  }

  /** The request id of a mutating call: the caller's (validated), or a fresh one. */
  #requestId(options: MutationOptions): string {
    const id = options.requestId ?? this.#newRequestId();
    return parseRequestId(id, 'requestId');
  }

  /**
   * Terminates a sandbox. Throws UnknownSandboxError, IllegalTransitionError, RequestIdConflictError (the
   * id was used for another call).
   */
  async terminate(sandboxId: string, options: MutationOptions = {}): Promise<void> {
    await this.#command({
      type: 'terminate',
      atMs: this.#opts.now(),
      requestId: this.#requestId(options),
      sandboxId: parseSandboxId(sandboxId),
    });
  }

  /** Asks a running sandbox to suspend. Throws UnknownSandboxError, IllegalTransitionError. */
  async suspend(sandboxId: string, options: MutationOptions = {}): Promise<void> {
    await this.#command({
      type: 'suspend',
      atMs: this.#opts.now(),
      requestId: this.#requestId(options),
      sandboxId: parseSandboxId(sandboxId),
    });
  }

  /**
   * Resumes a suspended sandbox: on the node holding its snapshot when that node can take it, else where
   * its policy allows (`move` places it anywhere; `wait` throws NoCapacityError and leaves it suspended;
   * `fail` fails it).
   */
  async resume(sandboxId: string, options: MutationOptions = {}): Promise<void> {
    const requestId = this.#requestId(options);
    const state = this.#home.machine.state;
    const sb = state.sandbox(parseSandboxId(sandboxId));
    if (sb === undefined) throw new UnknownSandboxError(`sandbox ${sandboxId} does not exist`);
    const tryPlace = (pin: string | undefined) => {
      const plan = planBatch(state.index, [placementRequestOf(sb.id, sb.spec, pin)]);
      return plan.placements[0];
    };
    let target = sb.snapshotNodeId === undefined ? undefined : tryPlace(sb.snapshotNodeId);
    if (target === undefined && sb.spec.resumePolicy === 'move') target = tryPlace(undefined);
    await this.#command({
      type: 'resume',
      atMs: this.#opts.now(),
      requestId,
      sandboxId: sb.id,
      ...(target === undefined
        ? {}
        : { nodeId: target.nodeId, gpuDevices: target.gpuDevices.map((g) => ({ ...g })) }),
    });
  }

  /** Registers a node. Throws ValidationError, DuplicateNodeError. */
  async registerNode(spec: NodeSpec, options: MutationOptions = {}): Promise<void> {
    const checked = parseWith(nodeSpecSchema, spec, 'node');
    refuseUnsafeText(checked, 'node');
    const requestId = this.#requestId(options);
    await this.#command({ type: 'node.register', atMs: this.#opts.now(), requestId, spec: checked });
  }

  /**
   * Sets a node's state: `draining` and `cordoned` stop new placements, `down` loses its sandboxes. Setting a
   * down node `ready` gives none of them back; a returning node calls `reconcileNode` instead.
   */
  async setNodeState(nodeId: string, state: NodeSpec['state'], options: MutationOptions = {}): Promise<void> {
    const requestId = this.#requestId(options);
    await this.#command({ type: 'node.state', atMs: this.#opts.now(), requestId, nodeId, state });
  }

  /**
   * Reconciles a node that comes back (after being marked down, or after its agent restarted) against
   * `running`, its own report of every sandbox it holds and in which state. Resolves once committed with
   * what changed:
   * - `restored`: sandboxes lost from this node that it still holds, back in the reported state with their
   *   allocation (only while they fit: the node is never over-committed);
   * - `lost`: sandboxes the scheduler placed on the node that it did not report (stateless ones are then
   *   placed again elsewhere);
   * - `failed`: stateful lost sandboxes that no longer fit on the node, whose copy it must stop;
   * - `orphans`: sandboxes the node must stop, each with why (unknown, finished, living elsewhere, or no
   *   room left for it); the scheduler's state of them is unchanged.
   * A `down` node becomes `ready`; a draining or cordoned one keeps its state. Every change is also a
   * committed event on `watch()` (orphans as `kind: 'orphan'`).
   *
   * Throws ValidationError (its `path` names the field) for a bad node id, a bad or repeated sandbox id,
   * a state a node cannot hold a sandbox in, or more than `reconcileReportMax` entries; UnknownNodeError
   * for a node that is not registered. Either way nothing changes. A call retried with the same request id
   * (the scheduler's own retries after a leader change do) gets the first commit's answer.
   */
  async reconcileNode(
    nodeId: string,
    running: readonly ReconcileEntry[],
    options: MutationOptions = {},
  ): Promise<ReconcileResult> {
    const cmd: Command = {
      type: 'node.reconcile',
      atMs: this.#opts.now(),
      requestId: this.#requestId(options),
      nodeId: parseWith(idSchema, nodeId, 'nodeId'),
      running: parseWith(reconcileReportSchema, running, 'running'),
    };
    const result = await this.#command(cmd);
    assert(result.ok && result.reconciled !== undefined, 'a committed reconcile has its result', { nodeId });
    return result.reconciled;
  }

  /** Removes an empty node. Throws UnknownNodeError, NodeBusyError. */
  async removeNode(nodeId: string, options: MutationOptions = {}): Promise<void> {
    const requestId = this.#requestId(options);
    await this.#command({ type: 'node.remove', atMs: this.#opts.now(), requestId, nodeId });
  }

  /** Records heartbeats from nodes; the leader commits them once per interval. */
  heartbeat(nodeIds: readonly string[]): void {
    if (this.#closed) return;
    const home = this.#home;
    const entry = home.log.leaderId() === undefined ? this.#entry(1) : home;
    entry.heartbeat(nodeIds);
  }

  /**
   * Reports sandbox states observed on nodes (starting, running, suspended, terminated, failed). Reports
   * of calls made in the same turn of the event loop (many workers reporting at once) are merged into one
   * `status` entry: status is idempotent, so a merged entry applies each report as its own would. Throws
   * ValidationError for a malformed item (nothing of that call is sent).
   */
  async reportStatus(items: readonly StatusItem[]): Promise<void> {
    const checked = parseWith(z.array(statusItemSchema).max(commandItemsMax), items, 'items');
    if (checked.length === 0) return;
    let q = this.#statusQueue;
    if (q === undefined || q.items.length + checked.length > commandItemsMax) {
      const fresh: StatusQueue = { items: [], waiters: [] };
      this.#statusQueue = fresh;
      setImmediate(() => void this.#flushStatus(fresh));
      q = fresh;
    }
    q.items.push(...checked);
    return new Promise((resolve, reject) => q.waiters.push({ resolve, reject }));
  }

  async #flushStatus(q: StatusQueue): Promise<void> {
    if (this.#statusQueue === q) this.#statusQueue = undefined;
    try {
      await this.#command({ type: 'status', atMs: this.#opts.now(), items: q.items });
      for (const w of q.waiters) w.resolve();
    } catch (err) {
      for (const w of q.waiters) w.reject(err);
    }
  }

  /** Sets a tenant's quota. */
  async setQuota(tenant: string, quota: Quota, options: MutationOptions = {}): Promise<void> {
    await this.#command({
      type: 'quota.set',
      atMs: this.#opts.now(),
      requestId: this.#requestId(options),
      tenant,
      quota: parseWith(quotaSchema, quota, 'quota'),
    });
  }

  /**
   * The state a read sees. Linearizable by default: a ReadIndex through the leader, then the applied state
   * of the replica that served it, once it has applied the read index. `stale` reads the attached
   * replica's state at once.
   */
  async #read(options: ReadOptions) {
    if (options.stale === true) return this.#home.machine.state;
    return this.#onLeader(async (r, deadline) => {
      await r.readBarrier(deadline);
      return r.machine.state;
    });
  }

  async get(sandboxId: string, options: ReadOptions = {}): Promise<Sandbox | undefined> {
    return (await this.#read(options)).sandbox(sandboxId);
  }

  async list(filter: ListFilter = {}, options: ReadOptions = {}): Promise<Sandbox[]> {
    const state = await this.#read(options);
    const ids =
      filter.nodeId !== undefined
        ? state.sandboxesOfNode(filter.nodeId)
        : filter.tenant !== undefined
          ? state.sandboxesOfTenant(filter.tenant)
          : undefined;
    const all =
      ids === undefined ? [...state.sandboxes.values()] : [...ids].map((id) => state.sandbox(id) as Sandbox);
    return all
      .filter(
        (s) =>
          (filter.tenant === undefined || s.tenant === filter.tenant) &&
          (filter.state === undefined || s.state === filter.state),
      )
      .sort((a, b) => (a.id < b.id ? -1 : 1));
  }

  async nodes(options: ReadOptions = {}): Promise<NodeView[]> {
    const state = await this.#read(options);
    return [...state.nodes.keys()].sort().map((id) => state.index.get(id) as NodeView);
  }

  /**
   * Committed events from now on, in log order. Ends with WatchOverflowError if the reader falls too far
   * behind, and ends (after the events already buffered) when the scheduler closes.
   */
  /**
   * Committed events in log order: from `fromIndex` (replayed from what this scheduler has held since it
   * started, the last `watchHistoryMax` events or more; else the first `next()` throws WatchGapError), or
   * from now.
   */
  watch(options: WatchOptions = {}): AsyncIterableIterator<SchedulerEvent> {
    const from = options.fromIndex;
    if (from !== undefined && !(Number.isInteger(from) && from >= 0))
      throw new ValidationError('fromIndex', `must be an integer >= 0, got ${String(from)}`);
    const gap =
      from !== undefined && from < this.#historyFrom
        ? new WatchGapError(
            `events from index ${from} are not held here (held from ${this.#historyFrom}); re-read state and watch from now`,
          )
        : undefined;
    const buffer: SchedulerEvent[] =
      from === undefined || gap !== undefined ? [] : this.#history.filter((e) => e.index >= from);
    let wake: (() => void) | undefined;
    let overflow = false;
    let done = false;
    let closing = this.#closed;
    const onClose = (): void => {
      closing = true;
      off();
      wake?.();
    };
    // A replica restarted from its storage replays entries it had applied; the watch skips them by index.
    let seen = this.#home.machine.state.applied;
    const off = this.#home.machine.onApply(({ events }, entry) => {
      if (entry.index <= seen) return;
      seen = entry.index;
      if (from !== undefined && entry.index < from) return;
      if (buffer.length + events.length > watchBufferMax) overflow = true;
      else buffer.push(...events);
      wake?.();
    });
    const iterator: AsyncIterableIterator<SchedulerEvent> = {
      [Symbol.asyncIterator]: () => iterator,
      next: async () => {
        if (gap !== undefined && !done) {
          done = true;
          off();
          this.#watchers.delete(onClose);
          throw gap;
        }
        for (;;) {
          if (done) return { done: true, value: undefined };
          const e = buffer.shift();
          if (e !== undefined) return { done: false, value: e };
          if (overflow) {
            off();
            this.#watchers.delete(onClose);
            throw new WatchOverflowError(`a watch() reader fell more than ${watchBufferMax} events behind`);
          }
          if (closing) {
            done = true;
            this.#watchers.delete(onClose);
            return { done: true, value: undefined };
          }
          await new Promise<void>((r) => {
            wake = r;
          });
          wake = undefined;
        }
      },
      return: async () => {
        done = true;
        off();
        this.#watchers.delete(onClose);
        wake?.();
        return { done: true, value: undefined };
      },
    };
    if (closing) off();
    else this.#watchers.add(onClose);
    return iterator;
  }

  stats(): SchedulerStats {
    const state = this.#home.machine.state;
    const all = this.replicas.map((r) => r.stats());
    const sum = (
      k: 'batches' | 'batchedRequests' | 'batchLatencyMsTotal' | 'placed' | 'rejected' | 'replans',
    ) => all.reduce((acc, s) => acc + s[k], 0);
    const batches = sum('batches');
    const reasons = new Map<string, number>();
    for (const s of all) for (const [k, v] of s.rejectReasons) reasons.set(k, (reasons.get(k) ?? 0) + v);
    return {
      leader: this.log.leader(),
      applied: state.applied,
      nodes: state.nodes.size,
      sandboxes: state.sandboxes.size,
      pending: all.reduce((acc, s) => acc + s.pending, 0),
      batches,
      meanBatch: batches === 0 ? 0 : sum('batchedRequests') / batches,
      meanBatchLatencyMs: batches === 0 ? 0 : sum('batchLatencyMsTotal') / batches,
      placed: sum('placed'),
      rejected: sum('rejected'),
      replans: sum('replans'),
      rejectReasons: Object.fromEntries(reasons),
    };
  }

  /** Stops the replicas' pipelines (calls in progress reject); a group the scheduler created is closed too. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#historyOff?.();
    this.#runningOff?.();
    this.#history = [];
    for (const end of [...this.#watchers]) end();
    this.#watchers.clear();
    for (const r of this.replicas) r.stop();
    if (this.#ownsLog && this.log instanceof RaftGroupLog) await this.log.close();
  }
}

function notRunning(sandboxId: string, state: string, reason: string | undefined, when: string) {
  const why = reason === undefined ? '' : ` (${reason})`;
  return new SandboxNotRunningError(`sandbox ${sandboxId} is ${state}${why}, not running, ${when}`, {
    details: { sandboxId, state, ...(reason === undefined ? {} : { reason }) },
  });
}

/** Checks an exec's arguments against the scheduler's bounds (ValidationError naming the field). */
function execRequestOf(command: readonly string[], o: ExecOptions): NodeExecRequest {
  const argsMax = 256;
  if (!Array.isArray(command) || command.length < 1 || command.length > argsMax)
    throw new ValidationError('command', `must be 1..${argsMax} arguments`);
  command.forEach((a, i) => {
    if (typeof a !== 'string') throw new ValidationError(`command.${i}`, 'must be a string');
  });
  if (command[0] === '') throw new ValidationError('command.0', 'the program name is empty');
  const int = (path: string, v: number | undefined, dflt: number, lo: number, hi: number): number => {
    if (v === undefined) return dflt;
    if (!(Number.isInteger(v) && v >= lo && v <= hi))
      throw new ValidationError(path, `must be an integer of ${lo}..${hi}, got ${String(v)}`);
    return v;
  };
  const stdin = o.stdinBytes;
  if (stdin !== undefined && !(stdin instanceof Uint8Array))
    throw new ValidationError('stdinBytes', 'must be a Uint8Array');
  if (stdin !== undefined && stdin.byteLength > execStdinBytesMax)
    throw new ValidationError('stdinBytes', `${stdin.byteLength} bytes exceed ${execStdinBytesMax}`);
  return {
    command: [...command],
    timeoutMs: int('timeoutMs', o.timeoutMs, execTimeoutMsDefault, 1, execTimeoutMsMax),
    outputBytesMax: int('outputBytesMax', o.outputBytesMax, execOutputBytesDefault, 0, execOutputBytesMax),
    ...(stdin === undefined ? {} : { stdin }),
  };
}

/** Creates a scheduler; with no `log`, on an in-process cluster of 3 replicas. */
export function createScheduler(config: SchedulerConfig = {}): Scheduler {
  return new Scheduler(config);
}
