import { describe, expect, it } from 'vitest';
import { ValidationError } from '../../src/lib/errors.js';
import { createRng } from '../../src/lib/prng.js';
import { VirtualTimers } from '../../src/lib/timers.js';
import { defaultSimLatencyModel, SimDriver, type SimLatencyModel } from '../../src/worker/drivers/sim.js';
import { SandboxNotFoundError, SandboxStateError, WorkerBusyError } from '../../src/worker/errors.js';
import { NodeWorker, type NodeWorkerOptions } from '../../src/worker/node-worker.js';
import { counting, nid, sid, spec, statusLog } from './fixtures.js';

const seed = Number(process.env.SEED ?? 13);
const noFailures: SimLatencyModel = {
  ...defaultSimLatencyModel,
  failureRate: { disk: 0, boot: 0, resume: 0 },
};

function setup(options: Partial<NodeWorkerOptions> = {}, model = noFailures) {
  const timers = new VirtualTimers();
  const sim = counting(new SimDriver({ rng: createRng(seed), timers, model }));
  const log = statusLog();
  const worker = new NodeWorker({
    nodeId: nid('n1'),
    driver: sim.driver,
    statusSink: log.sink,
    timers,
    ...options,
  });
  return { timers, sim, log, worker };
}

describe('worker/node-worker', () => {
  it('node-worker - a create delivered twice makes one VM and reports its state again', async () => {
    // Checks at-least-once dispatch is harmless: the second create boots nothing and re-reports.
    const { timers, sim, log, worker } = setup();
    expect(await worker.create(spec('a'))).toMatchObject({ state: 'starting' });
    expect(await worker.create(spec('a'))).toMatchObject({ state: 'starting' });
    await timers.runAll();
    expect(await worker.create(spec('a'))).toMatchObject({ state: 'running' });
    await worker.flush();
    expect(sim.calls.createDisk).toBe(1);
    expect(sim.calls.boot).toBe(1);
    expect(log.states('a')).toEqual(['starting', 'starting', 'running', 'running']);
  });

  it('node-worker - terminate is idempotent and a late create cannot bring a terminated sandbox back', async () => {
    // Checks terminate of an unknown id succeeds, a second terminate is a no-op, and the tombstone holds.
    const { timers, sim, log, worker } = setup();
    await worker.create(spec('a'));
    await timers.runAll();
    await worker.terminate(sid('a'));
    await worker.terminate(sid('a'));
    await timers.runAll();
    expect(worker.stateOf(sid('a'))).toBe('terminated');
    expect(await worker.terminate(sid('a'))).toMatchObject({ state: 'terminated' });
    expect(await worker.create(spec('a'))).toMatchObject({ state: 'terminated' });
    expect(await worker.terminate(sid('never-seen'))).toMatchObject({ state: 'terminating' });
    await timers.runAll();
    await worker.flush();
    expect(sim.calls.boot).toBe(1);
    expect(sim.calls.destroy).toBe(2); // 'a' once, and the unknown id (files a crashed worker may have left)
    expect(log.states('never-seen')).toEqual(['terminating', 'terminated']);
    expect(await sim.driver.list()).toEqual([]);
  });

  it('node-worker - terminate of a create still queued for a boot slot boots nothing', async () => {
    // Checks a queued boot that was terminated before its slot came is skipped, not booted then destroyed.
    const { timers, sim, worker } = setup({ bootsConcurrentMax: 1 });
    await worker.create(spec('a'));
    await worker.create(spec('b'));
    await worker.terminate(sid('b'));
    await timers.runAll();
    expect(sim.calls.boot).toBe(1);
    expect(worker.stateOf(sid('a'))).toBe('running');
    expect(worker.stateOf(sid('b'))).toBe('terminated');
  });

  it('node-worker - a suspend that arrives while the create waits for a boot slot suspends it after the boot', async () => {
    // Checks ordering per sandbox: the queued create still boots, then the suspend applies, no failure.
    const { timers, sim, log, worker } = setup({ bootsConcurrentMax: 1 });
    await worker.create(spec('a'));
    await worker.create(spec('b'));
    await worker.suspend(sid('b'));
    await timers.runAll();
    await worker.flush();
    expect(worker.stateOf(sid('b'))).toBe('suspended');
    expect(sim.calls.boot).toBe(2);
    expect(log.states('b')).toEqual(['starting', 'suspending', 'suspended']);
  });

  it('node-worker - suspend and resume are idempotent and need a known sandbox', async () => {
    // Checks repeated suspend/resume reach the driver once each, and unknown ids are refused by type.
    const { timers, sim, worker } = setup();
    await worker.create(spec('a'));
    await timers.runAll();
    await worker.suspend(sid('a'));
    await worker.suspend(sid('a'));
    await timers.runAll();
    expect(worker.stateOf(sid('a'))).toBe('suspended');
    await expect(worker.exec(sid('a'), { command: ['true'] })).rejects.toBeInstanceOf(SandboxStateError);
    await worker.resume(sid('a'));
    await worker.resume(sid('a'));
    await timers.runAll();
    expect(worker.stateOf(sid('a'))).toBe('running');
    expect(await worker.resume(sid('a'))).toMatchObject({ state: 'running' });
    expect(sim.calls.suspend).toBe(1);
    expect(sim.calls.resume).toBe(1);
    await expect(worker.suspend(sid('nope'))).rejects.toBeInstanceOf(SandboxNotFoundError);
    await expect(worker.resume(sid('nope'))).rejects.toBeInstanceOf(SandboxNotFoundError);
  });

  it('node-worker - boots beyond the bound wait in a queue, and beyond the queue are refused unrecorded', async () => {
    // Checks at most bootsConcurrentMax boots run at once, and a full queue refuses with WorkerBusyError
    // while recording nothing, so the dispatcher's retry later is a fresh create.
    const { timers, sim, worker } = setup({ bootsConcurrentMax: 2, bootQueueMax: 3 });
    for (let i = 0; i < 5; i++) await worker.create(spec(`s${i}`));
    expect(worker.stats.bootsActive).toBe(2);
    expect(worker.stats.bootsQueued).toBe(3);
    await expect(worker.create(spec('s5'))).rejects.toBeInstanceOf(WorkerBusyError);
    expect(worker.stateOf(sid('s5'))).toBeUndefined();
    await timers.runAll();
    expect(sim.bootsPeak).toBe(2);
    for (let i = 0; i < 5; i++) expect(worker.stateOf(sid(`s${i}`))).toBe('running');
    expect(await worker.create(spec('s5'))).toMatchObject({ state: 'starting' });
  });

  it('node-worker - a driver failure becomes failed with the driver reason', async () => {
    // Checks the failure path: a boot that always fails reports failed, with the sim driver's reason.
    const always: SimLatencyModel = { ...noFailures, failureRate: { disk: 0, boot: 1, resume: 0 } };
    const { timers, log, worker } = setup({}, always);
    await worker.create(spec('a'));
    await timers.runAll();
    await worker.flush();
    expect(worker.stateOf(sid('a'))).toBe('failed');
    const failed = log.batches.flat().find((r) => r.state === 'failed');
    expect(failed?.reason).toContain('simulated boot failure');
    // A failed sandbox is terminated normally afterwards.
    await worker.terminate(sid('a'));
    await timers.runAll();
    expect(worker.stateOf(sid('a'))).toBe('terminated');
  });

  it('node-worker - status reports go out in batches bounded by size and time', async () => {
    // Checks batching: a few reports wait for the flush window and leave as one batch; many reports in
    // one window leave in batches of at most statusBatchMax, not one message per report.
    const { timers, log, worker } = setup({ statusBatchMax: 5, statusFlushMs: 50 });
    for (let i = 0; i < 3; i++) await worker.create(spec(`s${i}`));
    await timers.advance(1);
    expect(log.batches).toEqual([]);
    await timers.advance(49);
    expect(log.batches.map((b) => b.length)).toEqual([3]);
    for (let i = 3; i < 12; i++) await worker.create(spec(`s${i}`));
    await timers.advance(0);
    // Full batches leave at once; the partial rest waits for the window.
    expect(log.batches.map((b) => b.length)).toEqual([3, 5]);
    await timers.advance(50);
    expect(log.batches.map((b) => b.length)).toEqual([3, 5, 4]);
    await timers.runAll();
    await worker.flush();
    expect(log.batches.flat().filter((r) => r.state === 'running')).toHaveLength(12);
    expect(Math.max(...log.batches.map((b) => b.length))).toBeLessThanOrEqual(5);
  });

  it('node-worker - garbage commands are refused with ValidationError and change nothing', async () => {
    // Checks the boundary: malformed commands of every shape never reach the driver.
    const { timers, sim, worker } = setup();
    const bad: unknown[] = [
      null,
      42,
      'create',
      { type: 'create' },
      { type: 'create', sandboxId: 'a.b', resources: { cpu: 1, memory: 1, disk: 1 } },
      { type: 'create', sandboxId: 'a', resources: { cpu: -1, memory: 1, disk: 1 } },
      { type: 'exec', sandboxId: 'a', command: [] },
      { type: 'exec', sandboxId: 'a', command: ['x'], timeoutMs: 10 ** 9 },
      { type: 'stop-orphans', sandboxIds: 'a' },
      { type: 'reboot', sandboxId: 'a' },
    ];
    for (const cmd of bad) await expect(worker.handle(cmd)).rejects.toBeInstanceOf(ValidationError);
    await timers.runAll();
    expect(sim.calls).toEqual({});
    expect(
      await worker.handle({ type: 'create', sandboxId: 'ok', resources: { cpu: 1, memory: 1, disk: 1 } }),
    ).toMatchObject({ state: 'starting' });
  });

  it('node-worker - report lists what the node holds and stop-orphans ends what reconcile disowns', async () => {
    // Checks reconcile support: report() comes from the driver (a new worker over the same driver sees
    // the machines), and stop-orphans destroys them without status reports.
    const { timers, sim, worker } = setup();
    await worker.create(spec('a'));
    await worker.create(spec('b'));
    await timers.runAll();
    await worker.suspend(sid('b'));
    await timers.runAll();
    const log2 = statusLog();
    const restarted = new NodeWorker({
      nodeId: nid('n1'),
      driver: sim.driver,
      statusSink: log2.sink,
      timers,
    });
    const report = await restarted.report();
    expect(report.sort((x, y) => x.sandboxId.localeCompare(y.sandboxId))).toEqual([
      { sandboxId: 'a', state: 'running' },
      { sandboxId: 'b', state: 'suspended' },
    ]);
    const stop = restarted.handle({ type: 'stop-orphans', sandboxIds: ['b'] });
    await timers.runAll();
    expect(await stop).toEqual({ type: 'orphans', stopped: 1 });
    expect(await sim.driver.list()).toEqual([{ sandboxId: 'a', state: 'running' }]);
    await restarted.flush();
    expect(log2.batches.flat()).toEqual([]);
  });
  it('node-worker - an exec retried with the same request id returns the first result and runs once, even after a suspend', async () => {
    const { timers, sim, worker } = setup();
    await worker.create(spec('a'));
    await timers.runAll();
    const ask = { command: ['echo', 'hi'] };
    const first = worker.exec(sid('a'), ask, 'req-1');
    const again = worker.exec(sid('a'), ask, 'req-1');
    await timers.runAll();
    const [r1, r2] = await Promise.all([first, again]);
    expect(sim.calls.exec).toBe(1);
    expect(r2).toEqual(r1);
    // The same id for another command is refused, running nothing.
    await expect(worker.exec(sid('a'), { command: ['echo', 'other'] }, 'req-1')).rejects.toBeInstanceOf(
      ValidationError,
    );
    // After a suspend the retry still gets its answer; a new exec is refused as the sandbox is not running.
    await worker.suspend(sid('a'));
    await timers.runAll();
    expect(await worker.exec(sid('a'), ask, 'req-1')).toEqual(r1);
    await expect(worker.exec(sid('a'), ask, 'req-2')).rejects.toBeInstanceOf(SandboxStateError);
    expect(sim.calls.exec).toBe(1);
  });
});
