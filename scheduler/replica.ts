/**
 * SchedulerReplica: the unit the scheduler is made of. One replica log (a `RaftNode` in production), one
 * state machine, and — while this replica leads — the leader pipeline. It talks to its peers only through
 * its log's transport and, for callers attached to it, through an injected forwarder: a mutating request
 * made here while another replica leads is encoded (forward.ts) and handed to the leader, with its
 * deadline; the leader drops it if it arrives late. Linearizable reads take a ReadIndex through the leader
 * (the follower asks the leader for its confirmed index, as etcd's MsgReadIndex, then waits to apply it)
 * and then read this replica's own state.
 *
 * Embedded, N replicas share a process (`Scheduler` on a `ReplicaGroup`) and the forwarder calls the other
 * replica's `handle`. As a server, one replica runs on the NATS transport (`SchedulerReplica.onRaft`) and
 * the API adapter sends the same bytes to the leader's subject and serves `handle` on its own.
 */
import type { Message } from '../raft/core/messages.js';
import { RaftNode, type RaftNodeOptions } from '../raft/node.js';
import type { Storage } from '../raft/storage/storage.js';
import type { Transport } from '../raft/transport.js';
import { assert } from '../src/lib/assert.js';
import { Deadline } from '../src/lib/deadline.js';
import { TrellisError } from '../src/lib/errors.js';
import type { TrellisMetrics } from '../src/lib/metrics.js';
import { createRng, type Rng } from '../src/lib/prng.js';
import { realTimers, type Timers } from '../src/lib/timers.js';
import { commandCodec, type SandboxSpec } from './commands.js';
import { Dispatcher, type DispatcherOptions } from './dispatch.js';
import { NotLeaderError } from './errors.js';
import {
  errorReply,
  type Forwarder,
  type ForwardReply,
  type ForwardRequest,
  forwardReplyCodec,
  forwardRequestCodec,
  replyValue,
} from './forward.js';
import type { ReplicaLog } from './log.js';
import {
  defaultPipelineOptions,
  LeaderPipeline,
  type PipelineOptions,
  type PipelineStats,
} from './pipeline/leader.js';
import type { CommandResult } from './state.js';
import { type EntryDecoder, SchedulerStateMachine } from './state-machine.js';
import type { Sandbox } from './types.js';

/** A forwarded request before its deadline is put on the wire. */
type Outbound = ForwardRequest extends infer R
  ? R extends ForwardRequest
    ? Omit<R, 'deadline'>
    : never
  : never;

export interface SchedulerReplicaOptions {
  readonly pipeline: PipelineOptions;
  /** How requests reach the leader when this replica does not lead. Without one they fail NotLeaderError. */
  readonly forwarder?: Forwarder;
  /**
   * Sends committed placements (and terminate, suspend, resume) to node workers while this replica leads
   * (dispatch.ts). Without one nothing is sent: the placements wait for whatever drives the nodes.
   */
  readonly dispatch?: ReplicaDispatchOptions;
}

/** The dispatcher's options as a replica takes them: timers default to real time, jitter seeded per term. */
export type ReplicaDispatchOptions = Omit<DispatcherOptions, 'timers' | 'rng' | 'propose'> & {
  readonly timers?: Timers;
};

/** Counters of this replica's pipelines, past and present, for `stats()`. */
export interface ReplicaStats {
  readonly batches: number;
  readonly batchedRequests: number;
  readonly batchLatencyMsTotal: number;
  readonly placed: number;
  readonly rejected: number;
  readonly replans: number;
  readonly rejectReasons: ReadonlyMap<string, number>;
  /** Creates waiting for room in the current pipeline (0 when not leading). */
  readonly pending: number;
}

export class SchedulerReplica {
  readonly log: ReplicaLog;
  readonly #opts: PipelineOptions;
  readonly #forward: Forwarder | undefined;
  #pipeline: LeaderPipeline | undefined;
  readonly #dispatchOpts: ReplicaDispatchOptions | undefined;
  #dispatcher: Dispatcher | undefined;
  #pipelineTerm: number | undefined;
  #closed = false;
  readonly #unsubscribe: () => void;
  /** The ReadIndex round in flight on this replica's log (settled: undefined). */
  #readRound: Promise<void> | undefined;
  /** The round every read arriving while one is in flight shares; it starts when that one settles. */
  #readNext: Promise<void> | undefined;
  /** Counters of pipelines that have stopped, so stats survive leader changes. */
  readonly #past = {
    batches: 0,
    batchedRequests: 0,
    batchLatencyMsTotal: 0,
    placed: 0,
    rejected: 0,
    replans: 0,
    rejectReasons: new Map<string, number>(),
  };

  constructor(log: ReplicaLog, options: SchedulerReplicaOptions) {
    this.log = log;
    this.#opts = options.pipeline;
    this.#forward = options.forwarder;
    this.#dispatchOpts = options.dispatch;
    this.#syncPipeline();
    this.#unsubscribe = log.onLeaderChange(() => this.#syncPipeline());
  }

  get id(): string {
    return this.log.id;
  }
  get machine(): SchedulerStateMachine {
    return this.log.machine;
  }
  /** True while this replica leads and runs the pipeline. */
  get leading(): boolean {
    return this.#pipeline !== undefined;
  }

  /** A pipeline per leadership term: started when this replica leads, stopped when it no longer does. */
  #syncPipeline(): void {
    // A remote replica's pipeline runs where it lives; here it is only a way to reach it.
    const term = this.#closed || this.log.remote !== undefined ? undefined : this.log.leaderTerm();
    if (term === this.#pipelineTerm && (term === undefined) === (this.#pipeline === undefined)) return;
    this.#stopPipeline();
    this.#pipelineTerm = term;
    if (term === undefined) return;
    const pipeline = new LeaderPipeline(this.log, this.#opts);
    this.#pipeline = pipeline;
    const d = this.#dispatchOpts;
    if (d !== undefined) {
      this.#dispatcher = new Dispatcher(this.log.machine, {
        ...d,
        timers: d.timers ?? realTimers,
        rng: createRng((seedOf(this.id) ^ term) >>> 0),
        // Sandboxes whose command a worker keeps refusing go failed through this term's log.
        propose: (cmd) => pipeline.propose(commandCodec.encode(cmd)),
      });
    }
  }

  /** The dispatcher of this term while this replica leads with one (tests, stats). */
  get dispatcher(): Dispatcher | undefined {
    return this.#dispatcher;
  }

  #stopPipeline(): void {
    this.#dispatcher?.stop();
    this.#dispatcher = undefined;
    const old = this.#pipeline;
    if (old === undefined) return;
    const s = old.stats;
    this.#past.batches += s.batches;
    this.#past.batchedRequests += s.batchedRequests;
    this.#past.batchLatencyMsTotal += s.batchLatencyMsTotal;
    this.#past.placed += s.placed;
    this.#past.rejected += s.rejected;
    this.#past.replans += s.replans;
    for (const [k, v] of s.rejectReasons)
      this.#past.rejectReasons.set(k, (this.#past.rejectReasons.get(k) ?? 0) + v);
    old.stop();
    this.#pipeline = undefined;
  }

  stats(): ReplicaStats {
    const s: PipelineStats | undefined = this.#pipeline?.stats;
    const reasons = new Map(this.#past.rejectReasons);
    for (const [k, v] of s?.rejectReasons ?? []) reasons.set(k, (reasons.get(k) ?? 0) + v);
    return {
      batches: this.#past.batches + (s?.batches ?? 0),
      batchedRequests: this.#past.batchedRequests + (s?.batchedRequests ?? 0),
      batchLatencyMsTotal: this.#past.batchLatencyMsTotal + (s?.batchLatencyMsTotal ?? 0),
      placed: this.#past.placed + (s?.placed ?? 0),
      rejected: this.#past.rejected + (s?.rejected ?? 0),
      replans: this.#past.replans + (s?.replans ?? 0),
      rejectReasons: reasons,
      pending: this.#pipeline?.pendingCount ?? 0,
    };
  }

  /**
   * Creates a sandbox: on this replica's pipeline when it leads, else through the leader. Resolves with the
   * committed sandbox; NotLeaderError when there is no leader to take it (retry with the same id).
   */
  /**
   * On the leader, the pipeline's own promise (no async frame per create: 100,000 may be in flight). Always
   * a promise: what admission throws (conflict, overload) is a rejection, as from an async function.
   */
  create(requestId: string, spec: SandboxSpec, deadline: Deadline): Promise<Sandbox> {
    const p = this.#pipeline;
    if (p === undefined) return this.#createForwarded(requestId, spec, deadline);
    try {
      return p.create(requestId, spec);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  async #createForwarded(requestId: string, spec: SandboxSpec, deadline: Deadline): Promise<Sandbox> {
    const value = await this.#toLeader(deadline, { op: 'create', requestId, spec });
    return sandboxOf(value);
  }

  /** Proposes an encoded command (commands.ts) through the leader and resolves with its apply result. */
  async command(data: Uint8Array, deadline: Deadline): Promise<CommandResult> {
    const p = this.#pipeline;
    if (p !== undefined) return p.propose(data);
    return commandResultOf(await this.#toLeader(deadline, { op: 'command', data }));
  }

  /**
   * A linearizable read barrier: resolves once this replica has applied everything committed when it was
   * called, so its state may then be read. On the leader a ReadIndex round; on a follower the leader's
   * confirmed index (forwarded), then a wait for this replica to apply up to it, bounded by `deadline`.
   */
  async readBarrier(deadline: Deadline): Promise<void> {
    if (this.#pipeline !== undefined) return this.#sharedReadIndex();
    // A remote replica's state is not here to read: the scheduler reads through a replica of its own.
    if (this.log.remote !== undefined)
      throw new NotLeaderError(`replica ${this.id} runs elsewhere: its state is not read here`);
    const index = indexOf(await this.#toLeader(deadline, { op: 'readIndex' }));
    await this.#appliedUpTo(index, deadline);
  }

  /** Records node heartbeats on the leader (they are committed once per interval); best effort. */
  heartbeat(nodeIds: readonly string[]): void {
    const p = this.#pipeline;
    if (p !== undefined) {
      for (const id of nodeIds) p.heartbeat(id);
      return;
    }
    const deadline = Deadline.after(this.#opts.heartbeatIntervalMs, this.#opts.now);
    this.#toLeader(deadline, { op: 'heartbeat', nodeIds: [...nodeIds] }).catch(() => {});
  }

  /**
   * Serves a request forwarded by another replica. Answers only from here (never forwards again, so a
   * stale leader hint cannot make a loop): NotLeaderError when this replica does not lead. A request past
   * its deadline is dropped unproposed with DeadlineExceededError. Never throws: every failure, bad bytes
   * included, is an error reply.
   */
  async handle(request: Uint8Array): Promise<Uint8Array> {
    const remote = this.log.remote;
    if (remote !== undefined) return remote.handle(request);
    let reply: ForwardReply;
    try {
      reply = { ok: true, value: await this.#serve(forwardRequestCodec.decode(request)) };
    } catch (err) {
      reply = errorReply(
        err instanceof TrellisError ? err : new NotLeaderError(`replica ${this.id}: ${String(err)}`),
      );
    }
    return forwardReplyCodec.encode(reply);
  }

  async #serve(req: ForwardRequest): Promise<unknown> {
    // Checked at the door and nothing awaits before the pipeline takes it: a request that sat in a stalled
    // replica's buffer is dropped here instead of proposed after its caller has given up.
    Deadline.received(req.deadline, this.#opts.now).check(`request forwarded to replica ${this.id}`);
    const p = this.#pipeline;
    if (p === undefined) throw new NotLeaderError(`replica ${this.id} does not lead`, leaderHint(this.log));
    switch (req.op) {
      case 'create':
        return p.create(req.requestId, req.spec);
      case 'command':
        return p.propose(req.data);
      case 'readIndex':
        await this.#sharedReadIndex();
        // Everything committed when the read was asked is applied here now: our applied index covers it.
        return this.log.machine.state.applied;
      case 'heartbeat':
        for (const id of req.nodeIds) p.heartbeat(id);
        return null;
    }
  }

  /**
   * A ReadIndex round shared by every read that arrives before it starts. Each round is a heartbeat to every
   * follower: one per read cost two NATS messages a read (every exec reads) on a loaded leader. A read that
   * arrives while a round is in flight must not join it (that round's leadership check may predate the
   * read), so it joins the next round, which starts when the one in flight settles: at most two rounds a
   * replica at any time, each still started after each of its readers arrived — linearizable as before.
   */
  #sharedReadIndex(): Promise<void> {
    if (this.#readNext !== undefined) return this.#readNext;
    if (this.#readRound === undefined) return this.#startReadRound();
    const next = this.#readRound.then(() => {
      this.#readNext = undefined;
      return this.#startReadRound();
    });
    this.#readNext = next;
    return next;
  }

  #startReadRound(): Promise<void> {
    const round = this.log.readIndex();
    const settled = round.then(
      () => undefined,
      () => undefined,
    );
    this.#readRound = settled;
    void settled.then(() => {
      if (this.#readRound === settled) this.#readRound = undefined;
    });
    return round;
  }

  /** Sends a request to the leader this replica knows of; NotLeaderError when there is none to send to. */
  async #toLeader(deadline: Deadline, req: Outbound): Promise<unknown> {
    if (this.#closed) throw new NotLeaderError(`replica ${this.id} is closed`);
    deadline.check(`request on replica ${this.id}, before forwarding`);
    const leader = this.log.leaderId();
    // A remote replica forwards to itself: this object is only the way to reach it.
    const self = leader === this.id && this.log.remote === undefined;
    if (leader === undefined || self || this.#forward === undefined)
      throw new NotLeaderError(`replica ${this.id} knows no leader to forward to`);
    const wire = { ...req, deadline: deadline.toWire() } as ForwardRequest;
    const bytes = await this.#forward(leader, forwardRequestCodec.encode(wire));
    return replyValue(forwardReplyCodec.decode(bytes));
  }

  /** Resolves once this replica has applied `index`; NotLeaderError once `deadline` passes first. */
  #appliedUpTo(index: number, deadline: Deadline): Promise<void> {
    const machine = this.log.machine;
    if (machine.state.applied >= index) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const done = (): void => {
        off();
        cancel();
      };
      const off = machine.onApply(() => {
        if (machine.state.applied < index) return;
        done();
        resolve();
      });
      const onTick = this.#opts.every;
      const cancel = onTick(() => {
        if (machine.state.applied >= index) {
          done();
          resolve();
        } else if (this.#closed || deadline.expired()) {
          done();
          reject(new NotLeaderError(`replica ${this.id} did not apply index ${index} before the deadline`));
        }
      }, this.#opts.heartbeatIntervalMs);
    });
  }

  /** Stops the pipeline; calls in progress reject with NotLeaderError. The log is its owner's to close. */
  stop(): void {
    this.#closed = true;
    this.#unsubscribe();
    this.#stopPipeline();
  }

  /**
   * One replica on Raft: a `RaftNode` on `transport` and `storage` with a fresh state machine. This is
   * what `trellis server --state scheduler` runs; `close()` stops the pipeline and the node.
   */
  static onRaft(options: RaftReplicaOptions): {
    replica: SchedulerReplica;
    node: RaftNode<CommandResult>;
    close(): Promise<void>;
  } {
    const log = new RaftReplicaLog(options);
    const timers = options.timers ?? realTimers;
    const replica = new SchedulerReplica(log, {
      // The pipeline runs on the same clock and timers as the Raft node.
      pipeline: {
        ...defaultPipelineOptions,
        ...options.pipeline,
        now: () => timers.now(),
        every: (fn, ms) => timers.setInterval(fn, ms),
      },
      ...(options.forwarder === undefined ? {} : { forwarder: options.forwarder }),
    });
    return {
      replica,
      node: log.node,
      close: async () => {
        replica.stop();
        await log.close();
      },
    };
  }
}

export interface RaftReplicaOptions {
  readonly id: string;
  readonly voters: readonly string[];
  readonly storage: Storage;
  readonly transport: Transport<Message>;
  readonly pipeline?: Partial<Omit<PipelineOptions, 'now' | 'every'>>;
  readonly forwarder?: Forwarder;
  /** Clock and timers of the Raft node and the pipeline. Default real time; simulations pass virtual. */
  readonly timers?: Timers;
  /** Seeded source for the election timers. Default: seeded from the id. */
  readonly rng?: Rng;
  readonly tickMs?: number;
  readonly snapshotEntries?: number;
  /**
   * Raft core settings (e.g. `msgBytesMax`: a transport with a message size limit must keep appends under it,
   * or a follower that fell behind is sent catch-up appends too large to deliver, forever).
   */
  readonly core?: RaftNodeOptions<CommandResult>['core'];
  /** Decodes committed entries; replicas sharing a process pass one shared decoder. */
  readonly decode?: EntryDecoder;
  /** Where the Raft node records its metrics (term, leader, commit, latencies). Default: nothing. */
  readonly metrics?: TrellisMetrics;
  /** The state machine to apply into (kept across an in-process restart so its listeners stay). */
  readonly machine?: SchedulerStateMachine;
}

function seedOf(id: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < id.length; i++) h = Math.imul(h ^ id.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

/** Every Raft failure of a proposal or read leaves its outcome unknown to the caller: retry at the leader. */
export function toSchedulerError(err: unknown): unknown {
  if (err instanceof TrellisError && err.code.startsWith('RAFT_')) return new NotLeaderError(err.message);
  return err;
}

/** One replica's log on a `RaftNode`. */
export class RaftReplicaLog implements ReplicaLog {
  readonly id: string;
  readonly machine: SchedulerStateMachine;
  readonly node: RaftNode<CommandResult>;
  readonly #listeners = new Set<() => void>();
  #closed = false;

  constructor(options: Omit<RaftReplicaOptions, 'pipeline' | 'forwarder'>) {
    this.id = options.id;
    this.machine = options.machine ?? new SchedulerStateMachine(options.decode);
    this.node = new RaftNode<CommandResult>({
      id: options.id,
      voters: options.voters,
      storage: options.storage,
      transport: options.transport,
      stateMachine: this.machine,
      rng: options.rng ?? createRng(seedOf(options.id)),
      ...(options.tickMs === undefined ? {} : { tickMs: options.tickMs }),
      ...(options.snapshotEntries === undefined ? {} : { snapshotEntries: options.snapshotEntries }),
      ...(options.core === undefined ? {} : { core: options.core }),
      ...(options.timers === undefined ? {} : { timers: options.timers }),
      ...(options.metrics === undefined ? {} : { metrics: options.metrics }),
    });
    this.node.onRoleChange(() => this.#changed());
  }

  leaderId(): string | undefined {
    if (this.#closed) return undefined;
    const leader = this.node.status().leader;
    return leader === '' ? undefined : leader;
  }

  leaderTerm(): number | undefined {
    if (this.#closed) return undefined;
    const st = this.node.status();
    return st.role === 'leader' ? st.term : undefined;
  }

  async propose(data: Uint8Array): Promise<CommandResult> {
    if (this.#closed) throw new NotLeaderError(`replica ${this.id} is stopped`);
    try {
      return await this.node.propose(data);
    } catch (err) {
      throw toSchedulerError(err);
    }
  }

  async readIndex(): Promise<void> {
    if (this.#closed) throw new NotLeaderError(`replica ${this.id} is stopped`);
    try {
      await this.node.read();
    } catch (err) {
      throw toSchedulerError(err);
    }
  }

  onLeaderChange(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  #changed(): void {
    for (const l of [...this.#listeners]) l();
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#changed();
    await this.node.close();
  }
}

function leaderHint(log: ReplicaLog): { details: { leader: string } } | undefined {
  const leader = log.leaderId();
  return leader === undefined ? undefined : { details: { leader } };
}

function sandboxOf(value: unknown): Sandbox {
  assert(
    typeof value === 'object' && value !== null && typeof (value as Sandbox).id === 'string',
    'a forwarded create replies with a sandbox',
    { value },
  );
  return Object.freeze(value as Sandbox);
}

function commandResultOf(value: unknown): CommandResult {
  assert(
    typeof value === 'object' && value !== null && typeof (value as CommandResult).ok === 'boolean',
    'a forwarded command replies with its result',
    { value },
  );
  return value as CommandResult;
}

function indexOf(value: unknown): number {
  assert(Number.isInteger(value) && (value as number) >= 0, 'a forwarded ReadIndex replies with an index', {
    value,
  });
  return value as number;
}
