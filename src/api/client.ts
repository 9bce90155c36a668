/**
 * The remote client: `connect({ servers, cluster, credentials })` returns a `RemoteScheduler`, which
 * implements `SchedulerApi` over NATS, so code written against `createScheduler()` runs against a cluster.
 *
 * Each call has a deadline (`timeoutMs`, default 10 s). Within it the client
 * - sends to the leader's own subject once it knows the leader (every reply names it), else to the queue
 *   group, where any replica takes the request and a follower forwards it;
 * - retries with the same request id after a timeout, a lost connection or a NotLeaderError, so a mutation
 *   is applied at most once however often it is sent;
 * - gives up at the deadline with OutcomeUnknownError (a mutation that may have been applied: retry it with
 *   `details.requestId`) or UnavailableError (nothing was delivered, or a read).
 * A typed error from the scheduler (ValidationError, UnknownSandboxError, ...) is a definite outcome and is
 * thrown at once, as the same class an embedded caller catches.
 */
import { randomUUID } from 'node:crypto';
import {
  ErrorCode,
  type NatsConnection,
  type ConnectionOptions as NatsConnectionOptions,
  NatsError,
  connect as natsConnect,
  type Subscription,
} from 'nats';
import type { z } from 'zod';
import type { NodeSpec, NodeView } from '../../placement/index.js';
import type { MutationOptions, SchedulerApi, StatusItem, WatchOptions } from '../../scheduler/api.js';
import type { Quota, ReconcileEntry, SandboxSpec } from '../../scheduler/commands.js';
import type { NodeExecResult } from '../../scheduler/dispatch.js';
import { WatchOverflowError } from '../../scheduler/errors.js';
import {
  type CreateOptions,
  type ExecOptions,
  execTimeoutMsDefault,
  type ListFilter,
  type ReadOptions,
  runningWaitMsDefault,
  runningWaitMsMax,
  type SchedulerStats,
} from '../../scheduler/scheduler.js';
import type { ReconcileResult } from '../../scheduler/state.js';
import type { Sandbox, SchedulerEvent } from '../../scheduler/types.js';
import { Deadline } from '../lib/deadline.js';
import {
  CodecError,
  ConfigError,
  OutcomeUnknownError,
  TrellisError,
  UnavailableError,
  ValidationError,
} from '../lib/errors.js';
import { clusterId, nodeId } from '../lib/ids.js';
import { fromWire } from './errors.js';
import { callTimeoutMsDefault } from './limits.js';
import type { Members } from './membership.js';
import {
  advance,
  apiNodeSubject,
  apiReplicaSubject,
  apiSubject,
  type Call,
  type Cursor,
  compareCursor,
  type EventsFrame,
  eventsFrameCodec,
  eventsPerFrameMax,
  eventsResultSchema,
  execResultSchema,
  membersSchema,
  nodeViewSchema,
  pageSchema,
  pageSizeMax,
  positionOf,
  type ReplicaStatus,
  reconcileResultSchema,
  replyCodec,
  requestCodec,
  requestTimeoutMsMax,
  sandboxSchema,
  statsSchema,
  statusSchema,
  voidResultSchema,
  watchSubject,
} from './protocol.js';

export { callTimeoutMsDefault };
/** Default wait for one attempt's reply before the call retries. */
export const attemptTimeoutMsDefault = 2_000;
/** Longest pause between two attempts. */
export const retryBackoffMsMax = 500;
/**
 * A retry is not started with less time than this left before the deadline: it would more likely time out
 * than be answered, and a timed-out mutation is an unknown outcome, where a clean "no replica answered" (every
 * attempt refused by NATS as having no responders) would have been the truth.
 */
export const retryRemainingMsMin = 50;
/** Frames a watch buffers for a slow reader before it ends with WatchOverflowError. */
export const watchFramesMax = 10_000;

export type Credentials = { readonly user: string; readonly pass: string } | { readonly token: string };

export interface ConnectOptions {
  /** nats-server URLs (any member of a NATS cluster). */
  readonly servers: string | readonly string[];
  /** The cluster id: subjects are `trellis.<cluster>.*`. */
  readonly cluster: string;
  readonly credentials?: Credentials;
  /** Deadline of each call, retries included. Default 10,000 ms. */
  readonly timeoutMs?: number;
  /** Wait for one attempt's reply. Default 2,000 ms. */
  readonly attemptTimeoutMs?: number;
  /** Use this connection instead of opening one (it is left open by `close()`). */
  readonly connection?: NatsConnection;
  /** Client name shown by nats-server. */
  readonly name?: string;
  /** Clock for deadlines. Default Date.now. */
  readonly now?: () => number;
  /**
   * Speak as node worker `node`: every call goes to the node's own API subject
   * (`trellis.<cluster>.api.node.<node>`), the only one its NATS user may publish to, where the replicas
   * take just the node-side calls about that node. Default: the client subjects.
   */
  readonly node?: string;
}

const leaderHintPattern = /^[A-Za-z0-9_-]{1,64}$/;
const requestIdPattern = /^[A-Za-z0-9_-]{1,128}$/;

/** Connects to a cluster; throws UnavailableError when no server answers, ConfigError on bad options. */
export async function connect(options: ConnectOptions): Promise<RemoteScheduler> {
  const cluster = clusterId(options.cluster, 'cluster');
  for (const [k, v] of [
    ['timeoutMs', options.timeoutMs],
    ['attemptTimeoutMs', options.attemptTimeoutMs],
  ] as const) {
    if (v !== undefined && !(Number.isInteger(v) && v >= 1 && v <= requestTimeoutMsMax))
      throw new ConfigError(`${k} must be an integer of 1..${requestTimeoutMsMax} ms, got ${String(v)}`);
  }
  if (options.connection !== undefined)
    return new RemoteScheduler(options.connection, false, cluster, options);
  const servers = typeof options.servers === 'string' ? [options.servers] : [...options.servers];
  if (servers.length === 0) throw new ConfigError('connect: no NATS server given');
  const c = options.credentials;
  const natsOptions: NatsConnectionOptions = {
    servers,
    name: options.name ?? 'trellis-client',
    maxReconnectAttempts: -1,
    reconnectTimeWait: 250,
    // No stack captured per request: errors are mapped to typed ones anyway, and at load it is CPU.
    noAsyncTraces: true,
    ...(c === undefined ? {} : 'token' in c ? { token: c.token } : { user: c.user, pass: c.pass }),
  };
  let nc: NatsConnection;
  try {
    nc = await natsConnect(natsOptions);
  } catch (cause) {
    const why = cause instanceof Error ? cause.message : String(cause);
    throw new UnavailableError(`cannot connect to NATS at ${servers.join(', ')}: ${why}`, { cause });
  }
  return new RemoteScheduler(nc, true, cluster, options);
}

/** A cluster's scheduler over NATS. Obtain with `connect()`. */
export class RemoteScheduler implements SchedulerApi {
  readonly #node: string | undefined;
  readonly #nc: NatsConnection;
  readonly #ownsConnection: boolean;
  readonly #cluster: string;
  readonly #timeoutMs: number;
  readonly #attemptTimeoutMs: number;
  readonly #now: () => number;
  readonly #watches = new Set<AsyncIterableIterator<SchedulerEvent>>();
  #leader: string | undefined;
  #closed = false;
  /** Watch frames that did not decode, dropped. */
  droppedFrames = 0;

  constructor(nc: NatsConnection, ownsConnection: boolean, cluster: string, options: ConnectOptions) {
    this.#nc = nc;
    this.#ownsConnection = ownsConnection;
    this.#cluster = cluster;
    this.#timeoutMs = options.timeoutMs ?? callTimeoutMsDefault;
    this.#attemptTimeoutMs = options.attemptTimeoutMs ?? attemptTimeoutMsDefault;
    this.#now = options.now ?? Date.now;
    this.#node = options.node === undefined ? undefined : nodeId(options.node, 'node');
  }

  /** The leader this client last heard of (it sends there first). */
  get leader(): string | undefined {
    return this.#leader;
  }

  get cluster(): string {
    return this.#cluster;
  }

  /**
   * Sends `call` until it gets an answer or the deadline passes. `mutation` calls report a timed-out
   * outcome as OutcomeUnknownError.
   */
  async #call<S extends z.ZodType>(
    call: Call,
    schema: S,
    options: {
      readonly requestId?: string;
      readonly mutation: boolean;
      readonly to?: string;
      /** This call's deadline and attempt wait, when they differ from the client's (exec, wait running). */
      readonly timeoutMs?: number;
      readonly attemptTimeoutMs?: number;
    },
  ): Promise<z.output<S>> {
    if (this.#closed) throw new UnavailableError('the client is closed');
    if (options.requestId !== undefined && !requestIdPattern.test(options.requestId)) {
      throw new ValidationError('requestId', "must be 1..128 letters, digits, '_' or '-'");
    }
    const id = options.requestId ?? randomUUID();
    const timeoutMs = options.timeoutMs ?? this.#timeoutMs;
    const attemptTimeoutMs = options.attemptTimeoutMs ?? this.#attemptTimeoutMs;
    const deadline = Deadline.after(timeoutMs, this.#now);
    let maybeApplied = false;
    let last: unknown;
    for (let attempt = 0; ; attempt++) {
      const remaining = deadline.remainingMs();
      if (remaining <= 0 || this.#closed || this.#nc.isClosed()) break;
      if (attempt > 0 && remaining < Math.min(attemptTimeoutMs, retryRemainingMsMin)) break;
      const target = options.to ?? this.#leader;
      const subject =
        this.#node !== undefined
          ? apiNodeSubject(this.#cluster, this.#node)
          : target === undefined
            ? apiSubject(this.#cluster)
            : apiReplicaSubject(this.#cluster, target);
      // Throws ValidationError/CodecError for a request that cannot be sent at all: nothing was sent.
      const frame = encodeRequest(id, deadline, call);
      let data: Uint8Array;
      try {
        data = (await this.#nc.request(subject, frame, { timeout: Math.min(attemptTimeoutMs, remaining) }))
          .data;
      } catch (err) {
        last = err;
        // No responders: nobody took it, so nothing was applied; anything else may have reached a replica.
        const undelivered = err instanceof NatsError && err.code === ErrorCode.NoResponders;
        if (!undelivered) maybeApplied = true;
        this.#leader = undefined;
        await this.#pause(attempt, deadline.atMs);
        continue;
      }
      let reply: ReturnType<typeof replyCodec.decode>;
      try {
        reply = replyCodec.decode(data);
      } catch (err) {
        // A reply we cannot read: the request may have been applied; retrying with the same id is safe.
        last = err;
        maybeApplied = true;
        await this.#pause(attempt, deadline.atMs);
        continue;
      }
      this.#learnLeader(reply.by, reply.leader);
      if (reply.ok) {
        const parsed = schema.safeParse(reply.result);
        if (!parsed.success)
          throw new CodecError('shape', `${call.op}: the server's reply does not match the protocol`);
        return parsed.data;
      }
      const err = fromWire(reply.error);
      if (err.code === 'DEADLINE_EXCEEDED') {
        // Dropped unapplied by a replica whose clock says the deadline passed; ours will say so soon.
        last = err;
        await this.#pause(attempt, deadline.atMs);
        continue;
      }
      if (err.code !== 'SCHED_NOT_LEADER') throw err;
      // A follower that could not reach the leader, or a leader that lost leadership mid-call: it may have
      // been proposed, so the outcome is open until a retry with the same id answers.
      last = err;
      maybeApplied = true;
      if (reply.leader === undefined || reply.leader === reply.by) this.#leader = undefined;
      await this.#pause(attempt, deadline.atMs);
    }
    const cause = last;
    if (options.mutation && maybeApplied) {
      throw new OutcomeUnknownError(
        `${call.op} (request ${id}): no answer from cluster ${this.#cluster} within ${timeoutMs} ms; it may or may not have been applied — retry with the same request id`,
        { cause, details: { requestId: id, op: call.op } },
      );
    }
    if (cause instanceof TrellisError) throw cause;
    throw new UnavailableError(
      `${call.op}: no replica of cluster ${this.#cluster} answered within ${timeoutMs} ms${options.mutation ? ' (not applied)' : ''}`,
      { cause, details: { requestId: id, op: call.op } },
    );
  }

  #learnLeader(by: string, leader: string | undefined): void {
    if (leader !== undefined && leaderHintPattern.test(leader)) this.#leader = leader;
    else if (leader === undefined && this.#leader === by) this.#leader = undefined;
  }

  /** Backs off between attempts (doubling from 20 ms, at most `retryBackoffMsMax`), never past the deadline. */
  async #pause(attempt: number, deadline: number): Promise<void> {
    const ms = Math.min(
      retryBackoffMsMax,
      20 * 2 ** Math.min(attempt, 10),
      Math.max(0, deadline - this.#now()),
    );
    if (ms > 0) await new Promise((r) => setTimeout(r, ms));
  }

  /**
   * Creates a sandbox. With `wait: 'running'` the call lasts until the node reports it running, at most
   * `runningWaitMs` (default 60 s; SandboxNotRunningError after it, or when it fails or is lost first).
   */
  async create(spec: SandboxSpec, options: CreateOptions = {}): Promise<Sandbox> {
    const running = options.wait === 'running';
    const waitMs = options.runningWaitMs ?? runningWaitMsDefault;
    if (running && !(Number.isInteger(waitMs) && waitMs >= 1 && waitMs <= runningWaitMsMax))
      throw new ValidationError('runningWaitMs', `must be an integer of 1..${runningWaitMsMax} ms`);
    const call: Call = {
      op: 'create',
      spec,
      ...(options.wait === undefined ? {} : { wait: options.wait }),
      ...(running ? { runningWaitMs: waitMs } : {}),
    };
    return (await this.#call(call, sandboxSchema, {
      mutation: true,
      requestId: options.requestId ?? randomUUID(),
      // The server's wait ends with the request's deadline; a retry with the same id waits again.
      ...(running
        ? { timeoutMs: waitMs + this.#timeoutMs, attemptTimeoutMs: waitMs + this.#attemptTimeoutMs }
        : {}),
    })) as Sandbox;
  }

  /**
   * Runs a command in a running sandbox (see `Scheduler.exec`). Its deadline is the command's timeout plus
   * the client's own; a call that got no answer is OutcomeUnknownError, since the command may have run.
   */
  async exec(
    sandboxId: string,
    command: readonly string[],
    options: ExecOptions = {},
  ): Promise<NodeExecResult> {
    const timeoutMs = options.timeoutMs ?? execTimeoutMsDefault;
    const call: Call = {
      op: 'exec',
      sandboxId,
      command: [...command],
      ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }),
      ...(options.outputBytesMax === undefined ? {} : { outputBytesMax: options.outputBytesMax }),
      ...(options.stdinBytes === undefined ? {} : { stdin: options.stdinBytes as Uint8Array<ArrayBuffer> }),
    };
    return (await this.#call(call, execResultSchema, {
      ...(options.requestId === undefined ? {} : { requestId: options.requestId }),
      mutation: true,
      timeoutMs: Math.min(requestTimeoutMsMax, timeoutMs + this.#timeoutMs),
      attemptTimeoutMs: Math.min(requestTimeoutMsMax, timeoutMs + this.#attemptTimeoutMs),
    })) as NodeExecResult;
  }

  async #mutate(call: Call, options: MutationOptions): Promise<void> {
    await this.#call(call, voidResultSchema, {
      mutation: true,
      requestId: options.requestId ?? randomUUID(),
    });
  }

  terminate(sandboxId: string, options: MutationOptions = {}): Promise<void> {
    return this.#mutate({ op: 'terminate', sandboxId }, options);
  }

  suspend(sandboxId: string, options: MutationOptions = {}): Promise<void> {
    return this.#mutate({ op: 'suspend', sandboxId }, options);
  }

  resume(sandboxId: string, options: MutationOptions = {}): Promise<void> {
    return this.#mutate({ op: 'resume', sandboxId }, options);
  }

  async get(sandboxId: string, options: ReadOptions = {}): Promise<Sandbox | undefined> {
    const call: Call = { op: 'get', sandboxId, ...stale(options) };
    const sb = await this.#call(call, sandboxSchema.nullable(), { mutation: false });
    return sb === null ? undefined : (sb as Sandbox);
  }

  /** Pages through the cluster's sandboxes (each page is its own linearizable read). */
  async list(filter: ListFilter = {}, options: ReadOptions = {}): Promise<Sandbox[]> {
    const out: Sandbox[] = [];
    let after: string | undefined;
    for (;;) {
      const call: Call = {
        op: 'list',
        filter: { ...filter },
        limit: pageSizeMax,
        ...(after === undefined ? {} : { after }),
        ...stale(options),
      };
      const page = await this.#call(call, pageSchema(sandboxSchema), { mutation: false });
      out.push(...(page.items as Sandbox[]));
      const lastItem = page.items.at(-1);
      if (!page.more || lastItem === undefined) return out;
      after = lastItem.id;
    }
  }

  async nodes(options: ReadOptions = {}): Promise<NodeView[]> {
    const out: NodeView[] = [];
    let after: string | undefined;
    for (;;) {
      const call: Call = {
        op: 'nodes',
        limit: pageSizeMax,
        ...(after === undefined ? {} : { after }),
        ...stale(options),
      };
      const page = await this.#call(call, pageSchema(nodeViewSchema), { mutation: false });
      out.push(...(page.items as NodeView[]));
      const lastItem = page.items.at(-1);
      if (!page.more || lastItem === undefined) return out;
      after = lastItem.id;
    }
  }

  async stats(): Promise<SchedulerStats> {
    return (await this.#call({ op: 'stats' }, statsSchema, { mutation: false })) as SchedulerStats;
  }

  /**
   * The status of the replica that answers (the leader, once known; `replica`: that one, by its own
   * subject): role, term, positions, stats, and with `digest` a hash of its state to compare replicas.
   */
  async status(
    options: { readonly replica?: string; readonly digest?: boolean } = {},
  ): Promise<ReplicaStatus> {
    const call: Call = { op: 'status', ...(options.digest === true ? { digest: true } : {}) };
    return this.#call(call, statusSchema, {
      mutation: false,
      ...(options.replica === undefined ? {} : { to: options.replica }),
    });
  }

  /** The replica group's voters and learners, as the leader knows them (linearizable). */
  members(): Promise<Members> {
    return this.#call({ op: 'members' }, membersSchema, { mutation: false });
  }

  /**
   * Adds replica `id` as a learner and, once it has caught up, as a voter (`learner`: stops at the first
   * step). Start the replica first, with the current voters as its peers.
   */
  addMember(id: string, options: { readonly learner?: boolean } = {}): Promise<Members> {
    const call: Call = { op: 'member.add', id, learner: options.learner === true };
    return this.#call(call, membersSchema, { mutation: true });
  }

  /** Removes a voter or learner; removing the leader hands leadership over first. */
  removeMember(id: string): Promise<Members> {
    return this.#call({ op: 'member.remove', id }, membersSchema, { mutation: true });
  }

  /** Moves leadership to voter `to` (to the current leader: nothing to do). */
  transferLeadership(to: string): Promise<Members> {
    return this.#call({ op: 'member.transfer', to }, membersSchema, { mutation: true });
  }

  registerNode(spec: NodeSpec, options: MutationOptions = {}): Promise<void> {
    return this.#mutate({ op: 'node.register', spec }, options);
  }

  setNodeState(nodeId: string, state: NodeSpec['state'], options: MutationOptions = {}): Promise<void> {
    return this.#mutate({ op: 'node.state', nodeId, state }, options);
  }

  removeNode(nodeId: string, options: MutationOptions = {}): Promise<void> {
    return this.#mutate({ op: 'node.remove', nodeId }, options);
  }

  async heartbeat(nodeIds: readonly string[]): Promise<void> {
    await this.#call({ op: 'node.heartbeat', nodeIds: [...nodeIds] }, voidResultSchema, { mutation: false });
  }

  reportStatus(items: readonly StatusItem[], options: MutationOptions = {}): Promise<void> {
    return this.#mutate({ op: 'node.status', items: [...items] }, options);
  }

  async reconcileNode(
    nodeId: string,
    running: readonly ReconcileEntry[],
    options: MutationOptions = {},
  ): Promise<ReconcileResult> {
    return this.#call({ op: 'node.reconcile', nodeId, running }, reconcileResultSchema, {
      mutation: true,
      requestId: options.requestId ?? randomUUID(),
    });
  }

  setQuota(tenant: string, quota: Quota, options: MutationOptions = {}): Promise<void> {
    return this.#mutate({ op: 'quota.set', tenant, quota }, options);
  }

  /**
   * Committed events in log order, from `fromIndex` (as far back as the servers hold them, else
   * WatchGapError) or from now. Live events come from the watch subject; a frame whose start does not follow
   * what this watch has seen (a lost frame, a new leader publishing) triggers a catch-up call first, so no
   * event is skipped or yielded twice.
   */
  watch(options: WatchOptions = {}): AsyncIterableIterator<SchedulerEvent> {
    const frames: EventsFrame[] = [];
    const out: SchedulerEvent[] = [];
    let cursor: Cursor | undefined =
      options.fromIndex === undefined ? undefined : { index: options.fromIndex, count: 0 };
    let wake: (() => void) | undefined;
    let done = false;
    let overflow = false;
    const sub: Subscription = this.#nc.subscribe(watchSubject(this.#cluster), {
      callback: (err, msg) => {
        if (err === null) {
          try {
            if (frames.length >= watchFramesMax) overflow = true;
            else frames.push(eventsFrameCodec.decode(msg.data));
          } catch {
            this.droppedFrames++;
          }
        }
        wake?.();
      },
    });
    /** Reads events after `cursor` from replica `to` (default: the leader or any) until it has no more. */
    const catchUp = async (to?: string): Promise<void> => {
      for (;;) {
        const call: Call =
          cursor === undefined
            ? { op: 'events', limit: 1 }
            : { op: 'events', after: cursor, limit: eventsPerFrameMax };
        const r = await this.#call(call, eventsResultSchema, {
          mutation: false,
          ...(to === undefined ? {} : { to }),
        });
        out.push(...(r.events as SchedulerEvent[]));
        cursor = r.next;
        if (!r.more) return;
      }
    };
    const take = (f: EventsFrame, from: Cursor): void => {
      let at = f.prev;
      let mine = from;
      for (const e of f.events) {
        const pos = positionOf(at, e);
        at = advance(at, e);
        if (compareCursor(pos, mine) >= 0) {
          out.push(e);
          mine = at;
        }
      }
      cursor = mine;
    };
    const finish = (): void => {
      done = true;
      sub.unsubscribe();
      this.#watches.delete(iterator);
      wake?.();
    };
    // Starts at once: the subscription is live before the catch-up reads where the servers are, and "from
    // now" is where the answering replica was when it answered.
    const ready = this.#nc.flush().then(() => catchUp());
    ready.catch(() => {}); // reported by next()
    const iterator: AsyncIterableIterator<SchedulerEvent> = {
      [Symbol.asyncIterator]: () => iterator,
      next: async () => {
        try {
          await ready;
          for (;;) {
            if (done) return { done: true, value: undefined };
            const e = out.shift();
            if (e !== undefined) return { done: false, value: e };
            if (overflow)
              throw new WatchOverflowError(`a watch reader fell more than ${watchFramesMax} frames behind`);
            const f = frames.shift();
            if (f === undefined) {
              if (this.#closed || sub.isClosed()) return { done: true, value: undefined };
              await new Promise<void>((r) => {
                wake = r;
              });
              wake = undefined;
              continue;
            }
            // A frame that starts past this watch's position: events may be missing between (a lost frame,
            // a new leader publishing). Its publisher holds them all, so catch up from it first.
            if (compareCursor(f.prev, cursor as Cursor) > 0) await catchUp(f.by);
            take(f, cursor as Cursor);
          }
        } catch (err) {
          finish();
          throw err;
        }
      },
      return: async () => {
        finish();
        return { done: true, value: undefined };
      },
    };
    this.#watches.add(iterator);
    return iterator;
  }

  /** Ends every watch and closes the connection this client opened. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const w of [...this.#watches]) await w.return?.();
    if (this.#ownsConnection) await this.#nc.close();
  }
}

function stale(options: ReadOptions): { stale?: boolean } {
  return options.stale === undefined ? {} : { stale: options.stale };
}

function encodeRequest(id: string, deadline: Deadline, call: Call): Uint8Array {
  try {
    return requestCodec.encode({ id, deadline: deadline.toWire(), call });
  } catch (err) {
    if (err instanceof CodecError) throw err;
    throw new ValidationError(
      '',
      `cannot encode ${call.op}: ${err instanceof Error ? err.message : String(err)}`,
    );
  }
}
