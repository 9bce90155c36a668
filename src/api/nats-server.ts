/**
 * The NATS adapter of the API: serves a `SchedulerApi` on `trellis.<cluster>.api` (queue group `replicas`:
 * one replica takes each request) and `trellis.<cluster>.api.<replica>` (a caller that knows the leader
 * sends there), and publishes committed events on `trellis.<cluster>.watch`.
 *
 * Nothing that arrives crashes the process or changes state unless it decodes and validates: a frame that
 * is not a request (random bytes, wrong shape, wrong version, too large) gets a typed error reply
 * (CodecError), and a call the scheduler refuses gets that error, class and code intact (errors.ts).
 *
 * Routing: when `leader()` names another replica, a request taken from the queue group is forwarded to that
 * replica's subject and its reply relayed; one sent to this replica's own subject is answered with
 * NotLeaderError and the leader as a hint, so the caller goes there itself. `status` and `events` are always
 * answered here, and so is a stale read (`get`, `list`, `nodes` with `stale`) sent to this replica's own
 * subject: it asks for this replica's applied state, which is how a checker compares every replica's state. An embedded scheduler forwards inside its process, so by default this replica counts as
 * the leader.
 *
 * Events: every replica keeps the last events it applied (EventRing) to answer catch-up calls; only the
 * replica for which `publishEvents()` holds (the leader, in a group) publishes them, each frame naming the
 * position before it so followers detect gaps (docs/api.md).
 */
import { ErrorCode, type Msg, type NatsConnection, NatsError, type Subscription } from 'nats';
import { z } from 'zod';
import type { NodeSpec } from '../../placement/index.js';
import type { SchedulerApi, StatusItem } from '../../scheduler/api.js';
import {
  nodeStateSchema,
  type Quota,
  type ReconcileEntry,
  type SandboxSpec,
} from '../../scheduler/commands.js';
import { NotLeaderError } from '../../scheduler/errors.js';
import { sandboxStates } from '../../scheduler/lifecycle.js';
import { runningWaitMsMax } from '../../scheduler/scheduler.js';
import type { SchedulerEvent } from '../../scheduler/types.js';
import { Deadline } from '../lib/deadline.js';
import { CodecError, ValidationError } from '../lib/errors.js';
import { replicaId } from '../lib/ids.js';
import { parseWith } from '../lib/validate.js';
import { toWire } from './errors.js';
import { EventRing, eventsRetainedDefault } from './event-ring.js';
import type { MemberOp, Members } from './membership.js';
import {
  type ApiReply,
  type ApiRequest,
  apiNodeWildcard,
  apiQueueGroup,
  apiReplicaSubject,
  apiSubject,
  type Call,
  eventsFrameCodec,
  eventsPerFrameMax,
  nodeScopedCall,
  type ReplicaStatus,
  replyCodec,
  requestCodec,
  watchSubject,
} from './protocol.js';

export interface ApiServerOptions {
  readonly api: SchedulerApi;
  readonly connection: NatsConnection;
  readonly cluster: string;
  /** This replica's id: the subject suffix for leader routing, and `by` in replies. */
  readonly replica: string;
  /** The leader this replica knows of. Default: this replica (an embedded scheduler forwards in-process). */
  readonly leader?: () => string | undefined;
  /** What `status` answers about this replica besides stats. Default: a single replica that leads. */
  readonly status?: (options: { readonly digest: boolean }) => Omit<ReplicaStatus, 'stats'>;
  /** Whether this replica publishes committed events now. Default: while it is the leader. */
  readonly publishEvents?: () => boolean;
  /** Events held for catch-up. Default `eventsRetainedDefault`. */
  readonly eventsRetained?: number;
  /**
   * Whether to take requests from the queue group. Default true; false serves only this replica's own
   * subject (a replica being drained, or a test that must know which replica a request reaches).
   */
  readonly joinQueue?: boolean;
  /** Called for each frame refused before it reached the scheduler (for logs and metrics). */
  readonly onRefused?: (reason: string, detail: string) => void;
  /** Runs a membership call on this replica's Raft node (while it leads). Absent: the calls are refused. */
  readonly membership?: (op: MemberOp) => Promise<Members>;
}

/** How long `close()` waits for requests in flight. */
export const closeWaitMsDefault = 5_000;

const statusItemsSchema = z
  .array(
    z.strictObject({
      sandboxId: z.string(),
      state: z.enum(sandboxStates),
      reason: z.string().min(1).max(256).optional(),
      nodeId: z.string().max(128).optional(),
    }),
  )
  .max(10_000);
const listStateSchema = z.enum(sandboxStates).optional();

/** A running adapter; `close()` stops taking requests and waits for those in flight. */
export class ApiServer {
  readonly #o: ApiServerOptions;
  readonly #nc: NatsConnection;
  readonly #subs: Subscription[] = [];
  readonly #inFlight = new Set<Promise<void>>();
  readonly #ring: EventRing;
  readonly #watch: AsyncIterableIterator<SchedulerEvent>;
  readonly #pump: Promise<void>;
  #pendingEvents: SchedulerEvent[] = [];
  #pendingPrev = { index: 0, count: 0 };
  #flushScheduled = false;
  /** Counters for tests and metrics. */
  readonly counters = { requests: 0, refused: 0, failed: 0, forwarded: 0, framesPublished: 0 };

  private constructor(o: ApiServerOptions, applied: number) {
    this.#o = o;
    this.#nc = o.connection;
    // watch() and the applied index are read in the same turn, so the ring's floor matches its first event.
    this.#watch = o.api.watch();
    this.#ring = new EventRing(applied, o.eventsRetained ?? eventsRetainedDefault);
    this.#pump = this.#follow();
    if (o.joinQueue !== false) {
      this.#subs.push(
        this.#nc.subscribe(apiSubject(o.cluster), {
          queue: apiQueueGroup,
          callback: (_err, msg) => this.#track(this.#answer(msg, false)),
        }),
      );
    }
    this.#subs.push(
      this.#nc.subscribe(apiReplicaSubject(o.cluster, o.replica), {
        callback: (_err, msg) => this.#track(this.#answer(msg, true)),
      }),
    );
    if (o.joinQueue !== false) {
      // Node workers' own subjects: the node id is the subject's last token, which nats-server lets only
      // that node's user publish to, so the calls taken there may speak only for it.
      const prefix = `${apiNodeWildcard(o.cluster).slice(0, -1)}`;
      this.#subs.push(
        this.#nc.subscribe(apiNodeWildcard(o.cluster), {
          queue: apiQueueGroup,
          callback: (_err, msg) => this.#track(this.#answer(msg, false, msg.subject.slice(prefix.length))),
        }),
      );
    }
  }

  /** Starts serving `api`; resolves once the subscriptions are registered with the server. */
  static async start(options: ApiServerOptions): Promise<ApiServer> {
    const stats = await options.api.stats();
    const server = new ApiServer(options, stats.applied);
    // A connection that drops during this round trip rejects it with DISCONNECT; the subscriptions are sent
    // again on the reconnect, so the server is serving all the same. Fatal before: a replica restarted while
    // nats-server restarted exited with `error: DISCONNECT` (bench:load --chaos).
    await options.connection.flush().catch((err: unknown) => {
      if (!(err instanceof NatsError && err.code === ErrorCode.Disconnect)) throw err;
    });
    return server;
  }

  get #self(): string {
    return this.#o.replica;
  }

  #leader(): string | undefined {
    return this.#o.leader === undefined ? this.#self : this.#o.leader();
  }

  #track(p: Promise<void>): void {
    this.#inFlight.add(p);
    void p.finally(() => this.#inFlight.delete(p));
  }

  async #follow(): Promise<void> {
    try {
      for await (const event of this.#watch) {
        if (this.#pendingEvents.length === 0) this.#pendingPrev = this.#ring.end;
        this.#ring.push([event]);
        this.#pendingEvents.push(event);
        if (this.#pendingEvents.length >= eventsPerFrameMax) this.#flush();
        else if (!this.#flushScheduled) {
          this.#flushScheduled = true;
          setImmediate(() => this.#flush());
        }
      }
    } catch (err) {
      // The scheduler ended the watch (closed, or this reader fell behind): stop publishing; catch-up
      // callers asking beyond what is held get WatchGapError from the ring.
      this.#o.onRefused?.('watch-ended', err instanceof Error ? err.message : String(err));
    }
    this.#flush();
  }

  #flush(): void {
    this.#flushScheduled = false;
    const events = this.#pendingEvents;
    if (events.length === 0) return;
    this.#pendingEvents = [];
    const publish = this.#o.publishEvents?.() ?? this.#leader() === this.#self;
    if (!publish || this.#nc.isClosed()) return;
    this.#nc.publish(
      watchSubject(this.#o.cluster),
      eventsFrameCodec.encode({ by: this.#self, prev: this.#pendingPrev, events }),
    );
    this.counters.framesPublished++;
  }

  #reply(msg: Msg, reply: ApiReply): void {
    let bytes: Uint8Array;
    try {
      bytes = replyCodec.encode(reply);
    } catch (err) {
      if (!(err instanceof CodecError)) throw err;
      bytes = replyCodec.encode(this.#errorReply(err));
    }
    msg.respond(bytes);
  }

  #errorReply(err: unknown): ApiReply {
    const leader = this.#leader();
    return { ok: false, by: this.#self, ...(leader === undefined ? {} : { leader }), error: toWire(err) };
  }

  async #answer(msg: Msg, direct: boolean, node?: string): Promise<void> {
    this.counters.requests++;
    if (msg.reply === undefined || msg.reply === '') {
      // Published without a reply subject: there is no one to answer, and a mutation nobody waits for is
      // not carried out either.
      this.counters.refused++;
      this.#o.onRefused?.('no-reply-subject', `${msg.data.byteLength} bytes on ${msg.subject}`);
      return;
    }
    let request: ApiRequest;
    try {
      request = requestCodec.decode(msg.data);
    } catch (err) {
      this.counters.refused++;
      this.#o.onRefused?.('codec', err instanceof Error ? err.message : String(err));
      this.#reply(msg, this.#errorReply(err));
      return;
    }
    if (node !== undefined) {
      try {
        request = { ...request, call: nodeScopedCall(request.call, node) };
      } catch (err) {
        this.counters.refused++;
        this.#o.onRefused?.('node-scope', err instanceof Error ? err.message : String(err));
        this.#reply(msg, this.#errorReply(err));
        return;
      }
    }
    const deadline = Deadline.received(request.deadline);
    const leader = this.#leader();
    const local =
      request.call.op === 'status' || request.call.op === 'events' || (direct && isStaleRead(request.call));
    try {
      // A request that waited past its deadline (a stalled process, a long queue) is dropped, not done.
      deadline.check(`${request.call.op} ${request.id}`);
      if (!local && leader !== this.#self) {
        await this.#route(msg, request, deadline, direct, leader);
        return;
      }
      const result = await this.#dispatch(request);
      this.#reply(msg, {
        ok: true,
        by: this.#self,
        ...(leader === undefined ? {} : { leader }),
        result: result === undefined ? null : result,
      });
    } catch (err) {
      this.counters.failed++;
      this.#reply(msg, this.#errorReply(err));
    }
  }

  /** A follower's answer: forward a queue-group request to the leader, or tell a direct caller where it is. */
  async #route(
    msg: Msg,
    request: ApiRequest,
    deadline: Deadline,
    direct: boolean,
    leader: string | undefined,
  ): Promise<void> {
    if (direct || leader === undefined) {
      const why = leader === undefined ? 'no leader is known' : `the leader is ${leader}`;
      this.#reply(
        msg,
        this.#errorReply(new NotLeaderError(`replica ${this.#self} is not the leader; ${why}`)),
      );
      return;
    }
    this.counters.forwarded++;
    try {
      // Passed on with this replica's deadline, which can only be earlier than the caller's.
      const frame = requestCodec.encode({ ...request, deadline: deadline.toWire() });
      const answer = await this.#nc.request(apiReplicaSubject(this.#o.cluster, leader), frame, {
        timeout: Math.max(1, deadline.remainingMs()),
      });
      msg.respond(answer.data);
    } catch {
      // The leader did not answer in time (or is gone): the request may or may not have been applied there.
      // NotLeaderError makes the caller retry with the same id, which resolves it.
      this.#reply(msg, this.#errorReply(new NotLeaderError(`forwarding to leader ${leader} failed`)));
    }
  }

  async #dispatch(request: ApiRequest): Promise<unknown> {
    const api = this.#o.api;
    const call: Call = request.call;
    const mut = { requestId: request.id };
    switch (call.op) {
      case 'create':
        return api.create(call.spec as SandboxSpec, {
          requestId: request.id,
          ...(call.wait === undefined ? {} : { wait: call.wait }),
          ...(call.wait === 'running' ? { runningWaitMs: runningWaitOf(call.runningWaitMs, request) } : {}),
          pendingReplyMs: runningWaitOf(undefined, request),
        });
      case 'terminate':
        return api.terminate(call.sandboxId, mut);
      case 'suspend':
        return api.suspend(call.sandboxId, mut);
      case 'resume':
        return api.resume(call.sandboxId, mut);
      case 'get':
        return (await api.get(call.sandboxId, readOptions(call.stale))) ?? null;
      case 'list': {
        const state = parseWith(listStateSchema, call.filter.state, 'filter.state');
        const filter = {
          ...(call.filter.tenant === undefined ? {} : { tenant: call.filter.tenant }),
          ...(call.filter.nodeId === undefined ? {} : { nodeId: call.filter.nodeId }),
          ...(state === undefined ? {} : { state }),
        };
        return page(await api.list(filter, readOptions(call.stale)), call.after, call.limit);
      }
      case 'nodes':
        return page(await api.nodes(readOptions(call.stale)), call.after, call.limit);
      case 'stats':
        return api.stats();
      case 'status':
        return this.#status(call.digest === true);
      case 'quota.set':
        return api.setQuota(call.tenant, call.quota as Quota, mut);
      case 'node.register':
        return api.registerNode(call.spec as NodeSpec, mut);
      case 'node.state':
        return api.setNodeState(call.nodeId, parseWith(nodeStateSchema, call.state, 'state'), mut);
      case 'node.remove':
        return api.removeNode(call.nodeId, mut);
      case 'node.heartbeat':
        return api.heartbeat(call.nodeIds);
      case 'node.status':
        return api.reportStatus(parseWith(statusItemsSchema, call.items, 'items') as StatusItem[], mut);
      case 'node.reconcile':
        return api.reconcileNode(call.nodeId, call.running as ReconcileEntry[], mut);
      case 'members':
        return this.#members({ op: 'members' });
      case 'member.add':
        return this.#members({ op: 'addMember', id: replicaId(call.id, 'id'), learner: call.learner });
      case 'member.remove':
        return this.#members({ op: 'removeMember', id: replicaId(call.id, 'id') });
      case 'member.transfer':
        return this.#members({ op: 'transfer', to: replicaId(call.to, 'to') });
      case 'exec':
        return api.exec(call.sandboxId, call.command, {
          // The client retries an exec with the same request id: the worker answers it once.
          requestId: request.id,
          ...(call.timeoutMs === undefined ? {} : { timeoutMs: call.timeoutMs }),
          ...(call.outputBytesMax === undefined ? {} : { outputBytesMax: call.outputBytesMax }),
          ...(call.stdin === undefined ? {} : { stdinBytes: call.stdin }),
        });
      case 'events':
        return call.after === undefined
          ? { events: [], next: this.#ring.end, more: false, end: this.#ring.end }
          : { ...this.#ring.read(call.after, call.limit), end: this.#ring.end };
    }
  }

  #members(op: MemberOp): Promise<Members> {
    if (this.#o.membership === undefined)
      throw new ValidationError('op', 'this server does not manage a replica group');
    return this.#o.membership(op);
  }

  async #status(digest: boolean): Promise<ReplicaStatus> {
    const stats = await this.#o.api.stats();
    const base = this.#o.status?.({ digest }) ?? {
      replica: this.#self,
      role: 'leader',
      leader: this.#self,
      term: 0,
      commit: stats.applied,
      applied: stats.applied,
      replicas: [this.#self],
    };
    return { ...base, stats };
  }

  /**
   * Stops serving: unsubscribes, stops following events, and waits for requests in flight, at most
   * `closeWaitMs` (a call stuck in the scheduler must not keep the process from stopping; its caller
   * times out and retries with the same request id elsewhere).
   */
  async close(closeWaitMs = closeWaitMsDefault): Promise<void> {
    for (const s of this.#subs) s.unsubscribe();
    await this.#watch.return?.();
    await this.#pump;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.allSettled([...this.#inFlight]),
      new Promise((r) => {
        timer = setTimeout(r, closeWaitMs);
      }),
    ]);
    clearTimeout(timer);
  }
}

/** The least time a wait for running leaves the answer to reach its caller before the request's deadline. */
export const runningReplyMarginMsMin = 50;
/** The most it leaves (a slow path is seconds, not more). */
export const runningReplyMarginMsMax = 1_000;

/**
 * How long a create waits for running (counted from its arrival), or for a node before it answers with the
 * committed `pending` sandbox: what the caller asked for, and never past a fifth of what remains (between
 * 50 ms and 1 s) before the request's deadline — a wait that ended at the deadline itself answered just as the
 * caller gave up, which the caller could only report as OUTCOME_UNKNOWN. A caller of an older version sends
 * no wait: its deadline bounds it.
 */
function runningWaitOf(askedMs: number | undefined, request: ApiRequest): number {
  const remainingMs = Deadline.received(request.deadline).remainingMs();
  const marginMs = Math.min(runningReplyMarginMsMax, Math.max(runningReplyMarginMsMin, remainingMs / 5));
  const ms = Math.min(askedMs ?? runningWaitMsMax, runningWaitMsMax, remainingMs - marginMs);
  return Math.max(1, Math.floor(ms));
}

/** A read of this replica's own applied state, with no ReadIndex round through the leader. */
function isStaleRead(call: Call): boolean {
  return (call.op === 'get' || call.op === 'list' || call.op === 'nodes') && call.stale === true;
}

function readOptions(stale: boolean | undefined): { stale?: boolean } {
  return stale === undefined ? {} : { stale };
}

/** The page of an id-ordered list after `after`, and whether more follow. */
function page<T extends { readonly id: string }>(
  all: readonly T[],
  after: string | undefined,
  limit: number,
): { items: T[]; more: boolean } {
  const sorted = [...all].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  const start = after === undefined ? 0 : sorted.findIndex((x) => x.id > after);
  if (start < 0) return { items: [], more: false };
  return { items: sorted.slice(start, start + limit), more: start + limit < sorted.length };
}

/** Starts the NATS adapter (see ApiServer). */
export function serveApi(options: ApiServerOptions): Promise<ApiServer> {
  return ApiServer.start(options);
}
