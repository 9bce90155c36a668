import { describe, expect, it } from 'vitest';
import type { Command } from '../../scheduler/commands.js';
import { RequestIdConflictError } from '../../scheduler/errors.js';
import { RaftGroupLog } from '../../scheduler/raft-group.js';
import { createScheduler } from '../../scheduler/scheduler.js';
import { applyCommand, dedupRetentionMs, type SchedulerState } from '../../scheduler/state.js';
import { decodeSnapshot, encodeSnapshot, stateDigest } from '../../scheduler/state-machine.js';
import type { SchedulerEvent } from '../../scheduler/types.js';
import { until } from '../helpers/until.js';
import { node, placeCmd, run, spec } from './fixtures.js';

/** Applies `cmd` at the next index and returns the result and the events it produced. */
function step(state: SchedulerState, cmd: Command) {
  return applyCommand(state, cmd, state.applied + 1);
}

describe('scheduler idempotency of every mutating command', () => {
  it('scheduler idempotency - a repeated terminate, suspend, quota or register applies once and answers the first outcome', () => {
    // Each command is applied twice with the same request id, as a retry after a lost reply would be. The
    // second application must change nothing but `applied`, emit no event, and return the first result
    // (a success even where a second real apply would fail: the node exists, the sandbox is gone).
    const base = run([
      { type: 'node.register', atMs: 1, requestId: 'reg-1', spec: node('n1') },
      placeCmd([
        ['a', spec(), 'n1'],
        ['b', spec(), 'n1'],
      ]),
      { type: 'status', atMs: 2, items: [{ sandboxId: 'b', state: 'running' }] },
    ]).state;
    const cmds: Command[] = [
      { type: 'node.register', atMs: 3, requestId: 'reg-1', spec: node('n1') },
      { type: 'terminate', atMs: 3, requestId: 'term-1', sandboxId: 'a' },
      { type: 'suspend', atMs: 3, requestId: 'susp-1', sandboxId: 'b' },
      { type: 'quota.set', atMs: 3, requestId: 'q-1', tenant: 't1', quota: { sandboxes: 5 } },
    ];
    let state = base;
    for (const cmd of cmds) {
      const first = step(state, cmd);
      const second = step(first.state, { ...cmd, atMs: 4 });
      expect(second.result, cmd.type).toEqual(first.result);
      expect(second.result.ok, cmd.type).toBe(true);
      expect(second.events, cmd.type).toEqual([]);
      expect(stateDigest(second.state), cmd.type).toBe(stateDigest(first.state));
      state = second.state;
    }
    // The register's first outcome was already recorded by the base run, so its retry emitted nothing too.
    expect(state.sandbox('a')).toBeUndefined();
    expect(state.sandbox('b')?.state).toBe('suspending');
    expect(state.quotas.get('t1')).toEqual({ sandboxes: 5 });
  });

  it('scheduler idempotency - a refusal leaves no trace, and another call under the same id is a conflict', () => {
    // A terminate of an unknown sandbox is refused and changes nothing, its request id included (bad input
    // leaves the state as it was). Once an id has taken effect, the same id on a different sandbox, on a
    // different kind of call, or on a create is refused with RequestIdConflictError and changes nothing.
    let { state } = run([{ type: 'node.register', atMs: 1, spec: node('n1') }]);
    const refused = step(state, { type: 'terminate', atMs: 2, requestId: 'x', sandboxId: 'a' });
    expect(refused.result.ok ? '' : refused.result.error.code).toBe('SCHED_UNKNOWN_SANDBOX');
    expect(stateDigest(refused.state)).toBe(stateDigest(state));
    state = step(
      refused.state,
      placeCmd([
        ['a', spec(), 'n1'],
        ['b', spec(), 'n1'],
      ]),
    ).state;
    const retry = step(state, { type: 'terminate', atMs: 3, requestId: 'x', sandboxId: 'b' });
    expect(retry.result).toEqual({ ok: true });
    expect(retry.state.sandbox('b')).toBeUndefined();
    for (const other of [
      { type: 'terminate', atMs: 3, requestId: 'x', sandboxId: 'a' },
      { type: 'suspend', atMs: 3, requestId: 'x', sandboxId: 'a' },
      { type: 'quota.set', atMs: 3, requestId: 'x', tenant: 't1', quota: {} },
    ] as Command[]) {
      const r = step(retry.state, other);
      expect(r.result.ok ? '' : r.result.error.code, other.type).toBe(new RequestIdConflictError('').code);
      expect(stateDigest(r.state)).toBe(stateDigest(retry.state.withApplied(r.state.applied)));
    }
    const asCreate = placeCmd([['c', spec(), 'n1']]);
    const item = asCreate.type === 'place' ? asCreate.items[0] : undefined;
    if (item === undefined) throw new Error('placeCmd builds a place command');
    const placed = step(retry.state, { type: 'place', atMs: 3, items: [{ ...item, requestId: 'x' }] });
    const out = placed.result.ok ? placed.result.items?.[0] : undefined;
    expect(out?.outcome === 'rejected' ? out.error.code : out?.outcome).toBe('SCHED_REQUEST_ID_CONFLICT');
    expect(placed.state.sandbox('c')).toBeUndefined();
  });

  it('scheduler idempotency - first outcomes survive a snapshot round trip and expire by the leader-stamped time', () => {
    // The dedup table with command outcomes goes through encodeSnapshot/decodeSnapshot unchanged: a retry
    // on the restored state still answers the first outcome. An entry older than the retention (by the
    // atMs of a later command, never a clock in apply) is forgotten, so the same id then applies anew.
    const { state } = run([
      { type: 'node.register', atMs: 1, spec: node('n1') },
      placeCmd([['a', spec(), 'n1']]),
      { type: 'quota.set', atMs: 10, requestId: 'q-1', tenant: 't1', quota: { sandboxes: 5 } },
      { type: 'terminate', atMs: 10, requestId: 'term-1', sandboxId: 'a' },
    ]);
    const restored = decodeSnapshot(encodeSnapshot(state));
    expect(stateDigest(restored)).toBe(stateDigest(state));
    expect(restored.dedup.get('term-1')?.result).toEqual({ ok: true });
    const retry = step(restored, { type: 'terminate', atMs: 11, requestId: 'term-1', sandboxId: 'a' });
    expect(retry.result).toEqual({ ok: true });
    const later = 10 + dedupRetentionMs + 1;
    const aged = step(restored, {
      type: 'quota.set',
      atMs: later,
      requestId: 'q-2',
      tenant: 't2',
      quota: {},
    });
    expect(aged.state.dedup.has('term-1')).toBe(false);
    expect(aged.state.dedup.has('q-2')).toBe(true);
    const anew = step(aged.state, { type: 'terminate', atMs: later, requestId: 'term-1', sandboxId: 'a' });
    expect(anew.result.ok ? '' : anew.result.error.code).toBe('SCHED_UNKNOWN_SANDBOX');
  });

  it('scheduler idempotency - retries through a Raft leader change apply once with one event each', async () => {
    // On a real 3-replica Raft group: register, quota, suspend and terminate each run with a request id,
    // leadership moves to another replica by Raft transfer, and each call is made again with its id (what a
    // client does when the reply was lost). Every retry resolves like the first, the replicas hold one
    // effect each (the later quota is not overwritten by the retried earlier one) and the committed events
    // hold one `registered`, one `suspending` and one `terminated`.
    const log = RaftGroupLog.inMemory({ replicas: 3 });
    const s = createScheduler({ log });
    const events: SchedulerEvent[] = [];
    log.machine(0).onApply(({ events: e }) => events.push(...e));
    try {
      await s.registerNode(node('n1'), { requestId: 'reg-1' });
      const a = await s.create(spec(), { requestId: 'c-a' });
      const b = await s.create(spec(), { requestId: 'c-b' });
      await s.reportStatus([{ sandboxId: b.id, state: 'running' }]);
      await s.setQuota('t1', { sandboxes: 5 }, { requestId: 'q-1' });
      await s.setQuota('t1', { sandboxes: 7 }, { requestId: 'q-2' });
      await s.suspend(b.id, { requestId: 'susp-1' });
      await s.terminate(a.id, { requestId: 'term-1' });
      const before = log.leader() as number;
      await log.transferLeadership((before + 1) % 3);
      await until(() => log.leader() === (before + 1) % 3, 'leadership moved');
      await s.registerNode(node('n1'), { requestId: 'reg-1' });
      await s.setQuota('t1', { sandboxes: 5 }, { requestId: 'q-1' });
      await s.suspend(b.id, { requestId: 'susp-1' });
      await s.terminate(a.id, { requestId: 'term-1' });
      await expect(s.terminate(b.id, { requestId: 'term-1' })).rejects.toBeInstanceOf(RequestIdConflictError);
      await until(
        () => log.machine(0).state.applied === log.machine(log.leader() as number).state.applied,
        'r0 caught up',
      );
      const state = log.machine(0).state;
      expect(state.quotas.get('t1')).toEqual({ sandboxes: 7 });
      expect(state.sandbox(a.id)).toBeUndefined();
      expect(state.sandbox(b.id)?.state).toBe('suspending');
      const count = (pred: (e: SchedulerEvent) => boolean) => events.filter(pred).length;
      expect(count((e) => e.kind === 'node' && e.change === 'registered')).toBe(1);
      expect(count((e) => e.kind === 'sandbox' && e.to === 'suspending')).toBe(1);
      expect(count((e) => e.kind === 'sandbox' && e.to === 'terminated')).toBe(1);
    } finally {
      await s.close();
      await log.close();
    }
  });
});
