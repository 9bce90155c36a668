import { describe, expect, it } from 'vitest';
import { type AdmitRequest, SchedulerCore } from '../../scheduler/core/core.js';
import { stateDigest } from '../../scheduler/state-machine.js';
import { node, spec } from './fixtures.js';

/** A core with one 4-core node, as the capacity simulator would set one up. */
function coreWithNode(): SchedulerCore {
  const core = new SchedulerCore({ pendingTimeoutMs: 1_000 });
  core.apply({ type: 'node.register', atMs: 0, spec: node('n1', 4000, 8192) });
  return core;
}

/** Applies every decided command; returns their results. */
function commit(core: SchedulerCore, requests: readonly AdmitRequest[], nowMs: number) {
  const d = core.admit(requests, nowMs);
  return { ...d, results: d.commands.map((c) => core.apply(c).result) };
}

describe('scheduler core', () => {
  it('scheduler core - admit places what fits, records the rest pending, wakes it when room frees and fails it at its deadline', () => {
    // Six 1-core creates on a 4-core node, in virtual time with no Raft: four are placed and two recorded
    // pending with a reason. Terminating one placed sandbox and admitting nothing new at t=500 places one
    // waiting sandbox; at t=1,000 (the deadline) the last one fails with its reason. Nothing waits on a
    // timer or a promise: time is the argument.
    const core = coreWithNode();
    const reqs = Array.from({ length: 6 }, (_, i) => ({ requestId: `r${i}`, spec: spec('t1', 1000, 512) }));
    const first = commit(core, reqs, 0);
    expect(first.commands.map((c) => c.type)).toEqual(['place', 'pend']);
    expect([...core.state.sandboxes.values()].filter((s) => s.state === 'placed').length).toBe(4);
    const pending = [...core.state.sandboxes.values()].filter((s) => s.state === 'pending');
    expect(pending.map((s) => s.id).sort()).toEqual(['r4', 'r5']);
    expect(pending[0]?.reason).toMatch(/capacity|resources|cpu/i);

    core.apply({ type: 'terminate', atMs: 400, sandboxId: 'r0' });
    const wake = commit(core, [], 500);
    expect(wake.commands.map((c) => c.type)).toEqual(['place']);
    expect(core.state.sandbox('r4')?.state).toBe('placed');
    expect(core.state.sandbox('r5')?.state).toBe('pending');

    const expire = commit(core, [], 1_000);
    expect(expire.commands.map((c) => c.type)).toEqual(['status']);
    expect(core.state.sandbox('r5')?.state).toBe('failed');
    expect(core.state.index.get('n1')?.allocated.cpu).toBe(4000);
  });

  it('scheduler core - admission answers retries, conflicts and quota without planning them', () => {
    // A retry of a committed id is answered with its sandbox; the same id with another spec and a create
    // past the tenant's quota are refused with their codes; a duplicate within one admit counts once.
    const core = coreWithNode();
    core.apply({ type: 'quota.set', atMs: 0, tenant: 't2', quota: { sandboxes: 1 } });
    commit(core, [{ requestId: 'a', spec: spec('t1', 500) }], 1);
    const d = core.admit(
      [
        { requestId: 'a', spec: spec('t1', 500) },
        { requestId: 'a', spec: spec('t1', 600) },
        { requestId: 'b', spec: spec('t1', 700) },
        { requestId: 'x', spec: spec('t2', 100) },
        { requestId: 'y', spec: spec('t2', 100) },
      ],
      2,
    );
    expect(d.committed).toEqual([{ requestId: 'a', sandboxId: 'a' }]);
    expect(d.refused).toEqual([
      { requestId: 'y', error: expect.objectContaining({ code: 'SCHED_QUOTA_EXCEEDED' }) },
    ]);
    const conflict = core.admit([{ requestId: 'a', spec: spec('t1', 600) }], 3);
    expect(conflict.refused[0]?.error.code).toBe('SCHED_REQUEST_ID_CONFLICT');
    const place = d.commands[0];
    expect(place?.type === 'place' ? place.items.map((i) => i.requestId) : []).toEqual(['b', 'x']);
  });

  it('scheduler core - the same inputs give the same commands and the same state', () => {
    // Two cores fed the same commands and admits decide identically, down to the state digest.
    const runOnce = () => {
      const core = coreWithNode();
      core.apply({ type: 'node.register', atMs: 0, spec: node('n2', 2000, 4096) });
      for (let t = 0; t < 5; t++)
        commit(
          core,
          Array.from({ length: 3 }, (_, i) => ({ requestId: `r${t}-${i}`, spec: spec('t1', 700, 256) })),
          t * 100,
        );
      return stateDigest(core.state);
    };
    expect(runOnce()).toBe(runOnce());
  });
});
