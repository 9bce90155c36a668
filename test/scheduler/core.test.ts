import { describe, expect, it } from 'vitest';
import { SchedulerCore } from '../../scheduler/core/core.js';
import { QuotaExceededError, RequestIdConflictError } from '../../scheduler/errors.js';
import { stateDigest } from '../../scheduler/state-machine.js';
import { node, spec } from './fixtures.js';

/** A core with one 4-core node, as the capacity simulator would set one up. */
function coreWithNode(): SchedulerCore {
  const core = new SchedulerCore({ pendingTimeoutMs: 1_000 });
  core.apply({ type: 'node.register', atMs: 0, spec: node('n1', 4000, 8192) });
  return core;
}

const byState = (core: SchedulerCore, state: string) =>
  [...core.state.sandboxes.values()].filter((s) => s.state === state).map((s) => s.id);

describe('scheduler core', () => {
  it('scheduler core - places what fits, records the rest pending, wakes it when room frees and fails it at its deadline', () => {
    // Six 1-core creates on a 4-core node, in virtual time with no Raft: four are placed and two recorded
    // pending with a reason. Terminating one placed sandbox wakes the waiting ones into the open batch; the
    // flush at t=500 places one; at t=1,000 (the deadline) the last one fails with its reason. Nothing waits
    // on a timer or a promise: time is the argument.
    const core = coreWithNode();
    for (let i = 0; i < 6; i++) expect(core.submit(`r${i}`, spec('t1', 1000, 512), 0)).toBe('queued');
    core.flush(0);
    expect(byState(core, 'placed')).toHaveLength(4);
    expect(byState(core, 'pending').sort()).toEqual(['r4', 'r5']);
    expect(core.state.sandbox('r4')?.reason).toMatch(/capacity|resources|cpu/i);
    expect(core.takeAnswers().map((a) => a.kind)).toEqual([
      'committed',
      'committed',
      'committed',
      'committed',
    ]);
    expect(core.takeParked().map((r) => r.requestId)).toEqual(['r4', 'r5']);

    core.apply({ type: 'terminate', atMs: 400, sandboxId: 'r0' });
    expect(core.batchSize).toBe(2);
    core.flush(500);
    expect(core.state.sandbox('r4')?.state).toBe('placed');
    expect(core.state.sandbox('r5')?.state).toBe('pending');
    expect(core.takeAnswers()).toEqual([{ requestId: 'r4', kind: 'committed', spec: spec('t1', 1000, 512) }]);

    core.tick(999);
    expect(core.state.sandbox('r5')?.state).toBe('pending');
    core.tick(1_000);
    expect(core.state.sandbox('r5')?.state).toBe('failed');
    expect(core.takeAnswers().map((a) => [a.requestId, a.kind])).toEqual([['r5', 'no-capacity']]);
    expect(core.state.index.get('n1')?.allocated.cpu).toBe(4000);
  });

  it('scheduler core - admission answers retries, conflicts and quota without planning them', () => {
    // A retry of a committed id is answered from state; the same id with another spec and a create past the
    // tenant's quota are refused with typed errors and change nothing; a retry of an open one joins it.
    const core = coreWithNode();
    core.apply({ type: 'quota.set', atMs: 0, tenant: 't2', quota: { sandboxes: 1 } });
    core.submit('a', spec('t1', 500), 1);
    core.flush(1);
    expect(core.submit('a', spec('t1', 500), 2)).toBe('committed');
    expect(() => core.submit('a', spec('t1', 600), 2)).toThrow(RequestIdConflictError);
    expect(core.submit('b', spec('t1', 700), 2)).toBe('queued');
    expect(core.submit('b', spec('t1', 700), 2)).toBe('joined');
    expect(core.submit('x', spec('t2', 100), 2)).toBe('queued');
    expect(() => core.submit('y', spec('t2', 100), 2)).toThrow(QuotaExceededError);
    expect(core.batchSize).toBe(2);
    core.flush(2);
    expect(byState(core, 'placed').sort()).toEqual(['a', 'b', 'x']);
  });

  it('scheduler core - the same inputs give the same commands and the same state', () => {
    // Two cores fed the same commands and creates decide identically, down to the state digest.
    const runOnce = () => {
      const core = coreWithNode();
      core.apply({ type: 'node.register', atMs: 0, spec: node('n2', 2000, 4096) });
      for (let t = 0; t < 5; t++) {
        for (let i = 0; i < 3; i++) core.submit(`r${t}-${i}`, spec('t1', 700, 256), t * 100);
        core.flush(t * 100);
      }
      core.tick(2_000);
      return stateDigest(core.state);
    };
    expect(runOnce()).toBe(runOnce());
  });
});
