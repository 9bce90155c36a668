/**
 * `npm run bench:scheduler -- --json FILE [--sandboxes N] [--nodes N]`: 3 in-process replicas, 1,000
 * generated nodes, 100,000 creates submitted as fast as the API takes them. Measures the time until all
 * are committed as placed, placements per second, p50/p99 from `create` to its resolution, batches per
 * second and the mean batch size. Seeds are fixed, so runs are comparable.
 *
 * Storage is in memory: the Raft driver with file storage had not landed, so there is no fsync in
 * these figures.
 */
import { writeFileSync } from 'node:fs';
import type { PlacementRequest } from '../placement/index.js';
import { createRng } from '../src/lib/prng.js';
import { startTestCluster } from '../src/testing/cluster.js';
import { generateRequests } from '../src/testing/generate.js';

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i < 0 ? undefined : process.argv[i + 1];
}

const sandboxes = Number(arg('sandboxes') ?? 100_000);
const nodes = Number(arg('nodes') ?? 1000);
const jsonPath = arg('json');

const cluster = await startTestCluster({ seed: 7, nodes, pipeline: { pendingTimeoutMs: 60_000 } });
const s = cluster.scheduler;
// Small shapes only, so 100,000 of them fit on 1,000 nodes and every create can be placed.
const requests = generateRequests(createRng(7), {
  requests: sandboxes,
  tenants: 16,
  constraintShare: 0.1,
  gpuShare: 0,
}).map((r: PlacementRequest) => ({
  tenant: r.tenant,
  resources: { cpu: 250, memory: 256, disk: 512 },
  ...(r.constraints === undefined ? {} : { constraints: [...r.constraints] }),
}));
const latenciesMs = new Float64Array(sandboxes);
let placed = 0;
let failed = 0;
const startMs = performance.now();
const all: Promise<void>[] = [];
for (let i = 0; i < sandboxes; i++) {
  const t0 = performance.now();
  all.push(
    s.create(requests[i], { requestId: `b-${i}` }).then(
      () => {
        latenciesMs[i] = performance.now() - t0;
        placed++;
      },
      () => {
        latenciesMs[i] = performance.now() - t0;
        failed++;
      },
    ),
  );
}
await Promise.all(all);
const placedSeconds = (performance.now() - startMs) / 1000;
const sorted = [...latenciesMs].sort((a, b) => a - b);
const stats = s.stats();
const result = {
  sandboxes,
  nodes,
  placed,
  failed,
  placedSeconds: Number(placedSeconds.toFixed(3)),
  placementsPerSec: Math.round(placed / placedSeconds),
  p50Ms: Number((sorted[Math.floor(sorted.length * 0.5)] ?? 0).toFixed(1)),
  p99Ms: Number((sorted[Math.floor(sorted.length * 0.99)] ?? 0).toFixed(1)),
  batchesPerSec: Number((stats.batches / placedSeconds).toFixed(1)),
  meanBatch: Number(stats.meanBatch.toFixed(1)),
  heapMiB: Math.round(process.memoryUsage().heapUsed / 2 ** 20),
};
console.log(JSON.stringify(result));
if (jsonPath !== undefined) writeFileSync(jsonPath, `${JSON.stringify(result, null, 2)}\n`);
cluster.close();
