import { afterEach, describe, expect, it } from 'vitest';
import { RaftGroupLog } from '../../scheduler/raft-group.js';
import { Scheduler } from '../../scheduler/scheduler.js';
import { createScheduler, EmbeddedScheduler } from '../../src/embedded.js';
import { MemoryMetrics } from '../../src/lib/metrics.js';
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

function embedded(model: SimLatencyModel = quick, metrics?: MemoryMetrics): EmbeddedScheduler {
  const s = createScheduler({
    workers: { driver: 'sim', model, seed: 3 },
    ...(metrics === undefined ? {} : { metrics }),
  });
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

/**
 * A scheduler on a 3-replica in-memory Raft group whose sink records every command with the replica that led
 * when it was sent, and answers none until `answer()` (so what the first leader sent stays unacknowledged).
 */
function recordingGroup(extra: { inFlightPerNodeMax?: number } = {}) {
  const sent: { replica: string; nodeId: string; kind: string; sandboxId: string }[] = [];
  let answering = false;
  const log = RaftGroupLog.inMemory({ replicas: 3 });
  const s = new Scheduler({
    log,
    dispatch: {
      retryBaseMs: 10_000,
      retryMaxMs: 10_000,
      ...extra,
      sink: {
        send: async (nodeId, cmds) => {
          const leader = log.leader();
          for (const c of cmds)
            sent.push({ replica: String(leader), nodeId, kind: c.kind, sandboxId: c.sandboxId });
          if (!answering) return new Promise(() => {});
          return cmds.map(() => ({ ok: true }));
        },
      },
    },
  });
  open.push(s);
  return {
    s,
    log,
    sent,
    answer: () => {
      answering = true;
    },
  };
}

describe('scheduler dispatch - the shell on a real Raft group', () => {
  it('scheduler dispatch - a new leader resends what the old one never got acknowledged, to the committed node', async () => {
    // A sink that records every command and answers none until told: the first leader's creates stay
    // unacknowledged; after a leadership transfer the new leader's dispatcher must send them again.
    const { s, log, sent, answer } = recordingGroup();
    await s.registerNode(node('n1'));
    await s.registerNode(node('n2', 4000, 8192, { labels: { zone: 'z-b' } }));
    const made = [
      await s.create(spec()),
      await s.create(spec('t1', 1000, 1024, { constraints: [{ label: 'zone', op: 'eq', value: 'z-b' }] })),
    ];
    const first = log.leader() as number;
    const until = async (cond: () => boolean, what: string) => {
      const deadline = Date.now() + 10_000;
      while (!cond()) {
        if (Date.now() > deadline) throw new Error(`timed out: ${what}; sent ${JSON.stringify(sent)}`);
        await new Promise((r) => setTimeout(r, 10));
      }
    };
    await until(() => sent.length >= 2, 'the first leader sends both creates');
    answer();
    const next = (first + 1) % 3;
    await log.transferLeadership(next);
    await until(() => sent.filter((x) => x.replica === String(next)).length >= 2, 'the new leader resends');
    const byNew = sent.filter((x) => x.replica === String(next));
    expect(byNew.map((x) => x.sandboxId).sort()).toEqual(made.map((m) => m.id).sort());
    // Every command, from either leader, went to the node committed for its sandbox.
    for (const x of sent) expect(x.nodeId).toBe(made.find((m) => m.id === x.sandboxId)?.nodeId);
    expect(new Set(made.map((m) => m.nodeId))).toEqual(new Set(['n1', 'n2']));
  });
});

describe('scheduler dispatch - refusals and cleanups on a real Raft group', () => {
  const until = async (cond: () => boolean | Promise<boolean>, what: string, why = () => '') => {
    const deadline = Date.now() + 10_000;
    while (!(await cond())) {
      if (Date.now() > deadline) throw new Error(`timed out: ${what}; ${why()}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  };

  it('scheduler dispatch - a create refused permanently fails its sandbox with the reason (committed); a busy one keeps being retried', async () => {
    const sends = new Map<string, number>();
    let refusedId = '';
    let busyId = '';
    const s = new Scheduler({
      log: RaftGroupLog.inMemory({ replicas: 3 }),
      dispatch: {
        retryBaseMs: 5,
        retryMaxMs: 20,
        refusedAttemptsMax: 3,
        sink: {
          send: async (_nodeId, cmds) =>
            cmds.map((c) => {
              sends.set(c.sandboxId, (sends.get(c.sandboxId) ?? 0) + 1);
              if (c.sandboxId === refusedId)
                return { ok: false, code: 'DRIVER', message: 'qemu driver: boot failed: no image "nope"' };
              if (c.sandboxId === busyId)
                return { ok: false, code: 'WORKER_BUSY', message: 'boot queue full' };
              return { ok: true };
            }),
        },
      },
    });
    open.push(s);
    await s.registerNode(node('n1'));
    refusedId = 'sb-refused';
    busyId = 'sb-busy';
    await s.create(spec('t1', 100, 64), { requestId: refusedId });
    await s.create(spec('t1', 100, 64), { requestId: busyId });
    await until(
      async () => (await stateOf(s, refusedId)) === 'failed',
      'the refused sandbox failed',
      () => JSON.stringify([...sends]),
    );
    expect((await s.get(refusedId))?.reason).toBe(
      'node n1 refused create 3 times: DRIVER: qemu driver: boot failed: no image "nope"',
    );
    expect(sends.get(refusedId)).toBe(3);
    // The busy one: far more attempts than the refusal bound, still placed, never failed.
    await until(() => (sends.get(busyId) ?? 0) >= 10, 'ten sends of the busy create');
    expect(await stateOf(s, busyId)).toBe('placed');
    expect(sends.get(refusedId)).toBe(3);
  });

  it('scheduler dispatch - a cleanup terminate the old leader never got acknowledged is sent by the new one', async () => {
    // A create placed then terminated at once (placed → terminated) leaves the sandbox out of the state; the
    // first leader's cleanup terminate is never answered, and the leader changes.
    // The unanswered create stays in flight; the cleanup needs a second batch slot to n1.
    const { s, log, sent, answer } = recordingGroup({ inFlightPerNodeMax: 4 });
    await s.registerNode(node('n1'));
    const sb = await s.create(spec());
    await s.terminate(sb.id);
    expect(await stateOf(s, sb.id)).toBe('gone');
    const first = log.leader() as number;
    await until(
      () => sent.some((x) => x.kind === 'terminate' && x.replica === String(first)),
      'the first leader sends the cleanup',
      () => JSON.stringify(sent),
    );
    answer();
    const next = (first + 1) % 3;
    await log.transferLeadership(next);
    await until(
      () => sent.some((x) => x.kind === 'terminate' && x.replica === String(next)),
      'the new leader sends the cleanup',
      () => JSON.stringify(sent),
    );
    expect(sent.filter((x) => x.kind === 'terminate').every((x) => x.nodeId === 'n1')).toBe(true);
    // The node confirms (the worker reports terminated): the debt leaves committed state.
    await s.reportStatus([{ sandboxId: sb.id, state: 'terminated', nodeId: 'n1' }]);
    await until(
      () => [0, 1, 2].every((i) => log.machine(i).state.cleanups.size === 0),
      'the cleanup cleared on every replica',
    );
  });
});

describe('scheduler dispatch - embedded scheduler with sim workers', () => {
  it('scheduler dispatch - create waits for running, exec runs, suspend, resume and terminate reach the worker', async () => {
    const metrics = new MemoryMetrics();
    const s = embedded(quick, metrics);
    await s.registerNode(node('n1'));
    await s.registerNode(node('n2'));
    const sb = await s.create(spec(), { wait: 'running' });
    expect(metrics.value('trellis_dispatch_commands_total', { kind: 'create', outcome: 'ok' })).toBe(1);
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
