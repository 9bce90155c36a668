import { describe, expect, it } from 'vitest';
import { commandCodec } from '../../scheduler/commands.js';
import { applyCommand } from '../../scheduler/state.js';
import {
  decodeSnapshot,
  encodeSnapshot,
  SchedulerStateMachine,
  sharedEntryDecoder,
  stateDigest,
} from '../../scheduler/state-machine.js';
import { CodecError } from '../../src/lib/errors.js';
import { node, placeCmd, run, spec } from './fixtures.js';

describe('scheduler state', () => {
  it('scheduler - a place batch never over-commits: the item that no longer fits is rejected alone', () => {
    // Two nodes of 4 cores; a plan puts three 2-core sandboxes on n1. The third must be rejected with an
    // over-commit reason while the first two commit, and n1's allocation must equal its capacity.
    const { state, results } = run([
      { type: 'node.register', atMs: 1, spec: node('n1') },
      { type: 'node.register', atMs: 1, spec: node('n2') },
      placeCmd([
        ['a', spec('t1', 2000), 'n1'],
        ['b', spec('t1', 2000), 'n1'],
        ['c', spec('t1', 2000), 'n1'],
      ]),
    ]);
    const items = results[2]?.ok ? (results[2].items ?? []) : [];
    expect(items.map((i) => i.outcome)).toEqual(['placed', 'placed', 'rejected']);
    const rejected = items[2];
    expect(rejected?.outcome === 'rejected' ? rejected.error.code : '').toBe('PLACEMENT_OVER_COMMIT');
    expect(state.index.get('n1')?.allocated.cpu).toBe(4000);
    expect(state.sandboxes.size).toBe(2);
  });

  it('scheduler - a request id commits once: a re-proposed plan is reported as a duplicate', () => {
    // The same place item applied twice (a new leader re-proposing a plan already in the log) must create
    // one sandbox and one allocation; the second result names the first sandbox.
    const cmd = placeCmd([['a', spec(), 'n1']]);
    const { state, results } = run([{ type: 'node.register', atMs: 1, spec: node('n1') }, cmd, cmd]);
    expect(state.sandboxes.size).toBe(1);
    expect(state.index.get('n1')?.allocated.cpu).toBe(1000);
    const second = results[2];
    expect(second?.ok && second.items?.[0]?.outcome).toBe('duplicate');
  });

  it('scheduler - lifecycle: run, suspend, resume on the snapshot node, terminate releases everything', () => {
    // Walks one sandbox through the whole lifecycle with status reports and checks the allocation on its
    // node at each step: held while running, released while suspended, held again on resume, gone at the end.
    const steps = run([
      { type: 'node.register', atMs: 1, spec: node('n1') },
      placeCmd([['a', spec(), 'n1']]),
      { type: 'status', atMs: 2, items: [{ sandboxId: 'a', state: 'running' }] },
      { type: 'suspend', atMs: 3, sandboxId: 'a' },
      { type: 'status', atMs: 4, items: [{ sandboxId: 'a', state: 'suspended' }] },
    ]);
    let state = steps.state;
    expect(state.sandbox('a')?.state).toBe('suspended');
    expect(state.sandbox('a')?.snapshotNodeId).toBe('n1');
    expect(state.index.get('n1')?.allocated.cpu).toBe(0);
    state = run(
      [
        { type: 'resume', atMs: 5, sandboxId: 'a', nodeId: 'n1' },
        { type: 'status', atMs: 6, items: [{ sandboxId: 'a', state: 'running' }] },
      ],
      state,
    ).state;
    expect(state.sandbox('a')?.state).toBe('running');
    expect(state.index.get('n1')?.allocated.cpu).toBe(1000);
    state = run(
      [
        { type: 'terminate', atMs: 7, sandboxId: 'a' },
        { type: 'status', atMs: 8, items: [{ sandboxId: 'a', state: 'terminated' }] },
      ],
      state,
    ).state;
    expect(state.sandbox('a')).toBeUndefined();
    expect(state.index.get('n1')?.allocated.cpu).toBe(0);
    expect(state.usage('t1').sandboxes).toBe(0);
  });

  it('scheduler - a node going down loses its sandboxes and frees its capacity', () => {
    // Marks a node down with two sandboxes on it; both must become lost with a reason naming the node.
    const { state } = run([
      { type: 'node.register', atMs: 1, spec: node('n1') },
      placeCmd([
        ['a', spec(), 'n1'],
        ['b', spec(), 'n1'],
      ]),
      { type: 'node.state', atMs: 9, nodeId: 'n1', state: 'down' },
    ]);
    expect(state.sandbox('a')?.state).toBe('lost');
    expect(state.sandbox('b')?.reason).toContain('n1');
    expect(state.index.get('n1')?.allocated.cpu).toBe(0);
    expect(state.sandboxesOfNode('n1').size).toBe(0);
  });

  it('scheduler - resume policy fail fails the sandbox when no node can take it', () => {
    // A suspended sandbox with policy `fail` and no node chosen must end failed with a reason.
    const { state } = run([
      { type: 'node.register', atMs: 1, spec: node('n1') },
      placeCmd([['a', spec('t1', 1000, 1024, { resumePolicy: 'fail' }), 'n1']]),
      { type: 'status', atMs: 2, items: [{ sandboxId: 'a', state: 'running' }] },
      { type: 'suspend', atMs: 3, sandboxId: 'a' },
      { type: 'status', atMs: 4, items: [{ sandboxId: 'a', state: 'suspended' }] },
      { type: 'resume', atMs: 5, sandboxId: 'a' },
    ]);
    expect(state.sandbox('a')?.state).toBe('failed');
    expect(state.sandbox('a')?.reason).toContain('resume');
  });

  it('scheduler - snapshot and restore give the same state, index included', () => {
    // Builds a state with nodes, sandboxes in several states, a quota and dedup entries, round-trips it
    // through the snapshot, and compares canonical digests; then applies one more command to both and
    // compares again, so the restored index is live, not just printable.
    const { state } = run([
      { type: 'node.register', atMs: 1, spec: node('n1') },
      { type: 'node.register', atMs: 1, spec: node('n2', 8000) },
      { type: 'quota.set', atMs: 1, tenant: 't2', quota: { sandboxes: 10 } },
      placeCmd([
        ['a', spec(), 'n1'],
        ['b', spec('t2'), 'n2'],
        ['c', spec('t2', 3000), 'n2'],
      ]),
      { type: 'status', atMs: 2, items: [{ sandboxId: 'b', state: 'running' }] },
      { type: 'suspend', atMs: 3, sandboxId: 'b' },
    ]);
    const restored = decodeSnapshot(encodeSnapshot(state));
    expect(stateDigest(restored)).toBe(stateDigest(state));
    expect(restored.applied).toBe(state.applied);
    const more = placeCmd([['d', spec('t2', 4000), 'n2']]);
    expect(stateDigest(run([more], restored).state)).toBe(stateDigest(run([more], state).state));
  });

  it('scheduler - the state machine decodes entries, skips no-ops and refuses undecodable ones', () => {
    // Feeds a Raft-shaped entry stream (no-op, command, garbage) to the state machine: the no-op and the
    // garbage only advance `applied`, the command registers its node.
    const sm = new SchedulerStateMachine();
    sm.apply({ term: 1, index: 1, type: 'normal', data: new Uint8Array() });
    sm.apply({
      term: 1,
      index: 2,
      type: 'normal',
      data: commandCodec.encode({ type: 'node.register', atMs: 1, spec: node('n1') }),
    });
    const bad = sm.apply({ term: 1, index: 3, type: 'normal', data: new Uint8Array([1, 2, 3]) });
    expect(bad.ok).toBe(false);
    expect(sm.state.applied).toBe(3);
    expect(sm.state.nodes.has('n1')).toBe(true);
  });
});

describe('scheduler state - replace', () => {
  it('scheduler state - replace places a lost stateless sandbox again and refuses anything else, item by item', () => {
    // s1 (stateless) and s2 are lost with n1; a replace of s1 to n2 commits, while s2 (stateful), an
    // unknown id and a move onto a node without room are refused alone with typed errors.
    const { state } = run([
      { type: 'node.register', atMs: 1, spec: node('n1') },
      { type: 'node.register', atMs: 1, spec: node('n2', 1000) },
      placeCmd([
        ['s1', spec('t1', 800, 512, { stateless: true }), 'n1'],
        ['s2', spec('t1', 800, 512), 'n1'],
        ['s3', spec('t1', 800, 512, { stateless: true }), 'n1'],
      ]),
      { type: 'node.state', atMs: 2, nodeId: 'n1', state: 'down' },
    ]);
    const r = applyCommand(
      state,
      {
        type: 'replace',
        atMs: 3,
        items: [
          { sandboxId: 's1', nodeId: 'n2', gpuDevices: [] },
          { sandboxId: 's2', nodeId: 'n2', gpuDevices: [] },
          { sandboxId: 'nope', nodeId: 'n2', gpuDevices: [] },
          { sandboxId: 's3', nodeId: 'n2', gpuDevices: [] },
        ],
      },
      state.applied + 1,
    );
    expect(r.state.sandbox('s1')).toMatchObject({ state: 'placed', nodeId: 'n2' });
    expect(r.state.sandbox('s1')?.reason).toBeUndefined();
    expect(r.state.sandbox('s2')?.state).toBe('lost');
    expect(r.state.sandbox('s3')?.state).toBe('lost'); // n2 (1,000 mcpu) has no room left after s1
    const codes = (r.result.ok ? (r.result.itemErrors ?? []) : []).map((e: { code: string }) => e.code);
    expect(codes).toEqual(['SCHED_ILLEGAL_TRANSITION', 'SCHED_UNKNOWN_SANDBOX', 'SCHED_NO_CAPACITY']);
    expect(r.state.index.get('n2')?.allocated.cpu).toBe(800);
  });
});

describe('scheduler - one decode per entry for replicas in one process', () => {
  it('scheduler state - the shared decoder gives every replica the same command for the same index and term', () => {
    // Log matching: same index and term means the same entry. Replicas asking for it get one decoded object;
    // another term at that index is another entry; bytes that do not decode fail the same way every time,
    // and the state machines still apply identically.
    const decode = sharedEntryDecoder(2);
    const data = commandCodec.encode({ type: 'node.register', atMs: 1, spec: node('n1') });
    const entry = (term: number, index: number, bytes = data) => ({
      term,
      index,
      type: 'normal' as const,
      data: bytes,
    });
    const first = decode(entry(1, 5));
    expect(decode(entry(1, 5))).toBe(first);
    expect(decode(entry(2, 5))).not.toBe(first);
    expect(decode(entry(2, 5))).toEqual(first);
    const garbage = new Uint8Array([1, 2, 3]);
    expect(() => decode(entry(1, 6, garbage))).toThrow(CodecError);
    expect(() => decode(entry(1, 6, garbage))).toThrow(CodecError);
    const a = new SchedulerStateMachine(decode);
    const b = new SchedulerStateMachine(decode);
    for (const m of [a, b]) {
      expect(m.apply(entry(1, 1)).ok).toBe(true);
      expect(m.apply(entry(1, 2, garbage)).ok).toBe(false);
    }
    expect(stateDigest(a.state)).toBe(stateDigest(b.state));
    expect(a.state.nodes.get('n1')?.spec).toBe(b.state.nodes.get('n1')?.spec);
  });
});
