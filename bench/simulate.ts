/**
 * Capacity simulation speed: 1,000,000 events (500,000 arrivals and their 500,000 departures) on 5,000 nodes,
 * through the production admission, planner, verifier and state machine (src/sim). Fixed seed.
 *
 *   npm run bench:simulate -- --json FILE [--arrivals N] [--nodes N] [--window-ms N] [--digest]
 *
 * Writes {"events","nodes","seconds","eventsPerSec"} (plus the run's shape) to FILE and prints it. With
 * `--digest`, the run also records every placement and the output gains `digest`: a SHA-256 of the whole
 * report but its timing (totals, samples, histograms, each request's node), so a speed change can be shown
 * to change no result by comparing two builds' digests (not for timing: recording costs time and memory).
 */
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { parseCluster, parseWorkload, simulate, syntheticArrivals } from '../src/sim/index.js';

const { values } = parseArgs({
  options: {
    json: { type: 'string' },
    arrivals: { type: 'string', default: '500000' },
    nodes: { type: 'string', default: '5000' },
    'window-ms': { type: 'string', default: '100' },
    digest: { type: 'boolean', default: false },
  },
});
const arrivalsCount = Number(values.arrivals);
const nodes = Number(values.nodes);
const windowMs = Number(values['window-ms']);
if (!(arrivalsCount > 0 && nodes > 0 && windowMs >= 0))
  throw new Error('--arrivals, --nodes and --window-ms are numbers');

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
