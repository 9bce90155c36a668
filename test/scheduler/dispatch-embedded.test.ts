import { afterEach, describe, expect, it } from 'vitest';
import type { Scheduler } from '../../scheduler/scheduler.js';
import { createScheduler, EmbeddedScheduler } from '../../src/embedded.js';
import { defaultSimLatencyModel, type SimLatencyModel } from '../../src/worker/drivers/sim.js';
import { node, spec } from './fixtures.js';

/** Millisecond latencies and no failures: the lifecycle is what is under test, not the latency model. */
const quick: SimLatencyModel = {
  disk: { medianMs: 1, p99Ms: 3 },
  boot: { medianMs: 2, p99Ms: 5 },
  stop: { medianMs: 1, p99Ms: 2 },
  exec: { medianMs: 1, p99Ms: 2 },
  suspend: { medianMs: 1, p99Ms: 3 },
  resume: { medianMs: 2, p99Ms: 5 },
  failureRate: { disk: 0, boot: 0, resume: 0 },
};

let open: Scheduler[] = [];
afterEach(async () => {
  await Promise.all(open.map((s) => s.close()));
  open = [];
});

function embedded(model: SimLatencyModel = quick): EmbeddedScheduler {
  const s = createScheduler({ workers: { driver: 'sim', model, seed: 3 } });
  expect(s).toBeInstanceOf(EmbeddedScheduler);
  open.push(s);
  return s as EmbeddedScheduler;
}

/** Polls the committed state until the sandbox is in `want` (its state is 'gone' once terminated). */
async function reaches(s: Scheduler, id: string, want: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = await stateOf(s, id);
  while (last !== want) {
    if (Date.now() > deadline)
      throw new Error(`sandbox ${id} is ${last}, not ${want}, after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 10));
    last = await stateOf(s, id);
  }
}

async function stateOf(s: Scheduler, id: string): Promise<string> {
  return (await s.get(id))?.state ?? 'gone';
}

describe('scheduler dispatch - embedded scheduler with sim workers', () => {
  it('scheduler dispatch - create waits for running, exec runs, suspend, resume and terminate reach the worker', async () => {
    const s = embedded();
    await s.registerNode(node('n1'));
    await s.registerNode(node('n2'));
    const sb = await s.create(spec(), { wait: 'running' });
    expect(sb.state).toBe('running');
    const nodeId = sb.nodeId as string;
    const worker = s.fleet.workers.get(nodeId);
    expect(worker?.stateOf(sb.id as never)).toBe('running');
    // Only the node it is placed on has a worker that heard of it.
    for (const [id, w] of s.fleet.workers)
      if (id !== nodeId) expect(w.stateOf(sb.id as never)).toBeUndefined();

    const out = await s.exec(sb.id, ['echo', 'hi'], { timeoutMs: 1_000 });
    expect(out.exitCode).toBe(0);

    await s.suspend(sb.id);
    await reaches(s, sb.id, 'suspended');
    expect(worker?.stateOf(sb.id as never)).toBe('suspended');
    await s.resume(sb.id);
    await reaches(s, sb.id, 'running');
    await s.terminate(sb.id);
    await reaches(s, sb.id, 'gone');
    expect(worker?.stateOf(sb.id as never)).toBe('terminated');
  });

  it('scheduler dispatch - many creates across nodes all run, with few status entries', async () => {
    const s = embedded();
    for (let i = 0; i < 5; i++) await s.registerNode(node(`n${i}`, 64_000, 64_000));
    const before = s.stats().applied;
    const all = await Promise.all(
      Array.from({ length: 200 }, () => s.create(spec('t1', 100, 64), { wait: 'running' })),
    );
    expect(all.every((x) => x.state === 'running')).toBe(true);
    // 200 sandboxes report starting and running (400 reports): merged across nodes, they take far fewer
    // entries than one per report.
    expect(s.stats().applied - before).toBeLessThan(200);
  });

  it('scheduler dispatch - concurrent status reports are merged into one entry', async () => {
    const s = createScheduler();
    open.push(s);
    await s.registerNode(node('n1', 64_000, 64_000));
    const made = await Promise.all(Array.from({ length: 20 }, () => s.create(spec('t1', 100, 64))));
    const before = s.stats().applied;
    await Promise.all(
      made.map((sb) => s.reportStatus([{ sandboxId: sb.id, state: 'running', nodeId: 'n1' }])),
    );
    expect(s.stats().applied - before).toBe(1);
    expect((await s.list()).every((x) => x.state === 'running')).toBe(true);
    await expect(s.reportStatus([{ sandboxId: 'bad id', state: 'running' }])).rejects.toMatchObject({
      code: 'VALIDATION',
    });
  });

  it('scheduler dispatch - a create waiting for running rejects with SandboxNotRunningError when its boot fails', async () => {
    const s = embedded({ ...defaultSimLatencyModel, ...quick, failureRate: { disk: 0, boot: 1, resume: 0 } });
    await s.registerNode(node('n1'));
    const err = await s.create(spec(), { wait: 'running' }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'SCHED_NOT_RUNNING', details: { state: 'failed' } });
  });

  it('scheduler dispatch - exec refuses a sandbox that is not running, and bad arguments, changing nothing', async () => {
    const s = embedded();
    await s.registerNode(node('n1'));
    const sb = await s.create(spec(), { wait: 'running' });
    await expect(s.exec('nope', ['true'])).rejects.toMatchObject({ code: 'SCHED_UNKNOWN_SANDBOX' });
    await expect(s.exec(sb.id, [])).rejects.toMatchObject({ code: 'VALIDATION' });
    await expect(s.exec(sb.id, ['true'], { timeoutMs: 0 })).rejects.toMatchObject({ code: 'VALIDATION' });
    await s.suspend(sb.id);
    await expect(s.exec(sb.id, ['true'])).rejects.toMatchObject({ code: 'SCHED_NOT_RUNNING' });
    // A scheduler without workers has nowhere to run it.
    const bare = createScheduler();
    open.push(bare);
    await expect(bare.exec(sb.id, ['true'])).rejects.toMatchObject({ code: 'UNAVAILABLE' });
  });
});
