/**
 * `trellis server`: one replica of a Raft group over NATS, running the KV state machine until the scheduler's
 * replaces it. It serves `trellis.<cluster>.api` (queue group: one replica takes each request; a follower
 * forwards to the leader's own subject `trellis.<cluster>.api.<id>`), logs JSON lines, and exits cleanly on
 * SIGTERM or SIGINT. Reads are linearizable: the leader serves them after a ReadIndex barrier.
 *
 * The same API carries membership (`members`, `addMember`, `removeMember`: see members.ts), leadership
 * transfer (`transfer`) and `status`, which the replica that receives it answers about itself.
 *
 * A retried write takes effect once. Every request carries its deadline (src/lib/deadline.ts): a replica
 * drops a request past it, on arrival, before forwarding and before proposing, so a replica that wakes from
 * a stall does not replay work its client has given up on. Writes carry a client session (client id,
 * sequence number; raft/kv.ts), so a retry whose first attempt did commit returns the first outcome. A
 * client that gives up on a write that may have committed says so: `OutcomeUnknownError`.
 */
import { randomUUID } from 'node:crypto';
import { ErrorCode, type Msg, type NatsConnection, NatsError } from 'nats';
import { z } from 'zod';
import { NotLeaderError, ProposalDroppedError } from '../../raft/errors.js';
import {
  type KvCommand,
  type KvResult,
  type KvSessionRef,
  KvStateMachine,
  kvCommandCodec,
  kvKeyLengthMax,
  kvSessionRefSchema,
  kvValueLengthMax,
} from '../../raft/kv.js';
import { RaftNode } from '../../raft/node.js';
import { FileStorage } from '../../raft/storage/file.js';
import { NatsTransport } from '../../raft/transport/nats.js';
import { raftMessageCodec } from '../../raft/wire.js';
import { retryRemainingMsMin } from '../api/client.js';
import { memberOpTimeoutMs, serveMembership } from '../api/membership.js';
import { createCodec } from '../lib/codec.js';
import { Deadline, type DeadlineWire, deadlineWireSchema } from '../lib/deadline.js';
import { DeadlineExceededError, OutcomeUnknownError, TrellisError } from '../lib/errors.js';
import { replicaId } from '../lib/ids.js';
import { trellisMetrics } from '../lib/metrics.js';
import { createRng } from '../lib/prng.js';
import { parseWith, zodDecoder } from '../lib/validate.js';
import { createLogger, throttledWarn } from '../log.js';
import { type Readiness, startMetricsServer } from '../metrics/http.js';
import { PrometheusMetrics } from '../metrics/prometheus.js';
import { type ConnectionFlags, clientConnection, connectNats, resolveCredentials } from './connect.js';
import { exitCodes, UsageError } from './errors.js';
import { runSchedulerState } from './ops/scheduler-server.js';
import { redisGatewayConfig } from './redis-options.js';
import type { ServerOptions } from './server-command.js';
import { exitNow, stopSignal, stopWithin } from './stop.js';

export {
  electionTicksDefault,
  electionTicksMax,
  kvOutcomeUnknownExitCode,
  registerKv,
  registerServer,
  serverConnectTimeoutMsDefault,
  snapshotEntriesDefault,
  stopTimeoutMsDefault,
  tickMsMax,
} from './server-command.js';

const peer = z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'a replica id');
const kvKey = z.string().min(1).max(kvKeyLengthMax);
const kvValue = z.string().max(kvValueLengthMax);
const session = kvSessionRefSchema.optional();
const ops = {
  put: { op: z.literal('put'), key: kvKey, value: kvValue },
  get: { op: z.literal('get'), key: kvKey },
  status: { op: z.literal('status') },
  members: { op: z.literal('members') },
  addMember: { op: z.literal('addMember'), id: peer, learner: z.boolean() },
  removeMember: { op: z.literal('removeMember'), id: peer },
  transfer: { op: z.literal('transfer'), to: peer },
};
/** Version 1 requests: no deadline, no client session (still accepted; the server gives a default budget). */
const requestSchemaV1 = z.discriminatedUnion('op', [
  z.strictObject(ops.put),
  z.strictObject(ops.get),
  z.strictObject(ops.status),
  z.strictObject(ops.members),
  z.strictObject(ops.addMember),
  z.strictObject(ops.removeMember),
  z.strictObject(ops.transfer),
]);
/** Version 2: every request carries its deadline; kv writes carry their client session. */
const deadline = { deadline: deadlineWireSchema.optional() };
const requestSchema = z.discriminatedUnion('op', [
  z.strictObject({ ...ops.put, session, ...deadline }),
  z.strictObject({ op: z.literal('delete'), key: kvKey, session, ...deadline }),
  z.strictObject({
    op: z.literal('cas'),
    key: kvKey,
    expected: kvValue.nullable(),
    value: kvValue,
    session,
    ...deadline,
  }),
  z.strictObject({ ...ops.get, ...deadline }),
  z.strictObject({ ...ops.status, ...deadline }),
  z.strictObject({ ...ops.members, ...deadline }),
  z.strictObject({ ...ops.addMember, ...deadline }),
  z.strictObject({ ...ops.removeMember, ...deadline }),
  z.strictObject({ ...ops.transfer, ...deadline }),
]);
/** A request as it travels: with its deadline and (kv writes) its client session. */
export type KvWireRequest = z.output<typeof requestSchema>;
type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;
/** A request as a caller of `kvCall` writes it; `kvCall` adds the deadline and the session. */
export type KvRequest = DistributiveOmit<KvWireRequest, 'deadline' | 'session'>;
type KvWriteRequest = Extract<KvWireRequest, { op: 'put' | 'delete' | 'cas' }>;
const isKvWrite = (r: { op: string }): r is KvWriteRequest =>
  r.op === 'put' || r.op === 'delete' || r.op === 'cas';
const statusSchema = z.strictObject({
  id: z.string(),
  role: z.string(),
  term: z.number(),
  leader: z.string(),
  commit: z.number(),
  applied: z.number(),
  snapshotIndex: z.number(),
  snapshotsInstalled: z.number(),
  voters: z.array(z.string()),
  learners: z.array(z.string()),
  /** Requests this replica dropped because their deadline had passed (e.g. after a stall). */
  requestsExpired: z.number().optional(),
});
export type ReplicaStatus = z.output<typeof statusSchema>;
export type KvReply =
  | {
      readonly ok: true;
      readonly value?: string | null;
      readonly previous?: string | null;
      readonly by: string;
      readonly voters?: readonly string[];
      readonly learners?: readonly string[];
      readonly status?: ReplicaStatus;
    }
  | {
      readonly ok: false;
      readonly error: string;
      readonly leader?: string;
      /** The error's stable code (a TrellisError's, or KV_* for the state machine's refusals). */
      readonly code?: string;
      /** The value found by a cas that did not apply. */
      readonly current?: string | null;
      /** Set when this attempt certainly did not, and will not, take effect (refused before proposing). */
      readonly unapplied?: true;
    };

export const kvRequestCodec = createCodec<KvWireRequest>({
  kind: 'trellis.kv.request',
  version: 2,
  frameBytesMax: 1 << 17,
  decoders: { 1: zodDecoder(requestSchemaV1), 2: zodDecoder(requestSchema) },
});
const replySchema = z.union([
  z.strictObject({
    ok: z.literal(true),
    value: z.string().nullable().optional(),
    previous: z.string().nullable().optional(),
    by: z.string(),
    voters: z.array(z.string()).optional(),
    learners: z.array(z.string()).optional(),
    status: statusSchema.optional(),
  }),
  z.strictObject({
    ok: z.literal(false),
    error: z.string().max(4096),
    leader: z.string().optional(),
    code: z.string().max(64).optional(),
    current: z.string().nullable().optional(),
    unapplied: z.literal(true).optional(),
  }),
]);
export const kvReplyCodec = createCodec<KvReply>({
  kind: 'trellis.kv.reply',
  version: 1,
  frameBytesMax: 1 << 17,
  decoders: { 1: zodDecoder(replySchema) as (b: unknown) => KvReply },
});

export const apiSubject = (cluster: string): string => `trellis.${cluster}.api`;

export async function runServer(o: ServerOptions): Promise<void> {
  const id = replicaId(o.id, 'id');
  const peers = o.peers.split(',').map((p) => replicaId(p.trim(), 'peers'));
  // Checked before anything opens, so a bad Redis setting is one line and nothing started.
  const redis = redisGatewayConfig(o);
  const log = createLogger('server', { replica: id, cluster: o.cluster });
  // The data directory first: a corrupt or already-used one (WalCorruptError, DataDirLockedError) stops
  // the replica at once, before it joins anything.
  const sink = o.metricsPort === undefined ? undefined : new PrometheusMetrics();
  const metrics = sink === undefined ? undefined : trellisMetrics(sink);
  const storage = await FileStorage.open(
    o.data,
    metrics === undefined
      ? {}
      : { onFsyncMs: (ms) => metrics.raftFsyncSeconds.observe(ms / 1_000, { replica: id }) },
  ).catch((err: unknown) => {
    // A path that cannot be a directory (a file, a file on the way, no permission) is the caller's setting.
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST' || code === 'ENOTDIR' || code === 'EACCES' || code === 'EROFS')
      throw new UsageError(`--data ${o.data}: cannot be used as a data directory (${code})`, { cause: err });
    throw err;
  });
  // Ready once a leader is known; each state machine below says how it knows.
  let readiness = (): Readiness => ({ ready: false, reason: 'waiting for NATS' });
  const metricsServer =
    sink === undefined || o.metricsPort === undefined
      ? undefined
      : await startMetricsServer({ metrics: sink, port: o.metricsPort, readiness: () => readiness() }).catch(
          async (err: unknown) => {
            await storage.close().catch(() => undefined);
            throw err;
          },
        );
  const stopping = stopSignal();
  let connected = false;
  const connecting = Promise.race([
    connectNats({
      servers: o.nats,
      name: `trellis-replica-${id}`,
      credentials: resolveCredentials(o, process.env, `replica-${id}`),
      timeoutMs: o.connectTimeout,
      reconnectForever: true,
      log,
    }),
    // A signal while still waiting for NATS stops at once: only the storage (and its lock) to release.
    // Once connected, this branch must do nothing: the stop below closes node, storage and NATS in order.
    stopping.then(async (): Promise<never> => {
      if (connected) return new Promise<never>(() => undefined);
      await storage.close().catch(() => undefined);
      return exitNow(log, 0);
    }),
  ]);
  // Giving up on NATS (or a refused login) releases the data directory before the one error line.
  const nc = await connecting.catch(async (err: unknown) => {
    await storage.close().catch(() => undefined);
    throw err;
  });
  connected = true;
  if (o.state === 'scheduler') {
    await runSchedulerState({
      ...(redis === undefined ? {} : { redis }),
      id,
      peers,
      cluster: o.cluster,
      tickMs: o.tickMs,
      electionTicks: o.electionTicks,
      snapshotEntries: o.snapshotEntries,
      stopTimeoutMs: o.stopTimeout,
      connection: nc,
      storage,
      log,
      stopping,
      nodeDownAfterMs: o.nodeDownAfter,
      ...(sink === undefined ? {} : { metrics: sink }),
      setReadiness: (r) => {
        readiness = r;
      },
    });
    await metricsServer?.close();
    exitNow(log, exitCodes.ok);
  }
  const kv = new KvStateMachine();
  const droppedRaft = throttledWarn(log, 'dropped inbound raft frame');
  const transport = new NatsTransport({
    connection: nc,
    cluster: o.cluster,
    self: id,
    codec: raftMessageCodec,
    destination: (m) => m.to,
    onDrop: (reason, detail) => droppedRaft({ reason, detail }),
  });
  const node = new RaftNode<KvResult>({
    id,
    voters: peers,
    storage,
    transport,
    stateMachine: kv,
    rng: createRng(process.pid),
    tickMs: o.tickMs,
    snapshotEntries: o.snapshotEntries,
    // An append's entries must fit one NATS message with their framing: half the server's max payload.
    core: {
      msgBytesMax: Math.min(512 << 10, Math.floor((nc.info?.max_payload ?? 1 << 20) / 2)),
      electionTicks: o.electionTicks,
    },
    ...(metrics === undefined ? {} : { metrics }),
  });
  readiness = () =>
    node.status().leader === '' ? { ready: false, reason: 'no leader known' } : { ready: true };
  log.info({ peers, data: o.data }, 'replica started');

  let requestsExpired = 0;
  /** Drops a request whose deadline passed (counted, logged once per request): it must not take effect. */
  const drop = (req: KvWireRequest, where: string): KvReply => {
    requestsExpired++;
    log.warn({ op: req.op, where, requestsExpired }, 'dropped a request past its deadline');
    return errorReply(new DeadlineExceededError(`${req.op}: deadline passed ${where}; dropped`));
  };

  /** A reply, or (from a follower) the leader's encoded reply, relayed as it came: the client validates it. */
  const serve = async (msg: Msg): Promise<KvReply | Uint8Array> => {
    let req: KvWireRequest;
    try {
      req = kvRequestCodec.decode(msg.data);
    } catch (err) {
      return errorReply(err, true);
    }
    // The deadline starts at the door: a request that sat in this process's socket while it was stopped
    // arrives with its absolute deadline already past.
    const deadline =
      req.deadline === undefined ? Deadline.after(defaultBudgetMs(req)) : Deadline.received(req.deadline);
    const st = node.status();
    if (req.op === 'status') return { ok: true, by: id, status: statusOf(node, requestsExpired) };
    if (deadline.expired()) return drop(req, 'on arrival');
    if (st.role !== 'leader') {
      if (st.leader === '' || st.leader === id)
        return { ok: false, error: 'no leader yet', leader: st.leader, code: 'NO_LEADER', unapplied: true };
      // Forward to the leader's own subject with what is left of the deadline, and relay its answer.
      try {
        const forwarded = kvRequestCodec.encode({ ...req, deadline: deadline.toWire() });
        const answer = await nc.request(`${apiSubject(o.cluster)}.${st.leader}`, forwarded, {
          timeout: Math.max(1, deadline.remainingMs()),
        });
        return answer.data;
      } catch (err) {
        // No responders: the leader's subject has no subscriber, so the forward reached no one.
        const unreached = err instanceof NatsError && err.code === ErrorCode.NoResponders;
        return {
          ok: false,
          error: 'leader unreachable',
          leader: st.leader,
          code: 'LEADER_UNREACHABLE',
          ...(unreached ? { unapplied: true as const } : {}),
        };
      }
    }
    if (
      req.op === 'members' ||
      req.op === 'addMember' ||
      req.op === 'removeMember' ||
      req.op === 'transfer'
    ) {
      try {
        return { ...(await serveKvMembership(node, req)), by: id };
      } catch (err) {
        return errorReply(err);
      }
    }
    if (req.op === 'get') {
      // Linearizable: wait for the ReadIndex barrier, then read the applied state.
      try {
        await node.read();
      } catch (err) {
        return errorReply(err);
      }
      return { ok: true, value: kv.get(req.key), by: id };
    }
    // Checked again right before proposing: nothing past its deadline enters the log.
    if (deadline.expired()) return drop(req, 'before proposing');
    try {
      return resultReply(await node.propose(kvCommandCodec.encode(toCommand(req, Date.now()))), id);
    } catch (err) {
      return errorReply(err);
    }
  };
  const answer = (msg: Msg): void => {
    void serve(msg)
      .then((reply) => msg.respond(reply instanceof Uint8Array ? reply : kvReplyCodec.encode(reply)))
      .catch((err: unknown) => log.error({ err: String(err) }, 'could not answer an api request'));
  };
  nc.subscribe(apiSubject(o.cluster), { queue: 'replicas', callback: (_e, msg) => answer(msg) });
  nc.subscribe(`${apiSubject(o.cluster)}.${id}`, { callback: (_e, msg) => answer(msg) });

  let last = '';
  let member = false;
  let removed: () => void = () => undefined;
  const removedFromGroup = new Promise<void>((resolve) => {
    removed = resolve;
  });
  const watch = setInterval(() => {
    const st = node.status();
    const now = `${st.role}/${st.term}/${st.leader}`;
    if (now !== last) log.info(st, 'raft status');
    last = now;
    // A joining replica is not a member until it is added; once it was one and is no longer, it was removed.
    const inConf = st.conf.voters.includes(id) || st.conf.learners.includes(id);
    if (member && !inConf) removed();
    member = inConf;
  }, 100);

  const why = await Promise.race([
    stopping.then(() => 'signal' as const),
    removedFromGroup.then(() => 'removed' as const),
  ]);
  clearInterval(watch);
  if (why === 'removed') log.warn('this replica was removed from the group; stopping');
  else log.info('stopping');
  await stopWithin(o.stopTimeout, log, async () => {
    await metricsServer?.close();
    await node.close();
    await nc.drain();
  });
  log.info('stopped');
  exitNow(log, why === 'removed' ? exitCodes.removed : exitCodes.ok);
}

export { learnerCatchUpEntries, memberOpTimeoutMs } from '../api/membership.js';

/** The budget of a version-1 request, which carries no deadline: what a version-1 client waited. */
function defaultBudgetMs(req: KvWireRequest): number {
  return req.op === 'put' || req.op === 'get' ? 1_000 : memberOpTimeoutMs + 1_000;
}

/** The entry for a kv write: the operation, its client session, and the proposing leader's clock. */
function toCommand(req: KvWriteRequest, stampMs: number): KvCommand {
  const meta = { stampMs, ...(req.session === undefined ? {} : { session: req.session }) };
  switch (req.op) {
    case 'put':
      return { op: 'put', key: req.key, value: req.value, ...meta };
    case 'delete':
      return { op: 'delete', key: req.key, ...meta };
    case 'cas':
      return { op: 'cas', key: req.key, expected: req.expected, value: req.value, ...meta };
  }
}

/** The state machine's answer, as a reply; its refusals get stable codes. */
function resultReply(r: KvResult, by: string): KvReply {
  if (r.ok) return { ok: true, previous: r.previous, by };
  const code = `KV_${r.error.toUpperCase().replaceAll('-', '_')}`;
  return { ok: false, error: r.error, code, ...(r.current === undefined ? {} : { current: r.current }) };
}

/**
 * An error as a reply. `unapplied` only where the request certainly did not enter the log: refused as not
 * leader, dropped by Raft, past its deadline. A timeout or a closed node leaves the outcome open.
 */
function errorReply(err: unknown, refused = false): KvReply {
  const unapplied =
    refused ||
    err instanceof NotLeaderError ||
    err instanceof ProposalDroppedError ||
    err instanceof DeadlineExceededError;
  return {
    ok: false,
    error: String(err).slice(0, 4096),
    ...(err instanceof TrellisError ? { code: err.code } : {}),
    ...(err instanceof NotLeaderError ? { leader: err.leaderHint } : {}),
    ...(unapplied ? { unapplied: true as const } : {}),
  };
}

function statusOf(node: RaftNode<KvResult>, requestsExpired: number): ReplicaStatus {
  const st = node.status();
  return {
    id: st.id,
    role: st.role,
    term: st.term,
    leader: st.leader,
    commit: st.commit,
    applied: st.applied,
    snapshotIndex: st.snapshotIndex,
    snapshotsInstalled: st.snapshotsInstalled,
    voters: [...st.conf.voters],
    learners: [...st.conf.learners],
    requestsExpired,
  };
}

/**
 * Membership operations on the leader (src/api/membership.ts, shared with the scheduler server), in the KV
 * reply's shape.
 */
async function serveKvMembership(
  node: RaftNode<KvResult>,
  req: Extract<KvRequest, { op: 'members' | 'addMember' | 'removeMember' | 'transfer' }>,
): Promise<Omit<Extract<KvReply, { ok: true }>, 'by'>> {
  const m = await serveMembership(node, req);
  return { ok: true as const, voters: [...m.voters], learners: [...m.learners] };
}

/**
 * What a client learned about where to send: the leader that answered last. A client that keeps one and
 * passes it to every `kvCall` sends straight to the leader's subject, saving the two NATS hops of a
 * follower's forward; without one, requests go to the queue group and any replica forwards.
 */
export interface KvRoute {
  leader?: string;
}

/**
 * A client's session with the group's KV machine (Raft thesis §6.3; the rules are in raft/kv.ts): an id,
 * and a sequence number per write, kept across the retries of that write. Writes through one session run
 * one at a time, in call order (a later write waits for the one before), because the machine remembers only
 * each client's last write. `issuedMs` is this client's clock when a write starts, never decreasing.
 */
export class KvClientSession {
  readonly clientId: string;
  readonly #now: () => number;
  #seq = 0;
  #issuedMs = 0;
  #tail: Promise<unknown> = Promise.resolve();

  constructor(clientId: string = randomUUID().replaceAll('-', ''), now: () => number = Date.now) {
    parseWith(kvSessionRefSchema.shape.client, clientId, 'clientId');
    this.clientId = clientId;
    this.#now = now;
  }

  /** Runs `write` with the next sequence number once every earlier write of this session has settled. */
  run<T>(write: (ref: KvSessionRef) => Promise<T>): Promise<T> {
    const result = this.#tail.then(() => {
      this.#issuedMs = Math.max(this.#issuedMs, this.#now());
      return write({ client: this.clientId, seq: ++this.#seq, issuedMs: this.#issuedMs });
    });
    this.#tail = result.catch(() => undefined);
    return result;
  }
}

/** The longest an attempt's timeout grows to by doubling after timeouts. */
const attemptTimeoutMsMax = 8_000;

/** Refusals that are the state machine's own answer to a write: final, never retried. */
const kvOutcomeCodes: ReadonlySet<string> = new Set(['KV_CAS_MISMATCH', 'KV_FULL', 'KV_BAD_COMMAND']);
/** Refusals that say this attempt did nothing but an earlier one may have: the write's outcome is open. */
const kvSessionLostCodes: ReadonlySet<string> = new Set(['KV_STALE_REQUEST', 'KV_SESSION_EXPIRED']);

/**
 * A client call to the group: retries through "no leader yet", timeouts and failovers until `timeoutMs`.
 * Each attempt carries a deadline of `requestTimeoutMs` (at most what is left of `timeoutMs`), so no replica
 * forwards or proposes an attempt after its sender stopped waiting for it.
 *
 * A write (`put`, `delete`, `cas`) runs in `session` (a one-write session when none is given), so its
 * retries are deduplicated: it takes effect at most once and a retry returns the first outcome. When the
 * call gives up on a write that may have taken effect (an attempt went unanswered, or was answered by a
 * replica that could not tell), it throws `OutcomeUnknownError`; a write that certainly did not take effect
 * returns the last refusal (`ok: false`), as does every non-write.
 */
export async function kvCall(
  nc: NatsConnection,
  cluster: string,
  req: KvRequest,
  timeoutMs = 5_000,
  requestTimeoutMs = 500,
  route?: KvRoute,
  session?: KvClientSession,
): Promise<KvReply> {
  if (!isKvWrite(req)) return callGroup(nc, cluster, req, timeoutMs, requestTimeoutMs, route);
  return (session ?? new KvClientSession()).run((ref) =>
    callGroup(nc, cluster, { ...req, session: ref }, timeoutMs, requestTimeoutMs, route),
  );
}

async function callGroup(
  nc: NatsConnection,
  cluster: string,
  req: KvWireRequest,
  timeoutMs: number,
  requestTimeoutMs: number,
  route: KvRoute | undefined,
): Promise<KvReply> {
  const overall = Deadline.after(timeoutMs);
  const write = isKvWrite(req);
  /** Whether some attempt may have entered the log: then giving up leaves the outcome unknown. */
  let maybeApplied = false;
  let redirected = false;
  // An attempt that got no answer in time may have been dropped at its deadline by a slow group: the next
  // one waits twice as long (up to what is left), so a loaded group still gets a write through.
  let attemptMs = requestTimeoutMs;
  for (;;) {
    const attempt = Deadline.after(Math.max(1, Math.min(attemptMs, overall.remainingMs())));
    const to = route?.leader;
    const reply = await attemptOnce(nc, cluster, to, { ...req, deadline: attempt.toWire() }, attempt);
    if (route !== undefined) learnRoute(route, req, reply);
    if (reply.ok) return reply;
    if (reply.code === 'TIMEOUT' || reply.code === 'DEADLINE_EXCEEDED')
      attemptMs = Math.max(attemptMs, Math.min(attemptMs * 2, attemptTimeoutMsMax));
    if (reply.code !== undefined && kvOutcomeCodes.has(reply.code)) return reply;
    if (write && reply.unapplied !== true) maybeApplied = true;
    if (reply.code !== undefined && kvSessionLostCodes.has(reply.code))
      return giveUp(req, reply, maybeApplied);
    // A refused membership change is an answer, not a transient failure: do not retry it.
    if (reply.error.includes('MembershipChangeError')) return reply;
    if (overall.expired()) return giveUp(req, reply, maybeApplied);
    // Straight to the leader a refusal named, once per call (two stale replicas could name each other);
    // otherwise wait for an election.
    if (!redirected && route?.leader !== undefined && route.leader !== to) {
      redirected = true;
      continue;
    }
    await new Promise((r) => setTimeout(r, Math.min(50, overall.remainingMs())));
    // An attempt with almost no time left would time out and make a clean refusal look like "maybe applied".
    if (overall.remainingMs() < retryRemainingMsMin) return giveUp(req, reply, maybeApplied);
  }
}

/** One request and its reply; a transport failure becomes a reply, `unapplied` only when nobody got it. */
async function attemptOnce(
  nc: NatsConnection,
  cluster: string,
  to: string | undefined,
  req: KvWireRequest & { deadline: DeadlineWire },
  attempt: Deadline,
): Promise<KvReply> {
  const subject = to === undefined ? apiSubject(cluster) : `${apiSubject(cluster)}.${to}`;
  try {
    const m = await nc.request(subject, kvRequestCodec.encode(req), {
      timeout: Math.max(1, attempt.remainingMs()),
    });
    return kvReplyCodec.decode(m.data);
  } catch (err) {
    if (err instanceof NatsError && err.code === ErrorCode.NoResponders)
      return { ok: false, error: `no replica listens on ${subject}`, code: 'NO_RESPONDERS', unapplied: true };
    return {
      ok: false,
      error: String(err).slice(0, 4096),
      code: err instanceof NatsError ? err.code : 'CLIENT',
    };
  }
}

function giveUp(req: KvWireRequest, last: Extract<KvReply, { ok: false }>, maybeApplied: boolean): KvReply {
  if (!maybeApplied) return last;
  const ref = 'session' in req ? req.session : undefined;
  throw new OutcomeUnknownError(
    `${req.op} ${'key' in req ? req.key : ''}: gave up without an answer; it may or may not have taken effect (last: ${last.error.slice(0, 200)})`,
    { details: { client: ref?.client, seq: ref?.seq, last: last.code } },
  );
}

/** Leader-served answers name the leader in `by`; refusals may name it in `leader`; anything else forgets it. */
function learnRoute(route: KvRoute, req: KvWireRequest, reply: KvReply): void {
  if (reply.ok) {
    if (req.op !== 'status') route.leader = reply.by;
  } else if (reply.leader !== undefined && reply.leader !== '') {
    route.leader = reply.leader;
  } else {
    delete route.leader;
  }
}

/** Asks one replica, by id, about itself. */
export async function replicaStatus(
  nc: NatsConnection,
  cluster: string,
  id: string,
): Promise<ReplicaStatus | undefined> {
  try {
    const m = await nc.request(`${apiSubject(cluster)}.${id}`, kvRequestCodec.encode({ op: 'status' }), {
      timeout: 500,
    });
    const reply = kvReplyCodec.decode(m.data);
    return reply.ok ? reply.status : undefined;
  } catch {
    return undefined;
  }
}

/** `trellis kv put|get|delete`: one request through the group, its reply printed as one JSON line. */
export async function runKv(o: ConnectionFlags, req: KvRequest): Promise<void> {
  const nc = await clientConnection(o);
  try {
    const reply = await kvCall(nc, o.cluster, req);
    process.stdout.write(`${JSON.stringify(reply)}\n`);
    if (!reply.ok) process.exitCode = exitCodes.failed;
  } finally {
    await nc.close();
  }
}
