import { describe, expect, it } from 'vitest';
import { createRng } from '../../src/lib/prng.js';
import { VirtualTimers } from '../../src/lib/timers.js';
import {
  defaultSimLatencyModel,
  SimDriver,
  type SimLatencyModel,
  sampleLatencyMs,
} from '../../src/worker/drivers/sim.js';
import { NodeWorker } from '../../src/worker/node-worker.js';
import type { StatusReport } from '../../src/worker/protocol.js';
import { nid, spec } from './fixtures.js';

const seed = Number(process.env.SEED ?? 7);

describe('worker/drivers/sim', () => {
  it('sim driver - latencies follow the configured median and p99', () => {
    // Checks the log-normal model against its own parameters on 20,000 seeded draws.
    const rng = createRng(seed);
    const draws = Array.from({ length: 20_000 }, () => sampleLatencyMs(rng, { medianMs: 100, p99Ms: 400 }));
    draws.sort((a, b) => a - b);
    const median = draws[10_000] as number;
    const p99 = draws[19_800] as number;
    expect(median, `seed ${seed}`).toBeGreaterThan(90);
    expect(median, `seed ${seed}`).toBeLessThan(110);
    expect(p99, `seed ${seed}`).toBeGreaterThan(340);
    expect(p99, `seed ${seed}`).toBeLessThan(470);
  });

  it('sim driver - the same seed replays the same run, failures included', async () => {
    // Checks determinism: two runs with one seed give identical status logs (times and failures).
    const model: SimLatencyModel = {
      ...defaultSimLatencyModel,
      failureRate: { disk: 0.1, boot: 0.2, resume: 0 },
    };
    const run = async (): Promise<StatusReport[]> => {
      const timers = new VirtualTimers();
      const reports: StatusReport[] = [];
      const worker = new NodeWorker({
        nodeId: nid('n1'),
        driver: new SimDriver({ rng: createRng(seed), timers, model }),
        statusSink: async (b) => {
          reports.push(...b);
        },
        timers,
      });
      for (let i = 0; i < 40; i++) await worker.create(spec(`s${i}`));
      await timers.runAll();
      await worker.flush();
      return reports;
    };
    const first = await run();
    expect(
      first.some((r) => r.state === 'failed'),
      `seed ${seed}`,
    ).toBe(true);
    expect(await run()).toEqual(first);
  });

  it('sim driver - two thousand simulated nodes boot their sandboxes in virtual time in one process', async () => {
    // Checks the scale claim: 2,000 workers on one virtual clock, 3 sandboxes each, all end running or
    // failed with a reason, without waiting the simulated seconds.
    const timers = new VirtualTimers();
    const rng = createRng(seed);
    const reports: StatusReport[] = [];
    const sink = async (b: readonly StatusReport[]): Promise<void> => {
      reports.push(...b);
    };
    const workers = Array.from(
      { length: 2000 },
      (_, i) =>
        new NodeWorker({
          nodeId: nid(`n${i}`),
          driver: new SimDriver({ rng: rng.fork(), timers }),
          statusSink: sink,
          timers,
        }),
    );
    for (const [i, w] of workers.entries()) for (let k = 0; k < 3; k++) await w.create(spec(`s${i}-${k}`));
    const virtualMs = await timers.runAll();
    await Promise.all(workers.map((w) => w.flush()));
    const final = new Map(reports.map((r) => [r.sandboxId, r]));
    expect(final.size).toBe(6000);
    const running = [...final.values()].filter((r) => r.state === 'running').length;
    const failed = [...final.values()].filter((r) => r.state === 'failed');
    expect(running + failed.length).toBe(6000);
    expect(failed.every((r) => (r.reason ?? '').length > 0)).toBe(true);
    expect(running, `seed ${seed}`).toBeGreaterThan(5900);
    // Boots are bounded at 2 per node, so 3 sandboxes take at least two boot rounds of virtual time.
    expect(virtualMs).toBeGreaterThan(defaultSimLatencyModel.boot.medianMs);
  });
});
