/**
 * metrics - `trellis server --metrics-port` over real processes: three scheduler replicas on a real nats-server,
 * each serving /metrics, /healthz and /readyz on loopback. After a leader is elected and 30 sandboxes are
 * created through the remote client, the leader's /metrics shows its term, itself as leader, placement batches
 * and 30 placements; the Raft commit, append and fsync histograms have moved on every replica; /readyz is 200
 * on all three once a leader is known. The leader's utilization gauges (per node and cluster, by resource) read
 * the 300 millicores the creates hold on the one 64,000-millicore node, every replica reports its applied-index
 * lag, and the snapshots the small `--snapshot-entries` forces show their size and duration.
 */
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, type RemoteScheduler } from '../../src/api/client.js';
import { cliMain, spawnReplica } from '../../src/testing/replica-process.js';
import { freePort, type RunningServer, startNats } from '../../src/testing/servers.js';
import { until as poll, type UntilCondition } from '../helpers/until.js';

const ids = ['a', 'b', 'c'];
const cluster = 'metrics';
const ports = new Map<string, number>();
const procs = new Map<string, ChildProcess>();
let nats: RunningServer;
let root: string;
let client: RemoteScheduler;

async function scrape(id: string, path = '/metrics'): Promise<{ status: number; body: string }> {
  const res = await fetch(`http://127.0.0.1:${ports.get(id)}${path}`);
  return { status: res.status, body: await res.text() };
}

/** Polls an async condition until it holds, or fails after `timeoutMs`. */
const untilAsync = (cond: UntilCondition<boolean>, what: string, timeoutMs = 15_000): Promise<boolean> =>
  poll(cond, what, { timeoutMs, pollMs: 50 });

function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

beforeAll(async () => {
  expect(existsSync(cliMain), `${cliMain} missing: run npm run build first`).toBe(true);
  nats = await startNats();
  root = await mkdtemp(join(tmpdir(), 'trellis-server-metrics-'));
  for (const id of ids) {
    const port = await freePort();
    ports.set(id, port);
    procs.set(
      id,
      spawnReplica({
        id,
        peers: ids,
        natsUrl: nats.url,
        root,
        cluster,
        state: 'scheduler',
        // Small snapshots so the 30 creates below make every replica take at least one.
        extraArgs: ['--metrics-port', String(port), '--snapshot-entries', '4'],
      }),
    );
  }
  client = await connect({ servers: nats.url, cluster, timeoutMs: 30_000 });
  await client.stats();
}, 120_000);

afterAll(async () => {
  await client?.close();
  for (const p of procs.values()) p.kill('SIGKILL');
  await nats?.stop();
  await rm(root, { recursive: true, force: true });
});

describe('metrics - trellis server', () => {
  it('metrics - /metrics of a scheduler replica shows Raft and placement metrics that move; /readyz is ready', async () => {
    const leader = (await client.status()).leader as string;
    expect(ids).toContain(leader);
    const before = await scrape(leader);
    expect(before.status).toBe(200);
    expect(sample(before.body, `trellis_raft_is_leader{replica="${leader}"}`)).toBe(1);
    const placedBefore = sample(before.body, 'trellis_placements_total{result="placed",reason="none"}') ?? 0;

    await client.registerNode({
      id: 'm-n1',
      capacity: { cpu: 64_000, memory: 65_536, disk: 1_000_000 },
      labels: {},
      state: 'ready',
    });
    // Eight more entries, one at a time (creates may share one batch entry), so every replica passes
    // `--snapshot-entries` and snapshots; cordoned nodes take no sandbox and count in no ready capacity.
    for (let i = 0; i < 8; i++) {
      await client.registerNode({
        id: `m-c${i}`,
        capacity: { cpu: 1_000, memory: 1_024, disk: 1_000 },
        labels: {},
        state: 'cordoned',
      });
    }
    await Promise.all(
      Array.from({ length: 30 }, () =>
        client.create({ tenant: 'm', resources: { cpu: 10, memory: 10, disk: 10 } }),
      ),
    );

    const after = await scrape(leader);
    expect(sample(after.body, 'trellis_placements_total{result="placed",reason="none"}')).toBe(
      placedBefore + 30,
    );
    expect(sample(after.body, 'trellis_placement_batch_duration_seconds_count')).toBeGreaterThan(0);
    expect(sample(after.body, 'trellis_placement_batch_size_sum')).toBeGreaterThanOrEqual(30);
    expect(sample(after.body, `trellis_raft_term{replica="${leader}"}`)).toBeGreaterThan(0);
    expect(
      sample(after.body, `trellis_raft_commit_latency_seconds_count{replica="${leader}"}`),
    ).toBeGreaterThan(0);
    // Set by the leader once per heartbeat tick from committed state: 30 x 10 millicores of 64,000.
    const cpuShare = 300 / 64_000;
    await untilAsync(async () => {
      const m = (await scrape(leader)).body;
      return sample(m, 'trellis_cluster_utilization_ratio{resource="cpu"}') === cpuShare;
    }, 'the leader reports the cluster cpu utilization');
    const util = (await scrape(leader)).body;
    expect(sample(util, 'trellis_node_utilization_ratio{node="m-n1",resource="cpu"}')).toBe(cpuShare);
    expect(sample(util, 'trellis_node_utilization_ratio{node="m-n1",resource="memory"}')).toBe(300 / 65_536);
    expect(sample(util, 'trellis_cluster_utilization_ratio{resource="gpu"}')).toBe(0);
    for (const id of ids) {
      await untilAsync(async () => {
        const m = (await scrape(id)).body;
        return (
          (sample(m, `trellis_raft_append_latency_seconds_count{replica="${id}"}`) ?? 0) > 0 &&
          (sample(m, `trellis_raft_fsync_latency_seconds_count{replica="${id}"}`) ?? 0) > 0
        );
      }, `replica ${id} reports append and fsync latency`);
      await untilAsync(async () => {
        const m = (await scrape(id)).body;
        return (
          (sample(m, `trellis_snapshot_bytes{replica="${id}"}`) ?? 0) > 0 &&
          (sample(m, `trellis_snapshot_duration_seconds_count{replica="${id}"}`) ?? 0) > 0
        );
      }, `replica ${id} reports a snapshot's size and duration`);
      expect(
        sample((await scrape(id)).body, `trellis_raft_applied_index_lag{replica="${id}"}`),
      ).toBeGreaterThanOrEqual(0);
      expect((await scrape(id, '/readyz')).status).toBe(200);
      expect((await scrape(id, '/healthz')).status).toBe(200);
    }
  });
});
