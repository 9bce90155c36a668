/**
 * `npm run bench:fuzz -- [--seconds N] [--seed N] [--nodes N] [--json FILE]`: hostile frames on every subject of
 * a live group of processes. It starts nats-server, three `trellis server` replicas and `trellis worker`
 * processes (src/load/cluster.ts, as the load benchmark does), then for `--seconds` publishes and requests, on
 * every Raft, API, node-command, node-status and events subject of the cluster, frames drawn from a seeded
 * generator: random bytes, empty and near-1 MiB frames, and msgpack of random structures built from the field
 * names the protocols use, with hostile values (`__proto__`, NaN, 2^53, huge strings). Meanwhile a client keeps
 * creating sandboxes (waiting for running) and terminating them, as a user would.
 *
 * It fails (exit 1) when a process died, when the group no longer takes a create through to running, or when
 * the replicas' state digests differ at one applied index. A soak, not a test: per-component garbage tests
 * live in test/api/garbage.test.ts, test/raft/nats/transport.test.ts and test/worker/nats-binding.test.ts.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { encode } from '@msgpack/msgpack';
import { connect as natsConnect } from 'nats';
import { raftSubject } from '../raft/transport/nats.js';
import { connect } from '../src/api/client.js';
import { apiNodeSubject, apiReplicaSubject, apiSubject } from '../src/api/protocol.js';
import { createRng, type Rng } from '../src/lib/prng.js';
import { LoadCluster } from '../src/load/cluster.js';
import { eventsSubject } from '../src/nats/events.js';
import { nodeCommandSubject, nodeStatusSubject } from '../src/worker/nats-binding.js';
import { benchArgs, numberFlag } from './lib/report.js';

const { values } = benchArgs({
  options: {
    seconds: { type: 'string', default: '30' },
    seed: { type: 'string', default: '1' },
    nodes: { type: 'string', default: '6' },
    json: { type: 'string' },
  },
});
const seconds = numberFlag('seconds', values.seconds, { min: 1, max: 3_600, integer: true });
const seed = numberFlag('seed', values.seed, { min: -(2 ** 31), max: 2 ** 31 - 1, integer: true });
const nodeCount = numberFlag('nodes', values.nodes, { min: 1, max: 100, integer: true });

/** The largest frame sent: just under nats-server's default max_payload of 1 MiB. */
const frameBytesMax = (1 << 20) - 1_024;
const fieldNames = [
  'v',
  'id',
  'type',
  'kind',
  'term',
  'from',
  'to',
  'entries',
  'index',
  'commit',
  'msgs',
  'call',
  'op',
  'deadline',
  'atMs',
  'budgetMs',
  'spec',
  'items',
  'sandboxId',
  'nodeId',
  'state',
  'seq',
  'events',
  'prev',
  'by',
  'ok',
  'result',
  'error',
  'resources',
  'cpu',
  'memory',
  'disk',
  'requestId',
  'reports',
];

function hostileValue(rng: Rng): unknown {
  return rng.pick<unknown>([
    null,
    true,
    -1,
    0,
    2 ** 53,
    -(2 ** 31),
    1e308,
    Number.NaN,
    '',
    'x'.repeat(rng.int(1, 5_000)),
    '__proto__',
    'constructor',
    {},
    [],
    new Uint8Array(rng.int(0, 64)),
    'trellis.>',
    '../../etc/passwd',
    '\u0000\uffff',
  ]);
}

function randomValue(rng: Rng, depth: number): unknown {
  const r = rng.next();
  if (depth > 4 || r < 0.3) return hostileValue(rng);
  if (r < 0.65) {
    const o: Record<string, unknown> = {};
    for (let i = rng.int(1, 8); i > 0; i--) o[rng.pick(fieldNames)] = randomValue(rng, depth + 1);
    return o;
  }
  return Array.from({ length: rng.int(0, 6) }, () => randomValue(rng, depth + 1));
}

function randomFrame(rng: Rng): Uint8Array {
  const r = rng.next();
  if (r < 0.2) return Uint8Array.from({ length: rng.int(1, 512) }, () => rng.int(0, 256));
  if (r < 0.23) return new Uint8Array(rng.int(frameBytesMax / 2, frameBytesMax));
  if (r < 0.26) return new Uint8Array(0);
  return encode(randomValue(rng, 0));
}

async function main(): Promise<number> {
  const dir = await mkdtemp(join(tmpdir(), 'trellis-fuzz-'));
  const name = 'fuzz';
  const cluster = await LoadCluster.start({
    dir,
    cluster: name,
    replicas: 3,
    nodes: nodeCount,
    nodeShape: { cpu: 16_000, memory: 65_536, disk: 100_000 },
    tickMs: 20,
  });
  const nc = await natsConnect({ servers: cluster.natsUrl, name: 'fuzz' });
  const client = await connect({ servers: [cluster.natsUrl], cluster: name, timeoutMs: 10_000 });
  const failures: string[] = [];
  try {
    // The workers register their nodes once they are up; the node subjects are fuzzed by id.
    let nodeIds: string[] = [];
    for (let round = 0; round < 300 && nodeIds.length < nodeCount; round++) {
      nodeIds = (await client.nodes()).filter((n) => n.state === 'ready').map((n) => n.id);
      if (nodeIds.length < nodeCount) await sleep(100);
    }
    if (nodeIds.length < nodeCount) throw new Error(`only ${nodeIds.length} of ${nodeCount} nodes came up`);
    const subjects = [
      apiSubject(name),
      eventsSubject(name),
      ...cluster.replicaIds.flatMap((r) => [raftSubject(name, r), apiReplicaSubject(name, r)]),
      ...nodeIds.flatMap((n) => [
        apiNodeSubject(name, n),
        nodeCommandSubject(name, n),
        nodeStatusSubject(name, n),
      ]),
    ];
    const rng = createRng(seed);
    const user = {
      created: 0,
      running: 0,
      terminated: 0,
      refused: {} as Record<string, number>,
      /** The first message of each refusal code, to tell the sim driver's injected failures from damage. */
      examples: {} as Record<string, string>,
    };
    const endMs = Date.now() + seconds * 1_000;
    // A user's traffic beside the fuzz: creates waiting for running, then terminated.
    const userLoop = (async () => {
      while (Date.now() < endMs) {
        try {
          user.created++;
          const sb = await client.create(
            { tenant: 'fuzz', resources: { cpu: 100, memory: 64, disk: 64 } },
            { wait: 'running', runningWaitMs: 10_000 },
          );
          user.running++;
          await client.terminate(sb.id);
          user.terminated++;
        } catch (err) {
          const code = (err as { code?: string }).code ?? 'UNKNOWN';
          user.refused[code] = (user.refused[code] ?? 0) + 1;
          user.examples[code] ??= (err as Error).message;
        }
      }
    })();
    let sent = 0;
    let answered = 0;
    while (Date.now() < endMs) {
      for (let i = 0; i < 50; i++) {
        const subject = rng.pick(subjects);
        const frame = randomFrame(rng);
        if (rng.chance(0.3))
          nc.request(subject, frame, { timeout: 250 }).then(
            () => answered++,
            () => {},
          );
        else nc.publish(subject, frame);
        sent++;
      }
      await nc.flush();
      await sleep(5);
    }
    await userLoop;
    await sleep(2_000);
    const dead = cluster.members.filter((m) => !cluster.running(m)).map((m) => m.name);
    if (dead.length > 0) failures.push(`processes died: ${dead.join(', ')}`);
    // After the storm, the group still takes creates through to running.
    let after = 0;
    for (let i = 0; i < 10; i++) {
      try {
        const sb = await client.create(
          { tenant: 'fuzz', resources: { cpu: 100, memory: 64, disk: 64 } },
          { wait: 'running', runningWaitMs: 10_000 },
        );
        await client.terminate(sb.id);
        after++;
      } catch (err) {
        failures.push(`a create after the fuzz failed: ${(err as Error).message}`);
        break;
      }
    }
    const digests = await digestsAtOneIndex(client, cluster.replicaIds);
    if (digests === undefined) failures.push('replicas did not reach one applied index within 10 s');
    else if (new Set(digests.values()).size !== 1) failures.push(`replica digests differ: ${[...digests]}`);
    const report = {
      seconds,
      seed,
      nodes: nodeIds.length,
      sent,
      answered,
      user,
      createsAfter: after,
      failures,
    };
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
    if (values.json !== undefined) await writeFile(values.json, `${JSON.stringify(report, null, 2)}\n`);
  } finally {
    await client.close();
    await nc.close();
    await cluster.stop();
    await rm(dir, { recursive: true, force: true });
  }
  return failures.length === 0 ? 0 : 1;
}

/** Every replica's state digest, once all answer at one applied index (undefined if they do not in 10 s). */
async function digestsAtOneIndex(
  client: Awaited<ReturnType<typeof connect>>,
  ids: readonly string[],
): Promise<Map<string, string> | undefined> {
  for (let round = 0; round < 100; round++) {
    const all = await Promise.all(ids.map((replica) => client.status({ replica, digest: true })));
    if (new Set(all.map((s) => s.digestApplied)).size === 1)
      return new Map(all.map((s) => [s.replica, s.digest as string]));
    await sleep(100);
  }
  return undefined;
}

process.exitCode = await main();
