/**
 * `npm run sim:raft -- --seeds N [--first S] [--replicas 3|5|both] [--seed S] [--fault-ticks T]`: runs the whole-cluster Raft
 * simulation for as many seeds as asked, outside vitest, and prints a summary. A failing seed prints its
 * `SEED=` line and the events that led to it; `--seed S` replays one seed with its trace.
 */
import { parseArgs } from 'node:util';
import { runRaftSim } from './raft-sim.js';

const { values } = parseArgs({
  options: {
    seeds: { type: 'string', default: '1000' },
    first: { type: 'string', default: '1' },
    replicas: { type: 'string', default: 'both' },
    seed: { type: 'string' },
    'broken-reads': { type: 'boolean', default: false },
    'fault-ticks': { type: 'string' },
  },
});
const sizes: (3 | 5)[] = values.replicas === 'both' ? [3, 5] : [Number(values.replicas) as 3 | 5];
if (!sizes.every((n) => n === 3 || n === 5)) throw new Error('--replicas must be 3, 5 or both');
const brokenReads = values['broken-reads'];
const faultTicks = values['fault-ticks'] === undefined ? {} : { faultTicks: Number(values['fault-ticks']) };

if (values.seed !== undefined) {
  for (const replicas of sizes) {
    const r = await runRaftSim({
      seed: Number(values.seed),
      replicas,
      trace: true,
      brokenReads,
      ...faultTicks,
    });
    console.log(r.trace.join('\n'));
    console.log(r.ok ? `SEED=${values.seed} replicas=${replicas}: ok` : r.failure);
    if (!r.ok) process.exitCode = 1;
  }
} else {
  const seeds = Number(values.seeds);
  const first = Number(values.first);
  const started = performance.now();
  const cpuStarted = process.cpuUsage();
  let failed = 0;
  const totals: Record<string, number> = {};
  for (const replicas of sizes) {
    for (let seed = first; seed < first + seeds; seed++) {
      const r = await runRaftSim({ seed, replicas, brokenReads, ...faultTicks });
      for (const [k, v] of Object.entries(r.stats)) totals[k] = (totals[k] ?? 0) + v;
      if (!r.ok) {
        failed++;
        console.log(r.failure);
        if (failed === 1)
          console.log(
            (await runRaftSim({ seed, replicas, trace: true, brokenReads, ...faultTicks })).trace
              .slice(-60)
              .join('\n'),
          );
      }
    }
  }
  const runs = seeds * sizes.length;
  console.log(
    JSON.stringify(
      {
        runs,
        failed,
        seconds: +((performance.now() - started) / 1000).toFixed(1),
        // CPU time, which other processes on a shared machine do not inflate.
        cpuSeconds: +cpuSecondsSince(cpuStarted).toFixed(1),
        totals,
      },
      null,
      0,
    ),
  );
  if (failed > 0) process.exitCode = 1;
}

function cpuSecondsSince(start: NodeJS.CpuUsage): number {
  const u = process.cpuUsage(start);
  return (u.user + u.system) / 1e6;
}
