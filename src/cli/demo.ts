/**
 * `trellis demo`: the placement engine on a generated cluster, in-process, no server needed. It registers a
 * realistic fleet (zones, racks, instance types, a few GPU nodes, some draining, cordoned or down), places a
 * realistic stream of sandboxes in batches, and prints what happened: how many were placed, why the rest were
 * rejected, how full each zone is, how fragmented the free capacity is, and how long planning took.
 */
import {
  batchRequestsMax,
  ClusterIndex,
  fragmentation,
  planBatch,
  type Rejection,
} from '../../placement/index.js';
import { ValidationError } from '../lib/errors.js';
import { createRng } from '../lib/prng.js';
import { generateCluster, generateRequests, zones } from '../testing/generate.js';

export interface PlacementDemoOptions {
  readonly seed: number;
  readonly nodes: number;
  readonly requests: number;
  readonly batch: number;
  readonly out: (line: string) => void;
}

const pct = (part: number, whole: number): string =>
  whole === 0 ? '0.0' : ((100 * part) / whole).toFixed(1);

export function runPlacementDemo(o: PlacementDemoOptions): void {
  // A batch of 0 would never advance through the requests (it looped forever once); refuse it here too,
  // not only at the flag, since this function is called from code as well.
  if (!Number.isSafeInteger(o.batch) || o.batch < 1 || o.batch > batchRequestsMax)
    throw new ValidationError('batch', `must be an integer in 1..${batchRequestsMax}, got ${o.batch}`);
  const rng = createRng(o.seed);
  const specs = generateCluster(rng, { nodes: o.nodes, gpuShare: 0.03, notReadyShare: 0.05 });
  let index = ClusterIndex.of(specs);
  const notReady = specs.filter((s) => s.state !== 'ready').length;
  o.out(`trellis demo — placement on a generated cluster (seed ${o.seed})`);
  o.out(
    `cluster: ${o.nodes} nodes in ${zones.length} zones, ${specs.filter((s) => s.gpu).length} with GPUs, ${notReady} draining/cordoned/down`,
  );
  // Oversubscribe on purpose, so the demo shows rejections and their reasons too.
  const requests = generateRequests(rng, { requests: o.requests, gpuShare: 0.02 });
  const rejections: Rejection[] = [];
  const batchMs: number[] = [];
  let placed = 0;
  for (let i = 0; i < requests.length; i += o.batch) {
    const t0 = performance.now();
    const plan = planBatch(index, requests.slice(i, i + o.batch), { seed: o.seed + i });
    batchMs.push(performance.now() - t0);
    index = plan.index;
    placed += plan.placements.length;
    rejections.push(...plan.rejections);
  }
  const totalMs = batchMs.reduce((a, b) => a + b, 0);
  const sorted = [...batchMs].sort((a, b) => a - b);
  o.out(
    `requests: ${requests.length} in batches of ${o.batch} (20% constrained, 10% spread or anti-affinity, 2% GPU)`,
  );
  o.out(`placed: ${placed} (${pct(placed, requests.length)}%), rejected: ${rejections.length}`);
  o.out(
    `planning: ${totalMs.toFixed(1)} ms in all, batch p50 ${(sorted[Math.floor(sorted.length / 2)] ?? 0).toFixed(2)} ms, ` +
      `max ${(sorted[sorted.length - 1] ?? 0).toFixed(2)} ms, ${Math.round((placed / totalMs) * 1000)} placements/s`,
  );
  if (rejections.length > 0) {
    o.out('rejections by reason:');
    const byCode = new Map<string, Rejection[]>();
    for (const r of rejections) byCode.set(r.code, [...(byCode.get(r.code) ?? []), r]);
    for (const [code, list] of [...byCode].sort((a, b) => b[1].length - a[1].length)) {
      o.out(
        `  ${code.padEnd(13)} ${String(list.length).padStart(6)}  e.g. ${list[0]?.requestId}: ${list[0]?.message}`,
      );
    }
  }
  o.out('utilisation of ready nodes by zone (cpu / memory):');
  for (const zone of zones) {
    let cap = { cpu: 0, memory: 0 };
    let used = { cpu: 0, memory: 0 };
    for (const v of index.nodes()) {
      if (v.state !== 'ready' || v.spec.labels.zone !== zone) continue;
      cap = { cpu: cap.cpu + v.spec.capacity.cpu, memory: cap.memory + v.spec.capacity.memory };
      used = { cpu: used.cpu + v.allocated.cpu, memory: used.memory + v.allocated.memory };
    }
    o.out(`  ${zone}: ${pct(used.cpu, cap.cpu).padStart(5)}% / ${pct(used.memory, cap.memory).padStart(5)}%`);
  }
  const f = fragmentation(index, { resources: { cpu: 2_000, memory: 4_096, disk: 8_192 } });
  o.out(
    `fragmentation: ${pct(f.strandedFraction, 1)}% of free capacity cannot host a 2 core / 4 GiB / 8 GiB sandbox; ` +
      `${f.hostable} more such sandboxes fit`,
  );
}

export { demoNodesMax, demoRequestsMax, registerClusterDemo, registerDemo } from './demo-command.js';
