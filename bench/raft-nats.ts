/**
 * Raft over NATS against etcd: `npm run bench:raft-nats -- --json FILE [--duration-s 10] [--warmup-s 2]
 * [--clients 1,64] [--value-bytes 256] [--systems trellis,etcd] [--route leader|any] [--tick-ms N]
 * [--snapshot-entries N]`.
 *
 * Trellis: a nats-server and three `trellis server` processes (the built CLI, `dist/src/cli/main.js`), each
 * with its own data directory (FileStorage, fsync on). Clients send `put` requests through `kvCall`, one NATS
 * connection per client. With `--route leader` (the default) each client learns the leader from its first
 * answer and sends to the leader's own subject; with `--route any` every request goes to the group's api
 * subject (a queue group: any replica takes it, and a follower forwards it to the leader).
 *
 * etcd (when installed: Debian package `etcd-server`; this benchmark installs nothing): three members, each
 * with its own data directory, driven through the v3 HTTP/JSON gateway with one keep-alive connection per
 * client to each member it writes to. With `--route leader` every write goes to the member that leads (asked
 * once through `/v3/maintenance/status`); with `--route any` writes go to the members in turn, so as with the
 * queue group two in three writes reach a follower, which forwards them to the leader.
 *
 * Everything listens on 127.0.0.1 on free ports, with data in temporary directories, and is stopped at the end,
 * on error and on SIGINT. Each scenario is a closed loop: every client writes a `valueBytes` value, waits for
 * the acknowledgement, and writes again; a warm-up with the same clients runs first and is not counted.
 * Only acknowledged writes count; failed ones are reported as `errors`.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type NatsConnection } from 'nats';
import { type KvRoute, kvCall } from '../src/cli/server.js';
import { OutcomeUnknownError } from '../src/lib/errors.js';
import { spawnReplica } from '../src/testing/replica-process.js';
import { type RunningServer, startNats } from '../src/testing/servers.js';
import { adoptChild, assertRunning, type Child, onInterrupt, stopChild } from './lib/children.js';
import {
  closeEtcdPutters,
  type EtcdCluster,
  etcdBinary,
  etcdLeaderUrl,
  etcdPutter,
  etcdVersion,
  startEtcd,
} from './lib/etcd.js';
import { fileStorageFsyncsBeforeAck } from './lib/fsync-probe.js';
import { benchArgs, machineLine, percentile, table, usage, writeJsonLines } from './lib/report.js';

const { values: flags } = benchArgs({
  options: {
    json: { type: 'string' },
    'duration-s': { type: 'string', default: '10' },
    'warmup-s': { type: 'string', default: '2' },
    clients: { type: 'string', default: '1,64' },
    'value-bytes': { type: 'string', default: '256' },
    systems: { type: 'string', default: 'trellis,etcd' },
    'tick-ms': { type: 'string' },
    'snapshot-entries': { type: 'string' },
    route: { type: 'string', default: 'leader' },
  },
  allowPositionals: false,
});

function positive(name: string, text: string | undefined): number {
  const n = Number(text);
  if (!Number.isFinite(n) || n <= 0) usage(`--${name} must be a positive number, not ${text}`);
  return n;
}
const durationMs = positive('duration-s', flags['duration-s']) * 1_000;
if (flags.route !== 'leader' && flags.route !== 'any')
  usage(`--route must be leader or any, not ${flags.route}`);
/** `leader`: clients write to the leader; `any`: to every replica in turn, and followers forward. */
const route = flags.route;
const warmupMs = Number(flags['warmup-s']) * 1_000;
if (!Number.isFinite(warmupMs) || warmupMs < 0) usage('--warmup-s must be 0 or more');
const clientCounts = (flags.clients ?? '').split(',').map((c) => Math.round(positive('clients', c)));
const value = 'v'.repeat(Math.round(positive('value-bytes', flags['value-bytes'])));
const systems = new Set((flags.systems ?? '').split(',').map((s) => s.trim()));
const cluster = 'bench';
const ids = ['a', 'b', 'c'];
/** Keys cycle through this many, fixed width, the same for both systems. */
const keySpace = 10_000;
const keyOf = (n: number): string => `bench/${String(n % keySpace).padStart(6, '0')}`;

interface Row {
  system: 'trellis' | 'etcd';
  clients: number;
  writesPerSec: number;
  p50Ms: number;
  p99Ms: number;
  fsyncBeforeAck: boolean;
  errors: number;
}

/** `clients` closed loops for `ms`: counts acknowledged writes and their latencies, and failed ones apart. */
async function drive(
  clients: number,
  ms: number,
  write: (client: number, key: string) => Promise<boolean>,
): Promise<{ latencies: number[]; errors: number }> {
  const latencies: number[] = [];
  let errors = 0;
  let seq = 0;
  const end = performance.now() + ms;
  await Promise.all(
    Array.from({ length: clients }, async (_, client) => {
      while (performance.now() < end) {
        const t0 = performance.now();
        if (await write(client, keyOf(seq++))) latencies.push(performance.now() - t0);
        else errors++;
      }
    }),
  );
  return { latencies, errors };
}

async function scenario(
  system: Row['system'],
  clients: number,
  fsyncBeforeAck: boolean,
  write: (client: number, key: string) => Promise<boolean>,
): Promise<Row> {
  if (warmupMs > 0) await drive(clients, warmupMs, write);
  const r = await drive(clients, durationMs, write);
  r.latencies.sort((a, b) => a - b);
  const row: Row = {
    system,
    clients,
    writesPerSec: Math.round(r.latencies.length / (durationMs / 1_000)),
    p50Ms: Math.round(percentile(r.latencies, 50) * 1_000) / 1_000,
    p99Ms: Math.round(percentile(r.latencies, 99) * 1_000) / 1_000,
    fsyncBeforeAck,
    errors: r.errors,
  };
  console.log(JSON.stringify(row));
  return row;
}

// ---- everything started is stopped at the end, on error, and on SIGINT ----

const cleanups: (() => Promise<void>)[] = [];
let cleaning: Promise<void> = Promise.resolve();
/** Stops what was started, newest first; a call while one runs (SIGINT meanwhile) waits for it too. */
function cleanup(): Promise<void> {
  const run = async (): Promise<void> => {
    closeEtcdPutters();
    for (const c of cleanups.splice(0).reverse())
      await c().catch((err: unknown) => console.error(String(err)));
  };
  cleaning = cleaning.then(run);
  return cleaning;
}
onInterrupt(cleanup);

async function runTrellis(): Promise<Row[]> {
  // Verified, not assumed: a proposal on FileStorage resolves only after a datasync made after it began.
  const fsynced = await fileStorageFsyncsBeforeAck();
  const nats: RunningServer = await startNats();
  cleanups.push(() => nats.stop());
  const root = await mkdtemp(join(tmpdir(), 'trellis-bench-raft-nats-'));
  cleanups.push(() => rm(root, { recursive: true, force: true }));
  const replicas: Child[] = ids.map((id) =>
    adoptChild(
      `trellis server ${id}`,
      spawnReplica({
        id,
        peers: ids,
        natsUrl: nats.url,
        root,
        cluster,
        ...(flags['tick-ms'] === undefined ? {} : { tickMs: positive('tick-ms', flags['tick-ms']) }),
        ...(flags['snapshot-entries'] === undefined
          ? {}
          : { snapshotEntries: positive('snapshot-entries', flags['snapshot-entries']) }),
      }),
    ),
  );
  cleanups.push(async () => {
    await Promise.all(replicas.map((r) => stopChild(r)));
  });
  const connections: NatsConnection[] = [];
  cleanups.push(async () => {
    await Promise.all(connections.splice(0).map((c) => c.close()));
  });
  const first = await connect({ servers: nats.url, name: 'bench-client-0' });
  connections.push(first);
  const elected = await kvCall(first, cluster, { op: 'put', key: 'bench/ready', value: 'x' }, 20_000);
  for (const r of replicas) assertRunning(r);
  if (!elected.ok) throw new Error(`the replica group did not accept a write: ${elected.error}`);
  console.log(`trellis: 3 replicas on ${nats.url}, leader ${elected.by}, fsync before ack: ${fsynced}`);
  const rows: Row[] = [];
  for (const clients of clientCounts) {
    while (connections.length < clients)
      connections.push(await connect({ servers: nats.url, name: `bench-client-${connections.length}` }));
    // Each client learns the leader from its first answer (kvCall's route), or always uses the queue group.
    const routes: (KvRoute | undefined)[] = connections.map(() => (route === 'leader' ? {} : undefined));
    rows.push(
      await scenario('trellis', clients, fsynced, async (client, key) => {
        const nc = connections[client] as NatsConnection;
        // A write whose outcome is unknown (OutcomeUnknownError) is counted as not acknowledged.
        const reply = await kvCall(
          nc,
          cluster,
          { op: 'put', key, value },
          5_000,
          2_000,
          routes[client],
        ).catch((err: unknown) => {
          if (err instanceof OutcomeUnknownError) return undefined;
          throw err;
        });
        return reply?.ok === true;
      }),
    );
    for (const r of replicas) assertRunning(r);
  }
  await cleanup();
  return rows;
}

async function runEtcd(bin: string): Promise<Row[]> {
  const etcd: EtcdCluster = await startEtcd(bin);
  cleanups.push(() => etcd.stop());
  console.log(`etcd ${etcdVersion(bin)}: 3 members at ${etcd.clientUrls.join(' ')}`);
  const rows: Row[] = [];
  for (const clients of clientCounts) {
    // Keep-alive connections, up to one per client to each member. With `--route any` writes go to the
    // members in turn, as the queue group spreads requests over the replicas; with `leader`, to the leader.
    let urls = etcd.clientUrls;
    if (route === 'leader') {
      let leader: string | undefined;
      for (let tries = 0; leader === undefined && tries < 100; tries++) {
        leader = await etcdLeaderUrl(etcd.clientUrls);
        if (leader === undefined) await new Promise((r) => setTimeout(r, 100));
      }
      if (leader === undefined) throw new Error('no etcd member names a leader');
      urls = [leader];
    }
    const putters = urls.map((u) => etcdPutter(u, clients));
    let turn = 0;
    const ready = await (putters[0] as (k: string, v: string) => Promise<boolean>)('bench/ready', 'x');
    if (!ready) throw new Error('etcd did not accept a write');
    // etcd fsyncs its WAL before it acknowledges a write, and no option against that is passed (see etcd.ts).
    rows.push(
      await scenario('etcd', clients, true, (_client, key) =>
        (putters[turn++ % putters.length] as (k: string, v: string) => Promise<boolean>)(key, value),
      ),
    );
    for (const m of etcd.members) assertRunning(m);
  }
  await cleanup();
  return rows;
}

try {
  console.log(`raft over NATS against etcd — ${machineLine()}`);
  console.log(
    `${durationMs / 1_000} s per scenario after ${warmupMs / 1_000} s warm-up, ${value.length}-byte values, clients ${clientCounts.join(', ')}, route ${route}`,
  );
  const rows: Row[] = [];
  if (systems.has('trellis')) rows.push(...(await runTrellis()));
  if (systems.has('etcd')) {
    const bin = etcdBinary();
    if (bin === undefined)
      console.log('etcd is not installed (apt-get install -y etcd-server): running trellis only');
    else rows.push(...(await runEtcd(bin)));
  }
  console.log(table(rows.map((r) => ({ ...r, fsyncBeforeAck: String(r.fsyncBeforeAck) }))));
  writeJsonLines(flags.json, rows);
} catch (err) {
  await cleanup();
  console.error(err);
  process.exitCode = 1;
}
