/**
 * GPU placement quality (issue 16 item 3): the FGD paper's protocol — inflation of a GPU-sharing workload to
 * 100% of the cluster's GPU capacity, recording the share of GPUs allocated — with the real placement code,
 * for each policy, one request at a time and in batches of 100.
 *
 *   npm run bench:gpu-policies -- [--json FILE] [--target-pct 100] [--seed N]
 *
 * The cluster and the size mix are synthetic, shaped after the Alibaba GPU v2023 trace ("openb"): the public
 * files cannot be downloaded here, so the node models and counts follow the first 457 rows of
 * openb_node_list_gpu_node.csv scaled to its 1,213 nodes, and the pod size mix follows the first 226 rows of
 * openb_pod_list_default.csv (docs/simulation.md says so beside the figures).
 */
import { writeFileSync } from 'node:fs';
import type { SandboxSpec } from '../src/index.js';
import { createRng } from '../src/lib/prng.js';
import { type Arrival, type ClusterSpec, simulate } from '../src/sim/index.js';
import { benchArgs, numberFlag } from './lib/report.js';

const { values } = benchArgs({
  options: {
    json: { type: 'string' },
    'target-pct': { type: 'string', default: '100' },
    seed: { type: 'string', default: '1' },
    /** Score every feasible node instead of the bounded candidate walk. */
    exact: { type: 'boolean', default: false },
  },
});
const targetPct = numberFlag('target-pct', values['target-pct'], { min: 1, max: 1000 });
const seed = numberFlag('seed', values.seed, { min: -(2 ** 31), max: 2 ** 31 - 1, integer: true });

// [model, cpu cores, memory GiB, GPUs, nodes] — counts scaled from the stored sample to 1,213 nodes.
const nodeShapes: [string, number, number, number, number][] = [
  ['G2', 96, 384, 8, 660],
  ['T4', 104, 512, 2, 290],
  ['P100', 16, 120, 2, 105],
  ['P100', 64, 256, 2, 58],
  ['G3', 128, 768, 8, 45],
  ['V100M16', 32, 128, 4, 35],
  ['V100M32', 96, 768, 8, 22],
  ['T4', 96, 384, 4, 22],
  ['V100M16', 64, 256, 8, 10],
  ['V100M32', 48, 368, 4, 8],
  ['V100M16', 8, 32, 1, 8],
  ['P100', 8, 60, 1, 5],
];
const cluster: ClusterSpec = {
  nodes: nodeShapes.map(([model, cores, gib, gpus, count]) => ({
    shape: `${model}-${cores}c-${gib}g-${gpus}`,
    count,
    capacity: { cpu: cores * 1000, memory: gib * 1024, disk: 1 << 20 },
    gpu: { model, count: gpus },
    labels: { gpuModel: model },
  })),
};

// [weight, cpu milli, memory MiB, num_gpu, gpu_milli] — from the stored sample of the default pod list.
const podMix: [number, number, number, number, number][] = [
  [56, 3152, 5600, 1, 1000],
  [8, 3152, 5600, 1, 810],
  [14, 12000, 16384, 1, 1000],
  [16, 16000, 32768, 1, 1000],
  [10, 12000, 24576, 1, 1000],
  [6, 8000, 16384, 1, 1000],
  [12, 18708, 64512, 1, 1000],
  [4, 16000, 65536, 1, 1000],
  [3, 4000, 24576, 1, 1000],
  [12, 8000, 30517, 1, 470],
  [9, 8000, 30517, 1, 320],
  [4, 8000, 30517, 1, 220],
  [12, 4000, 15258, 1, 220],
  [5, 4000, 15258, 1, 320],
  [5, 4000, 15258, 1, 160],
  [3, 4000, 15258, 1, 110],
  [8, 6000, 12288, 1, 460],
  [6, 11908, 47104, 1, 470],
  [5, 11908, 47104, 1, 1000],
  [4, 4152, 10600, 1, 810],
  [4, 4152, 10600, 1, 550],
  [9, 8000, 30517, 0, 0],
  [2, 20000, 65536, 0, 0],
  [3, 88000, 327680, 8, 1000],
];

function workload(count: number): Arrival[] {
  const rng = createRng(seed);
  const total = podMix.reduce((s, p) => s + p[0], 0);
  const specs: SandboxSpec[] = podMix.map(([, cpu, memory, n, milli]) => ({
    tenant: 'openb',
    resources: { cpu, memory, disk: 0 },
    ...(n === 0 ? {} : n === 1 && milli < 1000 ? { gpu: { milli } } : { gpu: { count: n } }),
  }));
  const out: Arrival[] = [];
  for (let i = 0; i < count; i++) {
    let x = rng.next() * total;
    let k = 0;
    while (x >= (podMix[k]?.[0] ?? 0) && k < podMix.length - 1) x -= podMix[k++]?.[0] ?? 0;
    out.push({ id: `p${i}`, atMs: i, spec: specs[k] as SandboxSpec, lifetimeMs: Number.POSITIVE_INFINITY });
  }
  return out;
}

const arrivals = workload(20_000);
const policies = [
  { name: 'dot', scorer: 'dot' as const },
  { name: 'dominant', scorer: 'dominant' as const },
  { name: 'gpu-dot', scorer: 'gpu-dot' as const },
  { name: 'gpu-bestfit', scorer: 'gpu-bestfit' as const },
  { name: 'fgd', scorer: 'fgd' as const },
];
const rows: Record<string, string | number>[] = [];
for (const batch of [1, 100]) {
  for (const p of policies) {
    const t0 = performance.now();
    const r = simulate(cluster, arrivals, {
      seed,
      protocol: 'inflation',
      inflation: { targetPct, resource: 'gpu' },
      policy: {
        ...p,
        batchSize: batch,
        ...(values.exact ? { candidateLimit: 100_000, exactScanNodesMax: 100_000 } : {}),
      },
    });
    const last = r.inflation?.[r.inflation.length - 1];
    const at = (pct: number): number =>
      r.inflation?.find((q) => q.arrivedPct >= pct)?.allocatedPct.gpu ?? Number.NaN;
    rows.push({
      policy: p.name,
      batch,
      exact: values.exact ? 'yes' : 'no',
      arrivedPct: Number((last?.arrivedPct ?? 0).toFixed(1)),
      gpuAllocatedPct: Number((last?.allocatedPct.gpu ?? 0).toFixed(2)),
      at90: Number(at(90).toFixed(2)),
      cpuAllocatedPct: Number((last?.allocatedPct.cpu ?? 0).toFixed(2)),
      rejected: r.totals.rejected,
      seconds: Number(((performance.now() - t0) / 1000).toFixed(1)),
    });
    console.log(JSON.stringify(rows[rows.length - 1]));
  }
}
console.table(rows);
if (values.json !== undefined)
  writeFileSync(values.json, `${JSON.stringify({ targetPct, seed, nodes: 1213, rows }, null, 2)}\n`);
