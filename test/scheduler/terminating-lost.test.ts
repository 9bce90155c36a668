/**
 * A sandbox whose terminate was acknowledged (`terminating`) and whose node is then gone ends `terminated`,
 * not `lost`: its machine is gone, the caller asked for it to end, and nothing else would ever end it (the
 * 2,000-sandbox chaos run left one stuck in `lost` after its worker process was killed). Checked on the pure
 * apply, for both ways a node's sandboxes are given up: the node marked down, and a reconcile that leaves the
 * sandbox out. Sandboxes in the other live states still become `lost`, as before.
 */
import { describe, expect, it } from 'vitest';
import type { Command } from '../../scheduler/commands.js';
import {
  applyCommand,
  type CommandResult,
  type ReconcileResult,
  type SchedulerState,
} from '../../scheduler/state.js';
import type { SchedulerEvent } from '../../scheduler/types.js';
import { node, placeCmd, run, spec } from './fixtures.js';

/** n1 holds a (running, terminate acknowledged: terminating) and b (running); n2 holds c (terminating). */
function setup(): Command[] {
  return [
    { type: 'node.register', atMs: 1, spec: node('n1') },
    { type: 'node.register', atMs: 1, spec: node('n2') },
    placeCmd([
      ['a', spec('t1', 1000), 'n1'],
      ['b', spec('t1', 1000), 'n1'],
      ['c', spec('t1', 1000), 'n2'],
    ]),
    {
      type: 'status',
      atMs: 2,
      items: [
        { sandboxId: 'a', state: 'running' },
        { sandboxId: 'b', state: 'running' },
        { sandboxId: 'c', state: 'running' },
      ],
    },
    { type: 'terminate', atMs: 3, requestId: 't-a', sandboxId: 'a' },
    { type: 'terminate', atMs: 3, requestId: 't-c', sandboxId: 'c' },
  ];
}

function reconciled(r: CommandResult | undefined): ReconcileResult {
  if (r === undefined || !r.ok || r.reconciled === undefined) throw new Error(JSON.stringify(r));
  return r.reconciled;
}

function allocatedCpu(state: SchedulerState, nodeId: string): number {
  const v = state.index.get(nodeId);
  if (v === undefined) throw new Error(`no view of ${nodeId}`);
  return v.allocated.cpu;
}

describe('scheduler terminating sandbox on a lost node', () => {
  it('scheduler terminating sandbox on a lost node - the setup has a and c terminating', () => {
    const { state, results } = run(setup());
    expect(results.every((r) => r.ok)).toBe(true);
    expect(state.sandbox('a')?.state).toBe('terminating');
    expect(state.sandbox('c')?.state).toBe('terminating');
  });

  it('scheduler terminating sandbox on a lost node - node down ends a terminating sandbox terminated, a running one lost', () => {
    const before = run(setup()).state;
    const { state, results } = run([{ type: 'node.state', atMs: 4, nodeId: 'n1', state: 'down' }], before);
    expect(results[0]?.ok).toBe(true);
    // Terminated sandboxes are forgotten: a is gone, with its allocation and its tenant usage.
    expect(state.sandbox('a')).toBeUndefined();
    expect(state.sandbox('b')?.state).toBe('lost');
    expect(allocatedCpu(state, 'n1')).toBe(0);
    expect(state.usage('t1').sandboxes).toBe(before.usage('t1').sandboxes - 1);
    // n2 is untouched: c stays terminating there until its node confirms.
    expect(state.sandbox('c')?.state).toBe('terminating');
    expect(state.sandboxesOfNode('n1').size).toBe(0);
  });

  it('scheduler terminating sandbox on a lost node - the event says terminated, with the reason', () => {
    const before = run(setup()).state;
    const cmd: Command = { type: 'node.state', atMs: 4, nodeId: 'n1', state: 'down' };
    const { state, events } = applyCommand(before, cmd, before.applied + 1);
    expect(state.sandbox('a')).toBeUndefined();
    const ofA = events.filter((e: SchedulerEvent) => e.kind === 'sandbox' && e.sandboxId === 'a');
    expect(ofA).toEqual([
      expect.objectContaining({
        from: 'terminating',
        to: 'terminated',
        reason: expect.stringContaining('n1'),
      }),
    ]);
  });

  it('scheduler terminating sandbox on a lost node - a reconcile without it ends it terminated', () => {
    const before = run(setup()).state;
    // n2 restarted and reports nothing: c (terminating) is not there any more, so its terminate is done.
    const { state, results } = run(
      [
        { type: 'node.reconcile', atMs: 4, nodeId: 'n2', running: [] },
        { type: 'node.reconcile', atMs: 4, nodeId: 'n1', running: [] },
      ],
      before,
    );
    expect(results.every((r) => r.ok)).toBe(true);
    expect(state.sandbox('c')).toBeUndefined();
    expect(state.sandbox('a')).toBeUndefined();
    expect(state.sandbox('b')?.state).toBe('lost');
    expect(reconciled(results[0]).lost).toEqual([]);
    expect(reconciled(results[1]).lost).toEqual(['b']);
    expect(allocatedCpu(state, 'n2')).toBe(0);
    expect(allocatedCpu(state, 'n1')).toBe(0);
  });

  it('scheduler terminating sandbox on a lost node - the node coming back with it is told to stop it', () => {
    const down = run([...setup(), { type: 'node.state', atMs: 4, nodeId: 'n1', state: 'down' }]).state;
    // n1 returns still holding a (its stop never ran): a is an orphan for n1 to stop, not restored.
    const { state, results } = run(
      [
        {
          type: 'node.reconcile',
          atMs: 5,
          nodeId: 'n1',
          running: [
            { sandboxId: 'a', state: 'terminating' },
            { sandboxId: 'b', state: 'running' },
          ],
        },
      ],
      down,
    );
    const r = reconciled(results[0]);
    expect(r.orphans.map((o) => o.sandboxId)).toEqual(['a']);
    expect(r.restored).toEqual([{ sandboxId: 'b', state: 'running' }]);
    expect(state.sandbox('a')).toBeUndefined();
    expect(allocatedCpu(state, 'n1')).toBe(1000);
  });
});
