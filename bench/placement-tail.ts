/**
 * Where the placement tail comes from (issue 15): `npm run bench:placement-tail -- [--nodes N] [--batch N]
 * [--runs N] [--json FILE]`.
 *
 * Plans the bench's workload (bench/placement.ts: same generators and seeds) against one fixed snapshot `runs`
 * times and keeps, per batch, its wall time, its CPU time (process.cpuUsage: the machine is shared), the heap
 * it allocated (heapUsed before and after, meaningful for batches without a GC) and the GC events V8 reported
 * inside it (perf_hooks `gc` entries). It prints the percentiles with and without a GC inside, the share of
 * batches that held one, and the slowest batches. Every batch does the same work (same snapshot, requests and
 * seed), so what separates a slow batch from a median one is outside the planner's logic: a collection, or the
 * other tenants of the machine.
 *
 * `--yield` awaits one event-loop turn (setImmediate) between batches, as a scheduler planning one batch a turn
 * does (finalizers and other tasks run between batches); the default loop, like bench:placement's, never
 * yields. The minor page faults per batch (process.resourceUsage) count the fresh memory the batches touched:
 * here a fault costs ~10–25 µs, and the hot-page copies of a batch are mostly fresh memory (eighth pass in
 * docs/benchmarks.md).
 */

import { PerformanceObserver, performance } from 'node:perf_hooks';
import { ClusterIndex, planBatch } from '../placement/index.js';
import { createRng } from '../src/lib/prng.js';
import { generateCluster, generateRequests } from '../src/testing/generate.js';
import { benchArgs, machineLine, numberFlag, percentile, table, writeJsonLines } from './lib/report.js';

const { values } = benchArgs({
  options: {
    nodes: { type: 'string', default: '10000' },
    batch: { type: 'string', default: '1000' },
    runs: { type: 'string', default: '500' },
    json: { type: 'string' },
    yield: { type: 'boolean', default: false },
  },
  allowPositionals: false,
});
const nodes = numberFlag('nodes', values.nodes, { min: 1, max: 1_000_000, integer: true });
const batch = numberFlag('batch', values.batch, { min: 1, max: 100_000, integer: true });
const runs = numberFlag('runs', values.runs, { min: 1, max: 1_000_000, integer: true });
/** Batches planned before any is recorded: the JIT settles and the shared class facts fill. */
const warmupRuns = 20;

interface BatchRow {
  readonly wallMs: number;
  readonly cpuMs: number;
  readonly allocatedMiB: number;
  readonly start: number;
  readonly end: number;
  gcMs: number;
  gcCount: number;
}

/** Built in a function so the generated specs are not kept alive by the module's frame (see placement.ts). */
function buildIndex(): ClusterIndex {
  return ClusterIndex.of(generateCluster(createRng(nodes), { nodes }));
}

const index = buildIndex();
const requests = generateRequests(createRng(batch * 7 + nodes), { requests: batch });
const gcEvents: { start: number; duration: number }[] = [];
const observer = new PerformanceObserver((list) => {
  for (const e of list.getEntries()) gcEvents.push({ start: e.startTime, duration: e.duration });
});
observer.observe({ entryTypes: ['gc'] });

const rows: BatchRow[] = [];
let faults0 = 0;
for (let i = 0; i < warmupRuns + runs; i++) {
  if (values.yield) await new Promise((resolve) => setImmediate(resolve));
  if (i === warmupRuns) {
    faults0 = process.resourceUsage().minorPageFault;
  }
  const heap0 = process.memoryUsage().heapUsed;
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  planBatch(index, requests, { strategy: 'binpack', seed: 1 });
  const c = process.cpuUsage(c0);
  const t1 = performance.now();
  const heap1 = process.memoryUsage().heapUsed;
  if (i < warmupRuns) continue;
  rows.push({
    wallMs: t1 - t0,
    cpuMs: (c.user + c.system) / 1000,
    allocatedMiB: (heap1 - heap0) / 2 ** 20,
    start: t0,
    end: t1,
    gcMs: 0,
    gcCount: 0,
  });
}
const faultsPerBatch = (process.resourceUsage().minorPageFault - faults0) / runs;
// GC entries arrive asynchronously; let the observer deliver the last ones.
await new Promise((resolve) => setTimeout(resolve, 50));
observer.disconnect();
for (const r of rows) {
  for (const g of gcEvents) {
    if (g.start >= r.start && g.start < r.end) {
      r.gcMs += g.duration;
      r.gcCount++;
    }
  }
}

const sorted = (xs: number[]): number[] => xs.sort((a, b) => a - b);
function summary(label: string, list: readonly BatchRow[]): Record<string, string | number> {
  const wall = sorted(list.map((r) => r.wallMs));
  const cpu = sorted(list.map((r) => r.cpuMs));
  return {
    batches: label,
    count: list.length,
    wallP50Ms: percentile(wall, 50),
    wallP99Ms: percentile(wall, 99),
    cpuP50Ms: percentile(cpu, 50),
    cpuP90Ms: percentile(cpu, 90),
    cpuP99Ms: percentile(cpu, 99),
  };
}
const withGc = rows.filter((r) => r.gcCount > 0);
const withoutGc = rows.filter((r) => r.gcCount === 0);
const summaries = [summary('all', rows), summary('with a GC inside', withGc), summary('without', withoutGc)];
const allocated = sorted(withoutGc.map((r) => r.allocatedMiB));

console.log(
  `placement tail — ${nodes} nodes, ${batch} requests, ${runs} batches after ${warmupRuns}` +
    `${values.yield ? ', one event-loop turn between batches' : ''} — ${machineLine()}`,
);
console.log(table(summaries));
console.log(
  `\nbatches holding a GC: ${withGc.length} of ${rows.length} (${((100 * withGc.length) / rows.length).toFixed(1)}%); ` +
    `heap allocated per batch without one: p50 ${percentile(allocated, 50).toFixed(2)} MiB`,
);
console.log(`minor page faults per batch: ${faultsPerBatch.toFixed(1)}`);
const slowest = [...rows].sort((a, b) => b.cpuMs - a.cpuMs).slice(0, 8);
console.log('slowest batches by CPU time:');
for (const r of slowest) {
  console.log(
    `  cpu ${r.cpuMs.toFixed(2)} ms, wall ${r.wallMs.toFixed(2)} ms, GC inside: ${r.gcCount} (${r.gcMs.toFixed(2)} ms)`,
  );
}
writeJsonLines(values.json, [
  ...summaries.map((s) => ({ nodes, batch, ...s })),
  {
    nodes,
    batch,
    yield: values.yield,
    gcBatchShare: withGc.length / rows.length,
    allocatedMiBP50: percentile(allocated, 50),
    minorFaultsPerBatch: faultsPerBatch,
  },
]);
