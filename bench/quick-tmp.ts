import { ClusterIndex, planBatch } from '../placement/index.js';
import { createRng } from '../src/lib/prng.js';
import { generateCluster, generateRequests } from '../src/testing/generate.js';

for (const [n, b] of [
  [1000, 1000],
  [10000, 5000],
  [100000, 1000],
] as const) {
  const rng = createRng(1);
  const t0 = performance.now();
  const idx = ClusterIndex.of(generateCluster(rng, { nodes: n }));
  const t1 = performance.now();
  const reqs = generateRequests(rng, { requests: b });
  for (let i = 0; i < 5; i++) planBatch(idx, reqs);
  const times: number[] = [];
  let plan;
  for (let i = 0; i < 20; i++) {
    const s = performance.now();
    plan = planBatch(idx, reqs, { seed: i });
    times.push(performance.now() - s);
  }
  times.sort((a, b) => a - b);
  console.log(
    n,
    b,
    'build',
    (t1 - t0).toFixed(1),
    'p50',
    times[10]?.toFixed(2),
    'max',
    times[19]?.toFixed(2),
    'placed',
    plan!.placements.length,
    'rej',
    plan!.rejections.length,
    plan!.rejections[0]?.message,
  );
}
