/**
 * `trellis server`: one replica of a Raft group over NATS, running the KV state machine until the scheduler's
 * replaces it. It serves `trellis.<cluster>.api` (queue group: one replica takes each request; a follower
 * forwards to the leader's own subject `trellis.<cluster>.api.<id>`), logs JSON lines, and exits cleanly on
 * SIGTERM or SIGINT. Reads are linearizable: the leader serves them after a ReadIndex barrier.
 *
 * The same API carries membership (`members`, `addMember`, `removeMember`: see members.ts), leadership
 * transfer (`transfer`) and `status`, which the replica that receives it answers about itself.
 */
import type { Command } from 'commander';
import type { Msg, NatsConnection } from 'nats';
import { z } from 'zod';
import { MembershipChangeError, NotLeaderError } from '../../raft/errors.js';
import { type KvResult, KvStateMachine, kvCommandCodec } from '../../raft/kv.js';
import { RaftNode } from '../../raft/node.js';
import { FileStorage } from '../../raft/storage/file.js';
import { NatsTransport } from '../../raft/transport/nats.js';
import { raftMessageCodec } from '../../raft/wire.js';
import { createCodec } from '../lib/codec.js';
import { replicaId } from '../lib/ids.js';
import { createRng } from '../lib/prng.js';
import { zodDecoder } from '../lib/validate.js';
import { createLogger, type Logger } from '../log.js';
import { durationMs, intBetween, positiveInt } from './args.js';
import {
  type ConnectionFlags,
  clientConnection,
  clientConnectTimeoutMs,
  connectNats,
  resolveCredentials,
  withConnectionOptions,
} from './connect.js';
import { exitCodes } from './errors.js';

const peer = z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'a replica id');
const requestSchema = z.discriminatedUnion('op', [
  z.strictObject({ op: z.literal('put'), key: z.string().min(1).max(1024), value: z.string().max(65536) }),
  z.strictObject({ op: z.literal('get'), key: z.string().min(1).max(1024) }),
  z.strictObject({ op: z.literal('status') }),
  z.strictObject({ op: z.literal('members') }),
  z.strictObject({ op: z.literal('addMember'), id: peer, learner: z.boolean() }),
  z.strictObject({ op: z.literal('removeMember'), id: peer }),
  z.strictObject({ op: z.literal('transfer'), to: peer }),
]);
export type KvRequest = z.output<typeof requestSchema>;
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
  | { readonly ok: false; readonly error: string; readonly leader?: string };

export const kvRequestCodec = createCodec<KvRequest>({
  kind: 'trellis.kv.request',
  version: 1,
  frameBytesMax: 1 << 17,
  decoders: { 1: zodDecoder(requestSchema) },
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
  z.strictObject({ ok: z.literal(false), error: z.string().max(4096), leader: z.string().optional() }),
]);
export const kvReplyCodec = createCodec<KvReply>({
  kind: 'trellis.kv.reply',
  version: 1,
  frameBytesMax: 1 << 17,
  decoders: { 1: zodDecoder(replySchema) as (b: unknown) => KvReply },
});

export const apiSubject = (cluster: string): string => `trellis.${cluster}.api`;

interface ServerOptions extends ConnectionFlags {
  id: string;
  peers: string;
  data: string;
  tickMs: number;
  snapshotEntries: number;
  stopTimeout: number;
}

/** The longest Raft tick `--tick-ms` takes (a minute: elections would take 10-20 minutes). */
export const tickMsMax = 60_000;
/** Entries applied between snapshots unless `--snapshot-entries` says otherwise (etcd's default). */
export const snapshotEntriesDefault = 100_000;
/** How long `trellis server` waits for NATS at start unless `--connect-timeout` says otherwise. */
export const serverConnectTimeoutMsDefault = 60_000;
/** How long a stopping replica may take to close Raft, storage and NATS before it exits anyway. */
export const stopTimeoutMsDefault = 3_000;

export function registerServer(program: Command): void {
  const cmd = program
    .command('server')
    .description('run one replica of a Raft group over NATS (KV state machine)')
    .requiredOption('--id <id>', 'this replica')
    .requiredOption(
      '--peers <ids>',
      "the group's voters on first start, comma-separated; a replica joining a running group lists the current voters without itself, and is then added with `trellis members add`",
    )
    .requiredOption('--data <dir>', 'directory for the write-ahead log and snapshots')
    .option(
      '--tick-ms <ms>',
      'Raft tick: heartbeats every tick, elections after 10-20 ticks',
      intBetween(1, tickMsMax),
      20,
    )
    .option(
      '--snapshot-entries <n>',
      'applied entries between snapshots (the log is compacted at each)',
      positiveInt,
      snapshotEntriesDefault,
    )
    .option(
      '--stop-timeout <duration>',
      'on SIGTERM/SIGINT, exit after this long even if NATS or storage has not closed',
      durationMs,
      stopTimeoutMsDefault,
    );
  withConnectionOptions(cmd, serverConnectTimeoutMsDefault).action(async (o: ServerOptions) => {
    await runServer(o);
  });
}

async function runServer(o: ServerOptions): Promise<void> {
  const id = replicaId(o.id, 'id');
  const peers = o.peers.split(',').map((p) => replicaId(p.trim(), 'peers'));
  const log = createLogger('server', { replica: id, cluster: o.cluster });
  // The data directory first: a corrupt or already-used one (WalCorruptError, DataDirLockedError) stops
  // the replica at once, before it joins anything.
  const storage = await FileStorage.open(o.data);
  const stopping = stopSignal();
  let connected = false;
  const nc = await Promise.race([
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
  connected = true;
  const kv = new KvStateMachine();
  const transport = new NatsTransport({
    connection: nc,
    cluster: o.cluster,
    self: id,
    codec: raftMessageCodec,
    destination: (m) => m.to,
    onDrop: (reason, detail) => log.warn({ reason, detail }, 'dropped inbound raft frame'),
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
    core: { msgBytesMax: Math.min(512 << 10, Math.floor((nc.info?.max_payload ?? 1 << 20) / 2)) },
  });
  log.info({ peers, data: o.data }, 'replica started');

  /** A reply, or (from a follower) the leader's encoded reply, relayed as it came: the client validates it. */
  const serve = async (msg: Msg): Promise<KvReply | Uint8Array> => {
    let req: KvRequest;
    try {
      req = kvRequestCodec.decode(msg.data);
    } catch (err) {
      return { ok: false, error: String(err).slice(0, 4096) };
    }
    const st = node.status();
    if (req.op === 'status') return { ok: true, by: id, status: statusOf(node) };
    if (st.role !== 'leader') {
      if (st.leader === '' || st.leader === id)
        return { ok: false, error: 'no leader yet', leader: st.leader };
      // Forward to the leader's own subject and relay its answer.
      try {
        const timeout = req.op === 'put' || req.op === 'get' ? 400 : memberOpTimeoutMs + 1_000;
        const answer = await nc.request(`${apiSubject(o.cluster)}.${st.leader}`, msg.data, { timeout });
        return answer.data;
      } catch {
        return { ok: false, error: 'leader unreachable', leader: st.leader };
      }
    }
    if (
      req.op === 'members' ||
      req.op === 'addMember' ||
      req.op === 'removeMember' ||
      req.op === 'transfer'
    ) {
      try {
        return { ...(await serveMembership(node, req)), by: id };
      } catch (err) {
        return {
          ok: false,
          error: String(err).slice(0, 4096),
          ...(err instanceof NotLeaderError ? { leader: err.leaderHint } : {}),
        };
      }
    }
    if (req.op === 'get') {
      // Linearizable: wait for the ReadIndex barrier, then read the applied state.
      try {
        await node.read();
      } catch (err) {
        return {
          ok: false,
          error: String(err),
          ...(err instanceof NotLeaderError ? { leader: err.leaderHint } : {}),
        };
      }
      return { ok: true, value: kv.get(req.key), by: id };
    }
    try {
      const r = await node.propose(kvCommandCodec.encode({ op: 'put', key: req.key, value: req.value }));
      return r.ok ? { ok: true, previous: r.previous, by: id } : { ok: false, error: r.error };
    } catch (err) {
      return {
        ok: false,
        error: String(err),
        ...(err instanceof NotLeaderError ? { leader: err.leaderHint } : {}),
      };
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
    await node.close();
    await nc.drain();
  });
  log.info('stopped');
  exitNow(log, why === 'removed' ? exitCodes.removed : exitCodes.ok);
}

/** Resolves on the first SIGTERM or SIGINT. */
function stopSignal(): Promise<void> {
  return new Promise<void>((resolve) => {
    process.once('SIGTERM', () => resolve());
    process.once('SIGINT', () => resolve());
  });
}

/**
 * Runs `close` but gives up after `timeoutMs`: with nats-server gone, draining the connection (and a Raft
 * node waiting on its transport) never finishes, and a replica must still exit when told to.
 */
async function stopWithin(timeoutMs: number, log: Logger, close: () => Promise<void>): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<'expired'>((resolve) => {
    timer = setTimeout(() => resolve('expired'), timeoutMs);
  });
  const outcome = await Promise.race([
    close().then(
      () => 'closed' as const,
      (err: unknown) => {
        log.warn({ err: String(err) }, 'error while stopping');
        return 'closed' as const;
      },
    ),
    expired,
  ]);
  clearTimeout(timer);
  if (outcome === 'expired')
    log.warn({ stopTimeoutMs: timeoutMs }, 'could not close cleanly in time; exiting');
}

/** Exits once the log lines written so far have reached stderr (pino writes asynchronously). */
function exitNow(log: Logger, code: number): never {
  log.flush();
  process.exit(code);
}

/** How long a membership change or transfer may take on the leader (a learner's catch-up included). */
export const memberOpTimeoutMs = 30_000;

function statusOf(node: RaftNode<KvResult>): ReplicaStatus {
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
  };
}

/** A learner within this many entries of the leader's commit index is caught up enough to vote. */
export const learnerCatchUpEntries = 64;

/**
 * Membership operations on the leader. Adding a voter goes through a learner that first catches up, so the
 * quorum never counts a replica that would hold up commits while it replays the log (etcd's promotion).
 */
async function serveMembership(
  node: RaftNode<KvResult>,
  req: Extract<KvRequest, { op: 'members' | 'addMember' | 'removeMember' | 'transfer' }>,
): Promise<Omit<Extract<KvReply, { ok: true }>, 'by'>> {
  const members = () => {
    const c = node.status().conf;
    return { ok: true as const, voters: [...c.voters], learners: [...c.learners] };
  };
  switch (req.op) {
    case 'members':
      await node.read();
      return members();
    case 'removeMember':
      await node.changeMembership({ type: 'remove', peer: req.id });
      return members();
    case 'transfer':
      // To the replica that already leads (this one): nothing to move, and asking for it is not an error.
      if (req.to !== node.status().id) await node.transferLeadership(req.to);
      return members();
    case 'addMember': {
      const conf = node.status().conf;
      if (conf.voters.includes(req.id)) throw new MembershipChangeError(`${req.id} is already a voter`);
      if (!conf.learners.includes(req.id)) await node.changeMembership({ type: 'addLearner', peer: req.id });
      if (req.learner) return members();
      const deadline = Date.now() + memberOpTimeoutMs;
      for (;;) {
        const match = node.progress().get(req.id)?.match ?? 0;
        if (match + learnerCatchUpEntries >= node.status().commit) break;
        if (Date.now() > deadline)
          throw new MembershipChangeError(`${req.id} did not catch up in time; it stays a learner`);
        await new Promise((r) => setTimeout(r, 50));
      }
      await node.changeMembership({ type: 'addVoter', peer: req.id });
      return members();
    }
  }
}

/**
 * What a client learned about where to send: the leader that answered last. A client that keeps one and
 * passes it to every `kvCall` sends straight to the leader's subject, saving the two NATS hops of a
 * follower's forward; without one, requests go to the queue group and any replica forwards.
 */
export interface KvRoute {
  leader?: string;
}

/** A client call to the group: retries through "no leader yet" until `timeoutMs`. */
export async function kvCall(
  nc: NatsConnection,
  cluster: string,
  req: KvRequest,
  timeoutMs = 5_000,
  requestTimeoutMs = 500,
  route?: KvRoute,
): Promise<KvReply> {
  const deadline = Date.now() + timeoutMs;
  let redirected = false;
  for (;;) {
    let reply: KvReply;
    const to = route?.leader;
    try {
      const subject = to === undefined ? apiSubject(cluster) : `${apiSubject(cluster)}.${to}`;
      const m = await nc.request(subject, kvRequestCodec.encode(req), { timeout: requestTimeoutMs });
      reply = kvReplyCodec.decode(m.data);
    } catch (err) {
      reply = { ok: false, error: String(err) };
    }
    if (route !== undefined) learnRoute(route, req, reply);
    // A refused membership change is an answer, not a transient failure: do not retry it.
    if (reply.ok || Date.now() > deadline || reply.error.includes('MembershipChangeError')) return reply;
    // Straight to the leader a refusal named, once per call (two stale replicas could name each other);
    // otherwise wait for an election.
    if (!redirected && route?.leader !== undefined && route.leader !== to) {
      redirected = true;
      continue;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Leader-served answers name the leader in `by`; refusals may name it in `leader`; anything else forgets it. */
function learnRoute(route: KvRoute, req: KvRequest, reply: KvReply): void {
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

export function registerKv(program: Command): void {
  const kvCmd = program.command('kv').description('read and write the replica group’s KV state machine');
  const withConn = async (o: ConnectionFlags, req: KvRequest): Promise<void> => {
    const nc = await clientConnection(o);
    const reply = await kvCall(nc, o.cluster, req);
    process.stdout.write(`${JSON.stringify(reply)}\n`);
    await nc.close();
    if (!reply.ok) process.exitCode = 1;
  };
  withConnectionOptions(kvCmd.command('put <key> <value>'), clientConnectTimeoutMs).action(
    (key: string, value: string, o: ConnectionFlags) => withConn(o, { op: 'put', key, value }),
  );
  withConnectionOptions(kvCmd.command('get <key>'), clientConnectTimeoutMs).action(
    (key: string, o: ConnectionFlags) => withConn(o, { op: 'get', key }),
  );
}
