/**
 * The scheduler over a NATS cluster: four nats-servers routed into one cluster on loopback; three
 * `trellis server --state scheduler` replicas, each given only its own NATS node (a, b, c on nodes 0, 1, 2),
 * and the client on the fourth. Raft traffic and API calls cross the routes. Then the leader's NATS node is
 * killed: the leader's connection fails over to a node it learnt of from the cluster's gossip (or another
 * replica takes over), and the client keeps creating with no acknowledged create lost.
 */
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SandboxSpec } from '../../scheduler/commands.js';
import { connect, type RemoteScheduler } from '../../src/api/client.js';
import { cliMain, spawnReplica } from '../../src/testing/replica-process.js';
import { type NatsCluster, startNatsCluster } from '../../src/testing/servers.js';

const ids = ['a', 'b', 'c'];
const cluster = 'routed';
const spec: SandboxSpec = { tenant: 'routed', resources: { cpu: 100, memory: 64, disk: 64 } };
let nats: NatsCluster;
let root: string;
let client: RemoteScheduler;
const procs = new Map<string, ChildProcess>();

beforeAll(async () => {
  expect(existsSync(cliMain), `${cliMain} missing: run npm run build first`).toBe(true);
  nats = await startNatsCluster(4, 'trellis-routed');
  root = await mkdtemp(join(tmpdir(), 'trellis-routed-'));
  ids.forEach((id, i) => {
    const natsUrl = nats.servers[i]?.url as string;
    procs.set(id, spawnReplica({ id, peers: ids, natsUrl, root, cluster, state: 'scheduler' }));
  });
  // The client knows only the fourth node; the first answer comes once a leader is elected.
  client = await connect({ servers: nats.servers[3]?.url as string, cluster, timeoutMs: 30_000 });
  await client.registerNode({
    id: 'routed-n1',
    capacity: { cpu: 64_000, memory: 65_536, disk: 1e6 },
    labels: {},
    state: 'ready',
  });
}, 120_000);
afterAll(async () => {
  await client?.close();
  for (const p of procs.values()) p.kill('SIGKILL');
  await nats?.stop();
  if (root !== undefined) await rm(root, { recursive: true, force: true });
});

describe('service - replicas on different nodes of a NATS cluster', () => {
  it('service - creates go through the routes and survive the loss of the leader’s NATS node', async () => {
    const made: string[] = [];
    for (let i = 0; i < 10; i++) made.push((await client.create(spec, { requestId: `routed-${i}` })).id);
    const before = await client.status();
    const leader = before.leader as string;
    expect(ids).toContain(leader);
    // Every replica answers on its own subject, across the routes.
    for (const replica of ids) expect((await client.status({ replica })).replica).toBe(replica);

    await nats.servers[ids.indexOf(leader)]?.kill();
    for (let i = 10; i < 20; i++) made.push((await client.create(spec, { requestId: `routed-${i}` })).id);
    const listed = (await client.list({ tenant: 'routed' })).map((s) => s.id);
    expect(listed.sort()).toEqual([...made].sort());

    // The three replicas still reach one another: they converge on one state.
    let hashes: string[] = [];
    for (let round = 0; round < 100; round++) {
      const all = await Promise.all(ids.map((replica) => client.status({ replica, digest: true })));
      if (new Set(all.map((s) => s.digestApplied)).size === 1) {
        hashes = all.map((s) => s.digest as string);
        break;
      }
      await sleep(100);
    }
    expect(hashes).toHaveLength(3);
    expect(new Set(hashes).size).toBe(1);
  });
});
