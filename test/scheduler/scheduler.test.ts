import { describe, expect, it } from 'vitest';
import { NoCapacityError, QuotaExceededError, RequestIdConflictError } from '../../scheduler/errors.js';
import { InProcessLog } from '../../scheduler/in-process-log.js';
import { createScheduler } from '../../scheduler/scheduler.js';
import { stateDigest } from '../../scheduler/state-machine.js';
import { ValidationError } from '../../src/lib/errors.js';
import { until as poll, type UntilCondition } from '../helpers/until.js';
import { node, spec } from './fixtures.js';

const until = (cond: UntilCondition<boolean>, what: string, timeoutMs = 5_000): Promise<boolean> =>
  poll(cond, what, { timeoutMs, pollMs: 5 });

describe('scheduler API', () => {
  it('scheduler - creates resolve once committed, batched, on every replica, within capacity', async () => {
    // Submits 200 creates of 0.2 cores in one burst onto 10 nodes of 4 cores, which they fill exactly;
    // every create must resolve placed, the burst must share few batches, and all replicas must hold the
    // same state with no node over capacity.
    const log = new InProcessLog(3);
    const s = createScheduler({ log });
    for (let i = 0; i < 10; i++) await s.registerNode(node(`n${i}`));
    const created = await Promise.all(
      Array.from({ length: 200 }, (_, i) => s.create(spec('t1', 200, 100), { requestId: `r${i}` })),
    );
    expect(new Set(created.map((c) => c.id)).size).toBe(200);
    expect(created.every((c) => c.state === 'placed')).toBe(true);
    expect(s.stats().batches).toBeLessThan(20);
    for (const v of await s.nodes()) expect(v.allocated.cpu).toBeLessThanOrEqual(v.spec.capacity.cpu);
    const digests = [0, 1, 2].map((r) => stateDigest(log.machine(r).state));
    expect(new Set(digests).size).toBe(1);
    s.close();
  });

  it('scheduler - a request id is idempotent, and reusing it for another spec is refused', async () => {
    // Creates with one id twice (same spec) and expects one sandbox; a third call with a different spec
    // must throw RequestIdConflictError, whether the first has committed or is still in flight.
    const s = createScheduler();
    await s.registerNode(node('n1'));
    const a = await s.create(spec(), { requestId: 'same' });
    const b = await s.create(spec(), { requestId: 'same' });
    expect(b.id).toBe(a.id);
    expect((await s.list()).length).toBe(1);
    await expect(s.create(spec('t1', 2000), { requestId: 'same' })).rejects.toBeInstanceOf(
      RequestIdConflictError,
    );
    // The same while the first is still in flight: a same-spec retry joins it, another spec is refused.
    const first = s.create(spec(), { requestId: 'busy' });
    const again = s.create(spec(), { requestId: 'busy' });
    await expect(s.create(spec('t1', 2000), { requestId: 'busy' })).rejects.toBeInstanceOf(
      RequestIdConflictError,
    );
    // A third caller joins the two (the pipeline keeps a lone caller as itself, then a list).
    const third = s.create(spec(), { requestId: 'busy' });
    expect((await again).id).toBe((await first).id);
    expect((await third).id).toBe((await first).id);
    expect((await s.list()).length).toBe(2);
    s.close();
  });

  it('scheduler - a create with a bad spec or option rejects, never throws, and changes nothing', async () => {
    // create is a plain method returning the placement's promise: bad input must still come back as a
    // rejected promise (a caller's .catch or await sees it), not as an exception thrown at the call.
    const s = createScheduler();
    await s.registerNode(node('n1'));
    const calls = [
      () => s.create({ ...spec(), extra: 1 } as unknown as ReturnType<typeof spec>),
      () => s.create(spec(), { runningWaitMs: 0 }),
      () => s.create(spec(), { pendingReplyMs: 1.5 }),
    ];
    for (const call of calls) {
      let created: Promise<unknown> | undefined;
      expect(() => {
        created = call();
      }).not.toThrow();
      await expect(created).rejects.toBeInstanceOf(ValidationError);
    }
    expect((await s.list()).length).toBe(0);
    s.close();
  });

  it('scheduler - a leader change mid-burst loses no create and places none twice', async () => {
    // Starts 300 creates, moves leadership twice while they are in flight, and checks that all resolve,
    // that the committed sandboxes are exactly the 300 request ids, and that replicas agree.
    const log = new InProcessLog(3);
    const s = createScheduler({ log, pipeline: { batchSizeMax: 16 } });
    for (let i = 0; i < 20; i++) await s.registerNode(node(`n${i}`));
    const pending = Array.from({ length: 300 }, (_, i) =>
      s.create(spec('t1', 100, 100), { requestId: `r${i}` }),
    );
    await new Promise((r) => setImmediate(r));
    log.changeLeader(1);
    await new Promise((r) => setImmediate(r));
    log.changeLeader(2);
    const created = await Promise.all(pending);
    expect(new Set(created.map((c) => c.id)).size).toBe(300);
    const state = log.machine(2).state;
    expect(state.sandboxes.size).toBe(300);
    const used = [...state.nodes.keys()].reduce(
      (sum, id) => sum + (state.index.get(id)?.allocated.cpu ?? 0),
      0,
    );
    expect(used).toBe(300 * 100);
    expect(stateDigest(log.machine(0).state)).toBe(stateDigest(state));
    s.close();
  });

  it('scheduler - a create that fits nowhere waits, wakes when capacity frees, and fails at its deadline', async () => {
    // One 4-core node full with a 4-core sandbox: a second 4-core create waits in the pending queue and is
    // placed once the first is terminated; a third, with a manual clock past its deadline, fails with
    // NoCapacityError carrying a reason.
    let nowMs = 0;
    const s = createScheduler({
      now: () => nowMs,
      pipeline: { pendingTimeoutMs: 1000, heartbeatIntervalMs: 5 },
    });
    await s.registerNode(node('n1'));
    const first = await s.create(spec('t1', 4000, 100));
    const second = s.create(spec('t1', 4000, 100));
    // Waiting for the pend to commit, not a fixed time: under load 10 ms was not always enough.
    await until(async () => s.stats().pending === 1, 'the second create to wait in the pending queue');
    await s.terminate(first.id);
    expect((await second).nodeId).toBe('n1');
    const third = s.create(spec('t1', 4000, 100));
    await until(async () => s.stats().pending === 1, 'the third create to wait in the pending queue');
    nowMs = 5000;
    const err = await third.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NoCapacityError);
    expect((err as NoCapacityError).details.reason).toMatch(/resources/);
    s.close();
  });

  it('scheduler - quotas count sandboxes still in flight', async () => {
    // A tenant limited to 3 sandboxes submits 5 in one burst: exactly 2 must be refused with
    // QuotaExceededError, even though none had committed when the later ones were admitted.
    const s = createScheduler();
    await s.registerNode(node('n1'));
    await s.setQuota('t1', { sandboxes: 3 });
    const results = await Promise.allSettled(Array.from({ length: 5 }, () => s.create(spec('t1', 100, 100))));
    const refused = results.filter((r) => r.status === 'rejected');
    expect(refused.length).toBe(2);
    expect(refused.every((r) => r.status === 'rejected' && r.reason instanceof QuotaExceededError)).toBe(
      true,
    );
    s.close();
  });

  it('scheduler - watch yields committed events in order and list filters by node and state', async () => {
    // Watches while creating two sandboxes and reporting one running; the events must arrive in log order,
    // and list() must find the running one by state and both by node.
    const s = createScheduler();
    await s.registerNode(node('n1'));
    const events = s.watch();
    const a = await s.create(spec());
    const b = await s.create(spec());
    await s.reportStatus([{ sandboxId: a.id, state: 'running' }]);
    const seen = [];
    for (let i = 0; i < 3; i++) seen.push((await events.next()).value);
    await events.return?.();
    expect(seen.map((e) => (e?.kind === 'sandbox' ? `${e.sandboxId}:${e.to}` : ''))).toEqual([
      `${a.id}:placed`,
      `${b.id}:placed`,
      `${a.id}:running`,
    ]);
    expect((await s.list({ state: 'running' })).map((x) => x.id)).toEqual([a.id]);
    expect((await s.list({ nodeId: 'n1' }, { stale: true })).length).toBe(2);
    s.close();
  });

  it('scheduler - resume prefers the snapshot node and moves only when the policy allows', async () => {
    // Two sandboxes are suspended on n1, which is then filled by a third. The `move` one resumes on n2;
    // the `wait` one is refused with NoCapacityError and stays suspended.
    const s = createScheduler();
    await s.registerNode(node('n1'));
    const mover = await s.create(spec('t1', 2000, 100, { resumePolicy: 'move' }));
    const waiter = await s.create(spec('t1', 2000, 100, { resumePolicy: 'wait' }));
    await s.reportStatus([
      { sandboxId: mover.id, state: 'running' },
      { sandboxId: waiter.id, state: 'running' },
    ]);
    await s.suspend(mover.id);
    await s.suspend(waiter.id);
    await s.reportStatus([
      { sandboxId: mover.id, state: 'suspended' },
      { sandboxId: waiter.id, state: 'suspended' },
    ]);
    await s.create(spec('t1', 4000, 100));
    await s.registerNode(node('n2'));
    await s.resume(mover.id);
    expect((await s.get(mover.id))?.nodeId).toBe('n2');
    await expect(s.resume(waiter.id)).rejects.toBeInstanceOf(NoCapacityError);
    expect((await s.get(waiter.id))?.state).toBe('suspended');
    s.close();
  });

  it("scheduler - wait: 'running' resolves when the node reports the sandbox running", async () => {
    // Starts a create that waits for running, reports it running once placed, and checks the state.
    const s = createScheduler();
    await s.registerNode(node('n1'));
    const running = s.create(spec(), { requestId: 'w1', wait: 'running' });
    const events = s.watch();
    await events.next();
    await s.reportStatus([{ sandboxId: 'w1', state: 'running' }]);
    expect((await running).state).toBe('running');
    await events.return?.();
    s.close();
  });
});

describe('scheduler - node death and stateless sandboxes', () => {
  it('scheduler - a stateless sandbox lost with its node is placed again; a stateful one stays lost', async () => {
    // Two sandboxes on n1, one stateless; n1 goes down. The leader must commit a `replace` that puts the
    // stateless one on n2 (lost → placed), while the stateful one stays lost with its reason.
    const log = new InProcessLog(3);
    const s = createScheduler({ log, pipeline: { heartbeatIntervalMs: 5 } });
    await s.registerNode(node('n1'));
    const a = await s.create(spec('t1', 500, 512, { stateless: true }), { requestId: 'a' });
    const b = await s.create(spec('t1', 500, 512), { requestId: 'b' });
    expect(a.nodeId).toBe('n1');
    await s.registerNode(node('n2'));
    await s.setNodeState('n1', 'down');
    await until(async () => (await s.get(a.id))?.state === 'placed', 'the stateless sandbox placed again');
    expect(await s.get(a.id)).toMatchObject({ state: 'placed', nodeId: 'n2' });
    expect(await s.get(b.id)).toMatchObject({ state: 'lost', reason: 'node n1 went down' });
    for (const v of await s.nodes()) expect(v.allocated.cpu).toBeLessThanOrEqual(v.spec.capacity.cpu);
    expect(new Set([0, 1, 2].map((r) => stateDigest(log.machine(r).state))).size).toBe(1);
    await s.close();
  });

  it('scheduler - a lost stateless sandbox waits for room, and a new leader picks the work up from state', async () => {
    // n1 dies while n2 is full: the stateless sandbox stays lost. Leadership moves; the new leader finds it
    // in committed state, and once n2 frees room it is placed there.
    const log = new InProcessLog(3);
    const s = createScheduler({ log, pipeline: { heartbeatIntervalMs: 5 } });
    await s.registerNode(node('n1', 1000));
    await s.registerNode(node('n2', 1000));
    const a = await s.create(spec('t1', 600, 512, { stateless: true }), { requestId: 'a' });
    const filler = await s.create(spec('t1', 600, 512), { requestId: 'filler' });
    expect(new Set([a.nodeId, filler.nodeId]).size).toBe(2);
    await s.setNodeState(a.nodeId as string, 'down');
    await new Promise((r) => setTimeout(r, 30));
    expect((await s.get(a.id))?.state).toBe('lost');
    log.changeLeader(1);
    await s.terminate(filler.id);
    await until(async () => (await s.get(a.id))?.state === 'placed', 'placed once room freed');
    await s.close();
  });
});
