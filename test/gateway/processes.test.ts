/**
 * The gateway as operators run it: three `trellis server --state scheduler --redis URL` processes on a real
 * nats-server and a real redis-server. 2,000 requests are pushed while the leader process is SIGKILLed,
 * twice (each restarted once another leads). Smaller than the 10,000-request in-process run (failover.test.ts),
 * which exercises the same gateway code faster: this one checks the wiring across processes, with the
 * leadership seen through Raft over NATS.
 *
 * Checked: one outcome per entry, the pending list empty, one placement per create request id, and the
 * events stream holds exactly one placement event per sandbox, ids strictly increasing.
 */
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, type RemoteScheduler } from '../../src/api/client.js';
import { cliMain, spawnReplica } from '../../src/testing/replica-process.js';
import { type RunningServer, startNats, startRedis } from '../../src/testing/servers.js';
import { type Fields, nodeSpec, readAll, sandboxSpec, waitFor } from './helpers.js';

const ids = ['a', 'b', 'c'];
const cluster = 'gwproc';
const procs = new Map<string, ChildProcess>();
let nats: RunningServer;
let redis: RunningServer;
let root: string;
let api: RemoteScheduler;
let client: Redis;

const start = (id: string): ChildProcess =>
  spawnReplica({
    id,
    peers: ids,
    natsUrl: nats.url,
    root,
    cluster,
    state: 'scheduler',
    extraArgs: ['--redis', redis.url, '--redis-claim-idle', '1s', '--redis-in-flight', '128'],
  });

beforeAll(async () => {
  expect(existsSync(cliMain), `${cliMain} missing: run npm run build first`).toBe(true);
  nats = await startNats();
  redis = await startRedis();
  client = new Redis(redis.url);
  root = await mkdtemp(join(tmpdir(), 'trellis-gw-proc-'));
  for (const id of ids) procs.set(id, start(id));
  api = await connect({ servers: nats.url, cluster, timeoutMs: 30_000 });
  // Three processes starting on a loaded 2-core machine can take a while to elect.
  await waitFor(
    'a leader',
    async () => (await api.status().catch(() => undefined))?.leader,
    (l) => l !== undefined,
    150_000,
  );
  for (let n = 0; n < 4; n++) await api.registerNode(nodeSpec(`n${n}`), { requestId: `node-${n}` });
}, 240_000);

afterAll(async () => {
  await api?.close();
  for (const p of procs.values()) p.kill('SIGKILL');
  client?.disconnect();
  await redis?.stop();
  await nats?.stop();
  await rm(root, { recursive: true, force: true });
});

describe('gateway processes', () => {
  it('gateway processes - 2,000 requests while the leader process is killed twice: one outcome each, none applied twice', async () => {
    const spec = JSON.stringify(sandboxSpec);
    const total = 2_000;
    const killAt = [600, 1_400];
    const killed: string[] = [];
    for (let i = 0; i < total; i += 50) {
      const p = client.pipeline();
      for (let j = i; j < i + 50; j++)
        p.xadd(
          'trellis:requests',
          '*',
          'id',
          `p-${j}`,
          'type',
          'create',
          'reply',
          'app:replies',
          'spec',
          spec,
        );
      await p.exec();
      if (killed.length < killAt.length && i >= (killAt[killed.length] as number)) {
        // Once the leader has answered some: SIGKILL it, wait for another to lead, start it again.
        await waitFor(
          'some outcomes',
          () => client.xlen('app:replies'),
          (n) => n > 0,
        );
        // Right after a restart the group may be between leaders: ask until one is named.
        const leader = (
          await waitFor(
            'a leader',
            () => api.status(),
            (st) => st.leader !== undefined,
          )
        ).leader as string;
        expect(ids).toContain(leader);
        killed.push(leader);
        procs.get(leader)?.kill('SIGKILL');
        await waitFor(
          'a new leader',
          async () => (await api.status().catch(() => undefined))?.leader,
          (l) => l !== undefined && l !== leader,
          60_000,
        );
        procs.set(leader, start(leader));
      }
      await new Promise((r) => setTimeout(r, 10));
    }
    expect(killed.length).toBe(2);
    const entries = await readAll(client, 'trellis:requests');
    expect(entries.length).toBe(total);
    const replies = (
      await waitFor(
        'every outcome',
        () => readAll(client, 'app:replies'),
        (r) => r.length >= total,
        180_000,
      )
    ).map(([, f]) => f);
    const byEntry = new Map<string, Fields[]>();
    for (const r of replies) byEntry.set(r.entry as string, [...(byEntry.get(r.entry as string) ?? []), r]);
    expect(replies.length).toBe(total);
    for (const [id] of entries) expect(byEntry.get(id)?.length, `outcomes of ${id}`).toBe(1);
    expect(replies.every((r) => r.status === 'placed')).toBe(true);
    expect(((await client.xpending('trellis:requests', 'trellis')) as [number])[0]).toBe(0);
    const sandboxes = await api.list();
    expect(sandboxes.length).toBe(total);
    expect(new Set(sandboxes.map((s) => s.requestId)).size).toBe(total);
    // Every sandbox's placement is in the events stream exactly once; ids only grow.
    const events = await waitFor(
      'the placements in the events stream',
      () => readAll(client, 'trellis:events'),
      (e) => e.filter(([, f]) => f.kind === 'sandbox').length >= total,
      60_000,
    );
    const placed = events
      .map(([, f]) => JSON.parse(f.event as string) as { kind: string; sandboxId?: string; from?: string })
      .filter((e) => e.kind === 'sandbox' && e.from === 'none')
      .map((e) => e.sandboxId);
    expect(placed.length).toBe(total);
    expect(new Set(placed)).toEqual(new Set(sandboxes.map((s) => s.id)));
    const positions = events.map(([id]) => id.split('-').map(Number) as [number, number]);
    for (let i = 1; i < positions.length; i++) {
      const [a, b] = [positions[i - 1] as [number, number], positions[i] as [number, number]];
      expect(a[0] < b[0] || (a[0] === b[0] && b[1] === a[1] + 1), `${a} then ${b}`).toBe(true);
    }
  }, 300_000);
});
