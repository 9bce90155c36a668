/**
 * Capacity simulation speed: 1,000,000 events (500,000 arrivals and their 500,000 departures) on 5,000 nodes,
 * through the production admission, planner, verifier and state machine (src/sim). Fixed seed.
 *
 *   npm run bench:simulate -- --json FILE [--arrivals N] [--nodes N] [--window-ms N] [--digest]
 *   npm run bench:simulate -- --churn
 *
 * Writes {"events","nodes","seconds","eventsPerSec"} (plus the run's shape) to FILE and prints it. With
 * `--digest`, the run also records every placement and the output gains `digest`: a SHA-256 of the whole
 * report but its timing (totals, samples, histograms, each request's node), so a speed change can be shown
 * to change no result by comparing two builds' digests (not for timing: recording costs time and memory).
 * `--churn` instead prints the digests of two small runs that take the paths the benchmark does not: GPUs,
 * suspends and resumes, node failures, a drain and returns, a tenant quota, pending requests that time out,
 * batch sizes 7 and the default, windows 0 and 100 ms (compare them between builds as well).
 */
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { parseCluster, parseWorkload, simulate, syntheticArrivals } from '../src/sim/index.js';
import { benchArgs, numberFlag } from './lib/report.js';

const { values } = benchArgs({
  options: {
    json: { type: 'string' },
    arrivals: { type: 'string', default: '500000' },
    nodes: { type: 'string', default: '5000' },
    'window-ms': { type: 'string', default: '100' },
    digest: { type: 'boolean', default: false },
    churn: { type: 'boolean', default: false },
  },
});
if (values.churn) {
  churnDigests();
  process.exit(0);
}
const arrivalsCount = numberFlag('arrivals', values.arrivals, { min: 1, max: 10_000_000, integer: true });
const nodes = numberFlag('nodes', values.nodes, { min: 2, max: 100_000, integer: true });
const windowMs = numberFlag('window-ms', values['window-ms'], { min: 0, max: 3_600_000 });

const cluster = parseCluster({
  nodes: [
    {
      shape: 'c32',
      count: Math.floor(nodes * 0.8),
      capacity: { cpu: 32000, memory: 131072, disk: 1000000 },
      zones: ['a', 'b', 'c'],
    },
    {
      shape: 'm64',
      count: nodes - Math.floor(nodes * 0.8),
      capacity: { cpu: 64000, memory: 524288, disk: 2000000 },
      zones: ['a', 'b', 'c'],
    },
  ],
});
// 1,000 arrivals per virtual second living 60 s on average: about 60,000 live sandboxes, ~60% of cpu.
const workload = parseWorkload({
  arrivals: { kind: 'poisson', ratePerS: (1000 * nodes) / 5000 },
  count: arrivalsCount,
  sizes: [
    { weight: 4, cpu: 1000, memory: 2048, disk: 8192 },
    { weight: 2, cpu: 2000, memory: 8192, disk: 16384 },
    { weight: 1, cpu: 4000, memory: 16384, disk: 32768 },
    { weight: 0.5, cpu: 8000, memory: 65536, disk: 65536 },
  ],
  lifetime: { kind: 'exponential', meanS: 60 },
  tenants: [{ name: 'a' }, { name: 'b' }, { name: 'c' }],
});
if (!('arrivals' in workload)) throw new Error('synthetic workload expected');
const arrivals = [...syntheticArrivals(workload, 20261201)];
const t0 = performance.now();
const cpu0 = process.cpuUsage();
const r = simulate(cluster, arrivals, {
  seed: 1,
  policy: { name: 'dot' },
  batchWindowMs: windowMs,
  ...(values.digest ? { recordPlacements: true } : {}),
});
const seconds = (performance.now() - t0) / 1000;
// CPU seconds too: the wall figure grows with whatever else shares the machine, this one much less.
const cpu = process.cpuUsage(cpu0);
const cpuSeconds = (cpu.user + cpu.system) / 1e6;
const out = {
  events: r.totals.events,
  nodes: r.nodes,
  seconds: Number(seconds.toFixed(3)),
  eventsPerSec: Math.round(r.totals.events / seconds),
  cpuSeconds: Number(cpuSeconds.toFixed(3)),
  arrivals: r.totals.arrived,
  departures: r.totals.departed,
  placed: r.totals.placed,
  rejected: r.totals.rejected,
  planCalls: r.timing.planCalls,
  batchWindowMs: windowMs,
  ...(values.digest ? { digest: reportDigest(r) } : {}),
};
process.stdout.write(`${JSON.stringify(out)}\n`);
if (values.json !== undefined) writeFileSync(values.json, `${JSON.stringify(out, null, 2)}\n`);

/** A digest of everything a run reports but its timing (wall time, rates and the plan-latency histogram). */
function reportDigest(report: typeof r): string {
  const { timing, ...rest } = report;
  const { planCalls } = timing;
  const json = JSON.stringify({ ...rest, planCalls }, (_k, v: unknown) => (v instanceof Map ? [...v] : v));
  return createHash('sha256').update(json).digest('hex');
}

/** The churn runs (see the header): one line each, `churn <window> <digest> <totals>`. */
function churnDigests(): void {
  const runs: [number, { name: 'dot' } | { name: 'spread'; batchSize: number }][] = [
    [100, { name: 'dot' }],
    [0, { name: 'spread', batchSize: 7 }],
  ];
  for (const [windowMs, policy] of runs) {
    const churnCluster = parseCluster({
      nodes: [
        { shape: 's8', count: 30, capacity: { cpu: 8000, memory: 32768, disk: 100000 }, zones: ['a', 'b'] },
        {
          shape: 'g4',
          count: 4,
          capacity: { cpu: 16000, memory: 65536, disk: 100000 },
          zones: ['a'],
          gpu: { model: 'A100', count: 4 },
        },
      ],
      quotas: { b: { cpu: 40000 } },
      events: [
        { atS: 20, kind: 'fail', shape: 's8', count: 3 },
        { atS: 35, kind: 'drain', node: 's8-5' },
        { atS: 50, kind: 'return', shape: 's8', count: 6 },
        { atS: 70, kind: 'fail', node: 'g4-1' },
        { atS: 90, kind: 'return', node: 'g4-1' },
      ],
    });
    const churnWorkload = parseWorkload({
      arrivals: { kind: 'poisson', ratePerS: 40 },
      count: 6000,
      sizes: [
        { weight: 4, cpu: 1000, memory: 2048, disk: 1000 },
        { weight: 2, cpu: 2000, memory: 8192, disk: 1000 },
        { weight: 1, cpu: 500, memory: 1024, disk: 100, gpu: { milli: 500 } },
        { weight: 0.5, cpu: 4000, memory: 8192, disk: 100, gpu: { count: 1 } },
      ],
      lifetime: { kind: 'exponential', meanS: 8 },
      tenants: [{ name: 'a' }, { name: 'b' }],
      suspend: { share: 0.2, durationS: 3 },
    });
    if (!('arrivals' in churnWorkload)) throw new Error('synthetic workload expected');
    const report = simulate(churnCluster, [...syntheticArrivals(churnWorkload, 7)], {
      seed: 3,
      policy,
      batchWindowMs: windowMs,
      pendingTimeoutMs: 2000,
      recordPlacements: true,
    });
    process.stdout.write(`churn ${windowMs} ${reportDigest(report)} ${JSON.stringify(report.totals)}\n`);
  }
}
