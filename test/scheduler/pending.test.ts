/**
 * The pending queue is replicated state: a create that fits nowhere is committed as a `pending` sandbox
 * (with its reason and deadline), a later `place` takes it to `placed`, a committed status fails it at
 * the deadline, and a new leader rebuilds its queue from those sandboxes.
 */
import { describe, expect, it } from 'vitest';
import { type Command, commandCodec, type SandboxSpec } from '../../scheduler/commands.js';
import { NoCapacityError, SandboxCancelledError } from '../../scheduler/errors.js';
import { RaftGroupLog } from '../../scheduler/raft-group.js';
import { createScheduler } from '../../scheduler/scheduler.js';
import { type SchedulerState, specDigest } from '../../scheduler/state.js';
import { decodeSnapshot, encodeSnapshot, stateDigest } from '../../scheduler/state-machine.js';
import { until } from '../helpers/until.js';
import { node, placeCmd, run, spec } from './fixtures.js';

function pendCmd(id: string, s: SandboxSpec, deadlineMs = 500, atMs = 1): Command {
  return {
    type: 'pend',
    atMs,
    items: [
      {
        requestId: `r-${id}`,
        sandboxId: id,
        spec: s,
        specDigest: specDigest(s),
        reason: 'resources: short of cpu',
        deadlineMs,
      },
    ],
  };
}

const outcomes = (r: { ok: boolean; items?: readonly { outcome: string }[] }) =>
  r.ok ? (r.items ?? []).map((i) => i.outcome) : ['refused'];

describe('scheduler - committed pending sandboxes', () => {
  it('scheduler state - pend records a pending sandbox that counts against quota; a place takes it to placed once', () => {
    // n1 has 1000 cpu. Tenant t1 may hold 2 sandboxes. Pending a is recorded with reason and deadline and
    // counts 1 sandbox but holds no cpu on a node; pending it again is a duplicate; placing it moves it to
    // placed on n1 without counting it twice; placing it again is a duplicate; a third sandbox over the
    // quota is refused at pend.
    const small = spec('t1', 1000, 100);
    const { state, results } = run([
      { type: 'node.register', atMs: 1, spec: node('n1', 1000) },
      { type: 'quota.set', atMs: 1, tenant: 't1', quota: { sandboxes: 2 } },
      pendCmd('a', small, 500),
      pendCmd('a', small, 500),
    ]);
    expect(results.slice(2).map(outcomes)).toEqual([['pending'], ['duplicate']]);
    const a = state.sandbox('a');
    expect(a).toMatchObject({ state: 'pending', reason: 'resources: short of cpu', pendingUntilMs: 500 });
    expect(a?.nodeId).toBeUndefined();
    expect(state.usage('t1').sandboxes).toBe(1);
    expect(state.index.get('n1')?.allocated.cpu).toBe(0);

    // The place item's request id is `r-a`, as the pend's: the pending sandbox is placed, not a new one.
    const placed = run([placeCmd([['a', small, 'n1']], 2), placeCmd([['a', small, 'n1']], 3)], state);
    expect(placed.results.map(outcomes)).toEqual([['placed'], ['duplicate']]);
    const after = placed.state.sandbox('a');
    expect(after).toMatchObject({ state: 'placed', nodeId: 'n1' });
    expect(after?.reason).toBeUndefined();
    expect(after?.pendingUntilMs).toBeUndefined();
    expect(placed.state.usage('t1').sandboxes).toBe(1);
    expect(placed.state.index.get('n1')?.allocated.cpu).toBe(1000);

    const over = run([pendCmd('b', small), pendCmd('c', small)], placed.state);
    expect(over.results.map(outcomes)).toEqual([['pending'], ['rejected']]);
    expect(over.state.sandbox('c')).toBeUndefined();
  });

  it('scheduler state - a pending sandbox that fails or is terminated gives its quota back; snapshots keep its deadline', () => {
    // Two pending sandboxes: one failed by a status at its deadline, one terminated by its owner. Usage goes
    // back to zero, the failed one keeps its reason, and a snapshot taken while one is still pending restores
    // to the same digest with the deadline intact.
    const s1 = spec('t1', 8000, 100);
    const { state: withPending } = run([
      { type: 'node.register', atMs: 1, spec: node('n1', 1000) },
      pendCmd('a', s1, 400),
      pendCmd('b', s1, 900),
    ]);
    const restored = decodeSnapshot(encodeSnapshot(withPending));
    expect(stateDigest(restored)).toBe(stateDigest(withPending));
    expect(restored.sandbox('b')?.pendingUntilMs).toBe(900);
    expect(restored.usage('t1').sandboxes).toBe(2);

    const { state, results } = run(
      [
        {
          type: 'status',
          atMs: 401,
          items: [{ sandboxId: 'a', state: 'failed', reason: 'resources: short of cpu' }],
        },
        { type: 'terminate', atMs: 402, sandboxId: 'b' },
      ],
      restored,
    );
    expect(results.every((r) => r.ok && r.itemErrors === undefined)).toBe(true);
    expect(state.sandbox('a')).toMatchObject({ state: 'failed', reason: 'resources: short of cpu' });
    expect(state.sandbox('b')).toBeUndefined();
    expect(state.usage('t1').sandboxes).toBe(0);
  });
});

const pendingOn = (state: SchedulerState): string[] =>
  [...state.sandboxes.values()].filter((sb) => sb.state === 'pending').map((sb) => sb.id);

describe('scheduler - the pending queue across leader changes', () => {
  it('scheduler raft - a waiting create is pending on every replica; a new leader rebuilds it and places it once', async () => {
    // n1 (4 cores) is full. Create `w` waits: it is committed pending on all three replicas with its
    // reason. Leadership moves by transfer; the caller's promise is carried over (its retry joins the
    // request the new leader rebuilt from state). Terminating the filler frees n1 and `w` is placed there,
    // exactly once, and the replicas agree.
    const log = RaftGroupLog.inMemory({ replicas: 3 });
    const s = createScheduler({ log, pipeline: { heartbeatIntervalMs: 5 } });
    await s.registerNode(node('n1'));
    const filler = await s.create(spec('t1', 4000, 100), { requestId: 'filler' });
    const waiting = s.create(spec('t1', 4000, 100), { requestId: 'w' });
    await until(() => [0, 1, 2].every((r) => pendingOn(log.machine(r).state).includes('w')), 'w pending');
    expect((await s.list({ state: 'pending' })).map((sb) => [sb.id, sb.reason])).toEqual([
      ['w', expect.stringMatching(/cpu|resources/)],
    ]);
    const old = log.leader() as number;
    await log.transferLeadership((old + 1) % 3);
    await until(() => log.leader() !== undefined && log.leader() !== old, 'a new leader');
    await s.terminate(filler.id);
    const placed = await waiting;
    expect(placed).toMatchObject({ id: 'w', state: 'placed', nodeId: 'n1' });
    const all = await s.list({ tenant: 't1' });
    expect(all.map((sb) => [sb.id, sb.state])).toEqual([['w', 'placed']]);
    await until(
      () => new Set([0, 1, 2].map((r) => stateDigest(log.machine(r).state))).size === 1,
      'converge',
    );
    await s.close();
    await log.close();
  });

  it('scheduler raft - a new leader fails a rebuilt pending create at its deadline, through the log', async () => {
    // A manual clock. `late` waits; leadership moves; the clock passes the deadline: the new leader commits
    // the failure, the caller gets NoCapacityError with the reason, and every replica has it failed.
    let nowMs = 1_000;
    const log = RaftGroupLog.inMemory({ replicas: 3 });
    const s = createScheduler({
      log,
      now: () => nowMs,
      pipeline: { heartbeatIntervalMs: 5, pendingTimeoutMs: 1_000 },
    });
    await s.registerNode(node('n1', 1000));
    const late = s.create(spec('t1', 2000, 100), { requestId: 'late' }).catch((e: unknown) => e);
    await until(() => pendingOn(log.machine(log.leader() as number).state).includes('late'), 'pending');
    const old = log.leader() as number;
    await log.transferLeadership((old + 1) % 3);
    await until(() => log.leader() !== undefined && log.leader() !== old, 'a new leader');
    nowMs = 5_000;
    const err = await late;
    expect(err).toBeInstanceOf(NoCapacityError);
    expect((err as NoCapacityError).details.reason).toMatch(/cpu|resources/);
    await until(
      () => [0, 1, 2].every((r) => log.machine(r).state.sandbox('late')?.state === 'failed'),
      'failed',
    );
    await s.close();
    await log.close();
  });

  it('scheduler - a pending sandbox applied after the leader started is adopted, and a retry joins it', async () => {
    // A `pend` entry proposed straight through the log stands for one an earlier leader recorded that this
    // leader applies only after it started leading. The leader adopts it; the caller's retry of `late`
    // joins it instead of being answered with the pending sandbox; a node with room places it, once.
    const s = createScheduler({ pipeline: { heartbeatIntervalMs: 5 } });
    await s.registerNode(node('n1', 1000));
    const big = spec('t1', 2000, 100);
    const leader = s.log.leader() as number;
    const recorded = await s.log.propose(
      leader,
      commandCodec.encode(pendCmd('late', big, Date.now() + 600_000, Date.now())),
    );
    expect(outcomes(recorded)).toEqual(['pending']);
    const retry = s.create(big, { requestId: 'r-late' });
    await new Promise((r) => setTimeout(r, 20));
    await s.registerNode(node('n2', 4000));
    expect(await retry).toMatchObject({ id: 'late', state: 'placed', nodeId: 'n2' });
    expect((await s.list({ tenant: 't1' })).map((sb) => sb.id)).toEqual(['late']);
    await s.close();
  });

  it('scheduler - a release wakes only the pending requests that fit the room it freed', async () => {
    // n1 (4 cores) holds a (2,000), b (1,500) and c (500); `w` wants 2,500 and waits. Releasing c leaves
    // 500 free and releasing b 2,000: neither may send `w` back to planning (no new batch). Releasing a
    // leaves 4,000 free, and `w` is placed.
    const s = createScheduler({ pipeline: { heartbeatIntervalMs: 5 } });
    await s.registerNode(node('n1'));
    const a = await s.create(spec('t1', 2000, 100), { requestId: 'a' });
    const b = await s.create(spec('t1', 1500, 100), { requestId: 'b' });
    const c = await s.create(spec('t1', 500, 100), { requestId: 'c' });
    const w = s.create(spec('t1', 2500, 100), { requestId: 'w' });
    await until(() => pendingOn(s.log.machine(s.log.leader() ?? 0).state).includes('w'), 'pending');
    const batches = s.stats().batches;
    await s.terminate(c.id);
    await s.terminate(b.id);
    await new Promise((r) => setTimeout(r, 20));
    expect(s.stats().batches).toBe(batches);
    await s.terminate(a.id);
    expect(await w).toMatchObject({ id: 'w', state: 'placed', nodeId: 'n1' });
    expect(s.stats().batches).toBe(batches + 1);
    await s.close();
  });

  it('scheduler - pending requests that expire together fail in one committed entry', async () => {
    // Three creates wait on a node too small for them; the clock passes their deadline. Each caller gets
    // NoCapacityError, and the three `pending → failed` events carry the same Raft index: one entry.
    let nowMs = 1_000;
    const s = createScheduler({
      now: () => nowMs,
      pipeline: { heartbeatIntervalMs: 5, pendingTimeoutMs: 100 },
    });
    await s.registerNode(node('n1', 1000));
    const watch = s.watch();
    const waiting = ['x', 'y', 'z'].map((id) =>
      s.create(spec('t1', 2000, 100), { requestId: id }).catch((e: unknown) => e),
    );
    await until(() => pendingOn(s.log.machine(s.log.leader() ?? 0).state).length === 3, 'all pending');
    nowMs = 2_000;
    for (const err of await Promise.all(waiting)) expect(err).toBeInstanceOf(NoCapacityError);
    const failedAt: number[] = [];
    while (failedAt.length < 3) {
      const { value } = await watch.next();
      if (value.kind === 'sandbox' && value.to === 'failed') failedAt.push(value.index);
    }
    expect(new Set(failedAt).size).toBe(1);
    await watch.return?.();
    await s.close();
  });

  it('scheduler - terminating a pending sandbox answers its create with SandboxCancelledError', async () => {
    // Nothing fits on n1; the owner gives up on the waiting sandbox by terminating it.
    const s = createScheduler({ pipeline: { heartbeatIntervalMs: 5 } });
    await s.registerNode(node('n1', 1000));
    const waiting = s.create(spec('t1', 2000, 100), { requestId: 'gone' }).catch((e: unknown) => e);
    await until(() => pendingOn(s.log.machine(s.log.leader() ?? 0).state).includes('gone'), 'pending');
    await s.terminate('gone');
    expect(await waiting).toBeInstanceOf(SandboxCancelledError);
    expect(await s.get('gone')).toBeUndefined();
    await s.close();
  });
});
