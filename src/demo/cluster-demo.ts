/**
 * The cluster demo behind `trellis cluster-demo`: a 3-replica Raft group in process, a few hundred registered nodes,
 * thousands of creates and terminates, a leadership move in the middle, and a summary a person can read:
 * how many were placed, how many refused and why, batch latency and placements per second.
 */
import type { PlacementRequest } from '../../placement/index.js';
import type { SandboxSpec } from '../../scheduler/commands.js';
import type { Sandbox } from '../../scheduler/types.js';
import { TrellisError } from '../lib/errors.js';
import { createRng } from '../lib/prng.js';
import { startTestCluster } from '../testing/cluster.js';
import { generateRequests } from '../testing/generate.js';

export interface ClusterDemoOptions {
  readonly seed?: number;
  /** Registered nodes. Default 300. */
  readonly nodes?: number;
  /** Creates submitted. Default 5000. */
  readonly sandboxes?: number;
  /** Where the summary goes, line by line. Default stdout. */
  readonly out?: { write(text: string): unknown };
}

export interface ClusterDemoSummary {
  readonly placed: number;
  readonly terminated: number;
  readonly refused: Readonly<Record<string, number>>;
  readonly placedSeconds: number;
  readonly placementsPerSec: number;
  readonly batches: number;
  readonly meanBatch: number;
  readonly meanBatchLatencyMs: number;
  readonly replicasEqual: boolean;
}

function specOf(r: PlacementRequest): SandboxSpec {
  return {
    tenant: r.tenant,
    resources: r.resources,
    ...(r.gpu === undefined ? {} : { gpu: r.gpu }),
    ...(r.priority === undefined ? {} : { priority: r.priority }),
    ...(r.constraints === undefined ? {} : { constraints: [...r.constraints] }),
    ...(r.spread === undefined ? {} : { spread: r.spread }),
    ...(r.antiAffinity === undefined ? {} : { antiAffinity: r.antiAffinity }),
    ...(r.imageId === undefined ? {} : { image: r.imageId }),
  } as SandboxSpec;
}

/** Runs the demo and prints its summary; returns the figures too. */
export async function runClusterDemo(options: ClusterDemoOptions = {}): Promise<ClusterDemoSummary> {
  const seed = options.seed ?? 1;
  const out = options.out ?? process.stdout;
  const total = options.sandboxes ?? 5000;
  const rng = createRng(seed);
  const cluster = await startTestCluster({
    seed,
    nodes: options.nodes ?? 300,
    pipeline: { pendingTimeoutMs: 250, heartbeatIntervalMs: 50 },
  });
  const s = cluster.scheduler;
  const requests = generateRequests(rng, { requests: total, tenants: 8 });
  const firstTenant = requests[0]?.tenant ?? 't0';
  await s.setQuota(firstTenant, { sandboxes: 100 });
  out.write(
    `trellis demo: 3 replicas, ${cluster.nodes.length} nodes, ${total} creates (seed ${seed}); tenant ${firstTenant} limited to 100 sandboxes\n`,
  );

  const refused = new Map<string, number>();
  const refuse = (err: unknown): void => {
    const key = err instanceof TrellisError ? `${err.name}${reasonOf(err)}` : String(err);
    refused.set(key, (refused.get(key) ?? 0) + 1);
  };
  const placed: Sandbox[] = [];
  let terminated = 0;
  const startMs = performance.now();
  const pending: Promise<void>[] = [];
  for (let i = 0; i < requests.length; i++) {
    const r = requests[i] as PlacementRequest;
    // A few malformed specs show that bad input is refused up front with the field named.
    const spec = i % 997 === 5 ? { ...specOf(r), resources: { ...r.resources, cpu: -1 } } : specOf(r);
    pending.push(
      s.create(spec, { requestId: `demo-${seed}-${i}` }).then(
        (sb) => void placed.push(sb),
        (err: unknown) => refuse(err),
      ),
    );
    if (i === Math.floor(requests.length / 2)) {
      const leader = cluster.changeLeader();
      out.write(
        `  leadership moved to replica ${leader} mid-run; creates in flight retry there with their request ids\n`,
      );
    }
    // Terminate some of what is placed as we go, so capacity churns and the pending queue wakes.
    if (i % 4 === 3 && placed.length > 0) {
      const victim = placed.splice(rng.int(0, placed.length), 1)[0] as Sandbox;
      pending.push(s.terminate(victim.id).then(() => void terminated++, refuse));
    }
    if (i % 500 === 499) await new Promise((resolve) => setImmediate(resolve));
  }
  await Promise.all(pending);
  const placedSeconds = (performance.now() - startMs) / 1000;
  await cluster.converged();
  const stats = s.stats();
  const summary: ClusterDemoSummary = {
    placed: stats.placed,
    terminated,
    refused: Object.fromEntries([...refused].sort((a, b) => b[1] - a[1])),
    placedSeconds,
    placementsPerSec: stats.placed / placedSeconds,
    batches: stats.batches,
    meanBatch: stats.meanBatch,
    meanBatchLatencyMs: stats.meanBatchLatencyMs,
    replicasEqual: cluster.replicasEqual(),
  };
  out.write(`  placed     ${summary.placed} (${terminated} of them terminated again)\n`);
  out.write(`  refused    ${total - summary.placed}\n`);
  for (const [why, n] of Object.entries(summary.refused)) out.write(`    ${String(n).padStart(6)}  ${why}\n`);
  out.write(
    `  batches    ${summary.batches}, mean ${summary.meanBatch.toFixed(1)} creates, mean latency ${summary.meanBatchLatencyMs.toFixed(2)} ms\n`,
  );
  out.write(
    `  throughput ${summary.placementsPerSec.toFixed(0)} placements/s over ${placedSeconds.toFixed(2)} s\n`,
  );
  out.write(`  replicas   ${summary.replicasEqual ? 'all 3 hold the same state' : 'DIVERGED'}\n`);
  await cluster.close();
  return summary;
}

function reasonOf(err: TrellisError): string {
  const reason = err.details.reason;
  if (typeof reason === 'string') return ` (${reason.split(':')[0]})`;
  if (err.name === 'ValidationError') return ` (${err.message.split(':')[0]})`;
  return '';
}
