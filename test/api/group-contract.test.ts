/**
 * The SchedulerApi contract against the remote client over a real 3-process group: three
 * `trellis server --state scheduler` processes (one scheduler replica each, Raft over NATS, file storage)
 * and a nats-server. The client reaches the group only through NATS; each test works in its own namespace
 * of the one cluster (contract.ts). Then the leader is killed with SIGKILL and the cluster must keep
 * every acknowledged create and answer again.
 */
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, type RemoteScheduler } from '../../src/api/client.js';
import { cliMain, spawnReplica } from '../../src/testing/replica-process.js';
import { type RunningServer, startNats } from '../../src/testing/servers.js';
import { schedulerContract } from './contract.js';

const ids = ['a', 'b', 'c'];
const cluster = 'group';
let nats: RunningServer;
let root: string;
let client: RemoteScheduler;
const procs = new Map<string, ChildProcess>();

beforeAll(async () => {
  expect(existsSync(cliMain), `${cliMain} missing: run npm run build first`).toBe(true);
  nats = await startNats();
  root = await mkdtemp(join(tmpdir(), 'trellis-group-'));
  for (const id of ids) {
    procs.set(id, spawnReplica({ id, peers: ids, natsUrl: nats.url, root, cluster, state: 'scheduler' }));
  }
  client = await connect({ servers: nats.url, cluster, timeoutMs: 30_000 });
  // The first answer comes once a leader is elected.
  await client.stats();
}, 120_000);
afterAll(async () => {
  await client?.close();
  for (const p of procs.values()) p.kill('SIGKILL');
  await nats?.stop();
  await rm(root, { recursive: true, force: true });
});

schedulerContract('remote client on a 3-process group', async () => ({ api: client, close: async () => {} }));

describe('remote client on a 3-process group - faults', () => {
  it('remote client on a 3-process group - kill -9 of the leader loses no acknowledged create', async () => {
    const status = await client.status();
    const leader = status.leader as string;
    expect(ids).toContain(leader);
    await client.registerNode({
      id: 'fault-n1',
      capacity: { cpu: 64_000, memory: 65_536, disk: 1e6 },
      labels: {},
      state: 'ready',
    });
    const made: string[] = [];
    for (let i = 0; i < 20; i++)
      made.push((await client.create({ tenant: 'fault', resources: { cpu: 10, memory: 10, disk: 10 } })).id);
    procs.get(leader)?.kill('SIGKILL');
    // Through the election, with the same request ids on retry.
    for (let i = 0; i < 5; i++)
      made.push((await client.create({ tenant: 'fault', resources: { cpu: 10, memory: 10, disk: 10 } })).id);
    const after = await client.status();
    expect(after.leader).not.toBe(leader);
    const listed = (await client.list({ tenant: 'fault' })).map((s) => s.id);
    expect(listed.sort()).toEqual([...made].sort());
  });
});
