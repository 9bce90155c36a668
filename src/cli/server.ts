/**
 * `trellis server`: one replica of a Raft group over NATS, running the KV state machine until the scheduler's
 * replaces it. It serves `trellis.<cluster>.api` (queue group: one replica takes each request; a follower
 * forwards to the leader's own subject `trellis.<cluster>.api.<id>`), logs JSON lines, and exits cleanly on
 * SIGTERM or SIGINT. Reads are linearizable: the leader serves them after a ReadIndex barrier.
 */
import type { Command } from 'commander';
import { connect, type Msg, type NatsConnection } from 'nats';
import { z } from 'zod';
import { NotLeaderError } from '../../raft/errors.js';
import { type KvResult, KvStateMachine, kvCommandCodec } from '../../raft/kv.js';
import { RaftNode } from '../../raft/node.js';
import { FileStorage } from '../../raft/storage/file.js';
import { NatsTransport } from '../../raft/transport/nats.js';
import { raftMessageCodec } from '../../raft/wire.js';
import { createCodec } from '../lib/codec.js';
import { replicaId } from '../lib/ids.js';
import { createRng } from '../lib/prng.js';
import { zodDecoder } from '../lib/validate.js';
import { createLogger } from '../log.js';

const requestSchema = z.discriminatedUnion('op', [
  z.strictObject({ op: z.literal('put'), key: z.string().min(1).max(1024), value: z.string().max(65536) }),
  z.strictObject({ op: z.literal('get'), key: z.string().min(1).max(1024) }),
]);
export type KvRequest = z.output<typeof requestSchema>;
export type KvReply =
  | {
      readonly ok: true;
      readonly value?: string | null;
      readonly previous?: string | null;
      readonly by: string;
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

interface ServerOptions {
  id: string;
  peers: string;
  nats: string;
  data: string;
  cluster: string;
  user?: string;
  pass?: string;
  tickMs: string;
}

export function registerServer(program: Command): void {
  program
    .command('server')
    .description('run one replica of a Raft group over NATS (KV state machine)')
    .requiredOption('--id <id>', 'this replica')
    .requiredOption('--peers <ids>', 'all replicas, comma-separated, this one included')
    .requiredOption('--data <dir>', 'directory for the write-ahead log and snapshots')
    .option('--nats <url>', 'nats-server URL', 'nats://127.0.0.1:4222')
    .option('--cluster <id>', 'cluster id (subject prefix)', 'trellis')
    .option('--user <user>', 'NATS user')
    .option('--pass <password>', 'NATS password')
    .option('--tick-ms <ms>', 'Raft tick: heartbeats every tick, elections after 10-20 ticks', '20')
    .action(async (o: ServerOptions) => {
      await runServer(o);
    });
}

async function runServer(o: ServerOptions): Promise<void> {
  const id = replicaId(o.id, 'id');
  const peers = o.peers.split(',').map((p) => replicaId(p.trim(), 'peers'));
  const log = createLogger('server', { replica: id, cluster: o.cluster });
  const nc = await connect({
    servers: o.nats,
    name: `trellis-replica-${id}`,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 250,
    waitOnFirstConnect: true,
    ...(o.user === undefined ? {} : { user: o.user, pass: o.pass ?? '' }),
  });
  const storage = await FileStorage.open(o.data);
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
    tickMs: Number.parseInt(o.tickMs, 10),
  });
  log.info({ peers, data: o.data }, 'replica started');

  const serve = async (msg: Msg): Promise<KvReply> => {
    let req: KvRequest;
    try {
      req = kvRequestCodec.decode(msg.data);
    } catch (err) {
      return { ok: false, error: String(err).slice(0, 4096) };
    }
    const st = node.status();
    if (st.role !== 'leader') {
      if (st.leader === '' || st.leader === id)
        return { ok: false, error: 'no leader yet', leader: st.leader };
      // Forward to the leader's own subject and relay its answer.
      try {
        const answer = await nc.request(`${apiSubject(o.cluster)}.${st.leader}`, msg.data, { timeout: 400 });
        return kvReplyCodec.decode(answer.data);
      } catch {
        return { ok: false, error: 'leader unreachable', leader: st.leader };
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
      .then((reply) => msg.respond(kvReplyCodec.encode(reply)))
      .catch((err: unknown) => log.error({ err: String(err) }, 'could not answer an api request'));
  };
  nc.subscribe(apiSubject(o.cluster), { queue: 'replicas', callback: (_e, msg) => answer(msg) });
  nc.subscribe(`${apiSubject(o.cluster)}.${id}`, { callback: (_e, msg) => answer(msg) });

  let last = '';
  const watch = setInterval(() => {
    const st = node.status();
    const now = `${st.role}/${st.term}/${st.leader}`;
    if (now !== last) log.info(st, 'raft status');
    last = now;
  }, 100);

  await new Promise<void>((resolve) => {
    const stop = (): void => resolve();
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  });
  clearInterval(watch);
  log.info('stopping');
  await node.close();
  await nc.drain();
  log.info('stopped');
}

/** A client call to the group: retries through "no leader yet" until `timeoutMs`. */
export async function kvCall(
  nc: NatsConnection,
  cluster: string,
  req: KvRequest,
  timeoutMs = 5_000,
): Promise<KvReply> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let reply: KvReply;
    try {
      const m = await nc.request(apiSubject(cluster), kvRequestCodec.encode(req), { timeout: 500 });
      reply = kvReplyCodec.decode(m.data);
    } catch (err) {
      reply = { ok: false, error: String(err) };
    }
    if (reply.ok || Date.now() > deadline) return reply;
    await new Promise((r) => setTimeout(r, 50));
  }
}

export function registerKv(program: Command): void {
  const kvCmd = program.command('kv').description('read and write the replica group’s KV state machine');
  const withConn = async (o: { nats: string; cluster: string }, req: KvRequest): Promise<void> => {
    const nc = await connect({ servers: o.nats });
    const reply = await kvCall(nc, o.cluster, req);
    process.stdout.write(`${JSON.stringify(reply)}\n`);
    await nc.close();
    if (!reply.ok) process.exitCode = 1;
  };
  kvCmd
    .command('put <key> <value>')
    .option('--nats <url>', 'nats-server URL', 'nats://127.0.0.1:4222')
    .option('--cluster <id>', 'cluster id', 'trellis')
    .action((key: string, value: string, o: { nats: string; cluster: string }) =>
      withConn(o, { op: 'put', key, value }),
    );
  kvCmd
    .command('get <key>')
    .option('--nats <url>', 'nats-server URL', 'nats://127.0.0.1:4222')
    .option('--cluster <id>', 'cluster id', 'trellis')
    .action((key: string, o: { nats: string; cluster: string }) => withConn(o, { op: 'get', key }));
}
