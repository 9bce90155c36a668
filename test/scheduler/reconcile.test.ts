import { Decoder, Encoder } from '@msgpack/msgpack';
import { describe, expect, it } from 'vitest';
import { UnknownNodeError } from '../../placement/index.js';
import {
  type Command,
  commandCodec,
  reconcileReportMax,
  reconcileReportSchema,
} from '../../scheduler/commands.js';
import { type NodeHeldState, nodeHeldStates } from '../../scheduler/lifecycle.js';
import { type Applied, applyCommand, type ReconcileResult, SchedulerState } from '../../scheduler/state.js';
import {
  decodeSnapshot,
  encodeSnapshot,
  encodeSnapshotV4,
  stateDigest,
} from '../../scheduler/state-machine.js';
import type { SchedulerEvent } from '../../scheduler/types.js';
import { CodecError, ValidationError } from '../../src/lib/errors.js';
import { createRng } from '../../src/lib/prng.js';
import { eventsCodec } from '../../src/nats/events.js';
import { startTestCluster } from '../../src/testing/index.js';
import { until as poll, type UntilCondition } from '../helpers/until.js';
import { node, placeCmd, run, spec } from './fixtures.js';

type Report = { sandboxId: string; state: NodeHeldState }[];

function reconcileCmd(nodeId: string, running: Report, atMs = 10): Command {
  return { type: 'node.reconcile', atMs, nodeId, running };
}

function apply(state: SchedulerState, cmd: Command): Applied {
  return applyCommand(state, cmd, state.applied + 1);
}

function reconciled(a: Applied): ReconcileResult {
  if (!a.result.ok || a.result.reconciled === undefined) throw new Error(JSON.stringify(a.result));
  return a.result.reconciled;
}

/** Every node's allocation is within its capacity, in cpu, memory and disk. */
function expectWithinCapacity(state: SchedulerState): void {
  for (const id of state.nodes.keys()) {
    const v = state.index.get(id);
    if (v === undefined) throw new Error(`no view of ${id}`);
    expect(v.allocated.cpu, id).toBeLessThanOrEqual(v.spec.capacity.cpu);
    expect(v.allocated.memory, id).toBeLessThanOrEqual(v.spec.capacity.memory);
    expect(v.allocated.disk, id).toBeLessThanOrEqual(v.spec.capacity.disk);
  }
}

/**
 * n1 (4 cores) holds a (running, stateful), b (running, stateless) and c (placed, stateful); n2 holds d.
 * Then n1 goes down, so a, b and c are lost from n1.
 */
function downState(): SchedulerState {
  return run([
    { type: 'node.register', atMs: 1, spec: node('n1') },
    { type: 'node.register', atMs: 1, spec: node('n2') },
    placeCmd([
      ['a', spec('t1', 1000), 'n1'],
      ['b', spec('t1', 1000, 1024, { stateless: true }), 'n1'],
      ['c', spec('t1', 1000), 'n1'],
      ['d', spec('t1', 1000), 'n2'],
    ]),
    {
      type: 'status',
      atMs: 2,
      items: [
        { sandboxId: 'a', state: 'running' },
        { sandboxId: 'b', state: 'running' },
        { sandboxId: 'd', state: 'running' },
      ],
    },
    { type: 'node.state', atMs: 3, nodeId: 'n1', state: 'down' },
  ]).state;
}

describe('scheduler reconcile - rules', () => {
  it('scheduler reconcile - a returning node goes ready with a fresh heartbeat and gets back what it reports', () => {
    // n1 went down with a, b, c. It comes back reporting a running and c starting: both are restored in the
    // reported state on n1 with their allocation, n1 is ready with its heartbeat at the command's time, and
    // b (not reported, already lost) stays lost for the re-placement path.
    const before = downState();
    expect(before.sandbox('a')).toMatchObject({ state: 'lost', lostFrom: { nodeId: 'n1' } });
    expect(before.index.get('n1')?.allocated.cpu).toBe(0);
    const r = apply(
      before,
      reconcileCmd('n1', [
        { sandboxId: 'c', state: 'starting' },
        { sandboxId: 'a', state: 'running' },
      ]),
    );
    expect(reconciled(r)).toEqual({
      restored: [
        { sandboxId: 'a', state: 'running' },
        { sandboxId: 'c', state: 'starting' },
      ],
      lost: [],
      failed: [],
      orphans: [],
    });
    const s = r.state;
    expect(s.nodes.get('n1')).toMatchObject({ spec: { state: 'ready' }, lastHeartbeatMs: 10 });
    expect(s.index.get('n1')?.state).toBe('ready');
    expect(s.sandbox('a')).toMatchObject({ state: 'running', nodeId: 'n1', updatedAtMs: 10 });
    expect(s.sandbox('a')?.reason).toBeUndefined();
    expect(s.sandbox('a')?.lostFrom).toBeUndefined();
    expect(s.sandbox('c')).toMatchObject({ state: 'starting', nodeId: 'n1' });
    expect(s.sandbox('b')).toMatchObject({ state: 'lost', lostFrom: { nodeId: 'n1' } });
    expect(s.index.get('n1')?.allocated.cpu).toBe(2000);
    expect([...s.sandboxesOfNode('n1')].sort()).toEqual(['a', 'c']);
    expect(s.usage('t1').sandboxes).toBe(4);
    const seen = r.events.map((e) =>
      e.kind === 'sandbox' ? `${e.sandboxId}:${e.from}>${e.to}@${e.nodeId}` : `${e.kind}:${e.nodeId}`,
    );
    expect(seen).toEqual(['node:n1', 'a:lost>running@n1', 'c:lost>starting@n1']);
    expectWithinCapacity(s);
  });

  it('scheduler reconcile - a sandbox living elsewhere, finished or unknown is an orphan and left as it is', () => {
    // b is re-placed on n2 while n1 is down, e fails on n2. n1 then reports b, d (always on n2), e and an id
    // the scheduler never saw: all four are orphans with a reason and an event, and none of them changes.
    let state = downState();
    state = run(
      [
        { type: 'replace', atMs: 4, items: [{ sandboxId: 'b', nodeId: 'n2', gpuDevices: [] }] },
        placeCmd([['e', spec(), 'n2']], 4),
        { type: 'status', atMs: 5, items: [{ sandboxId: 'e', state: 'failed', reason: 'crashed' }] },
      ],
      state,
    ).state;
    expect(state.sandbox('b')).toMatchObject({ state: 'placed', nodeId: 'n2' });
    const r = apply(
      state,
      reconcileCmd('n1', [
        { sandboxId: 'b', state: 'running' },
        { sandboxId: 'd', state: 'running' },
        { sandboxId: 'e', state: 'running' },
        { sandboxId: 'ghost', state: 'running' },
      ]),
    );
    const result = reconciled(r);
    expect(result.orphans.map((o) => o.sandboxId)).toEqual(['b', 'd', 'e', 'ghost']);
    expect(result.orphans.map((o) => o.reason)).toEqual([
      'it runs on node n2',
      'it runs on node n2',
      'it is failed',
      'unknown to the scheduler (never placed, or terminated)',
    ]);
    expect(result.restored).toEqual([]);
    for (const id of ['b', 'd', 'e']) expect(r.state.sandbox(id)).toBe(state.sandbox(id));
    expect(r.state.sandbox('ghost')).toBeUndefined();
    expect(r.state.index.get('n2')).toEqual(state.index.get('n2'));
    const orphanEvents = r.events.filter(
      (e): e is Extract<SchedulerEvent, { kind: 'orphan' }> => e.kind === 'orphan',
    );
    expect(orphanEvents.map((e) => [e.nodeId, e.sandboxId, e.index])).toEqual([
      ['n1', 'b', r.state.applied],
      ['n1', 'd', r.state.applied],
      ['n1', 'e', r.state.applied],
      ['n1', 'ghost', r.state.applied],
    ]);
    // The orphan events pass the NATS events codec, so followers of the events subject see them too.
    expect(eventsCodec.decode(eventsCodec.encode(r.events))).toEqual(r.events);
    // a and c were lost from n1 and not reported: they stay lost, still remembering n1.
    expect(r.state.sandbox('a')).toMatchObject({ state: 'lost', lostFrom: { nodeId: 'n1' } });
  });

  it('scheduler reconcile - a sandbox lost from another node is an orphan here', () => {
    // a was lost from n1; n2 reports it. n2 cannot have it legitimately: orphan, and a keeps its memory
    // of n1 so n1's own reconcile can still restore it.
    const state = downState();
    const r = apply(state, reconcileCmd('n2', [{ sandboxId: 'a', state: 'running' }]));
    const result = reconciled(r);
    expect(result.orphans).toEqual([{ sandboxId: 'a', reason: 'it was lost from node n1' }]);
    // n2 did not report d, which it runs: d is lost.
    expect(result.lost).toEqual(['d']);
    expect(r.state.sandbox('a')).toBe(state.sandbox('a'));
    const back = apply(r.state, reconcileCmd('n1', [{ sandboxId: 'a', state: 'running' }], 11));
    expect(reconciled(back).restored).toEqual([{ sandboxId: 'a', state: 'running' }]);
  });

  it('scheduler reconcile - what the node does not report is lost, and a stateless one can be re-placed', () => {
    // n1 never went down (its agent restarted) and reports only a. b and c, which the state places on n1,
    // are lost with the reason "node n1 did not report it", and their allocation is released; b, being
    // stateless, is then accepted by the existing replace path onto n2.
    const { state } = run([
      { type: 'node.register', atMs: 1, spec: node('n1') },
      { type: 'node.register', atMs: 1, spec: node('n2') },
      placeCmd([
        ['a', spec('t1', 1000), 'n1'],
        ['b', spec('t1', 1000, 1024, { stateless: true }), 'n1'],
        ['c', spec('t1', 1000), 'n1'],
      ]),
    ]);
    const r = apply(state, reconcileCmd('n1', [{ sandboxId: 'a', state: 'running' }]));
    expect(reconciled(r)).toEqual({ restored: [], lost: ['b', 'c'], failed: [], orphans: [] });
    expect(r.state.sandbox('b')).toMatchObject({
      state: 'lost',
      reason: 'node n1 did not report it',
      lostFrom: { nodeId: 'n1', gpuDevices: [] },
    });
    // a is held already: reconcile leaves its state alone (progress is for status reports).
    expect(r.state.sandbox('a')).toBe(state.sandbox('a'));
    expect(r.state.index.get('n1')?.allocated.cpu).toBe(1000);
    expect(r.state.nodes.get('n1')?.lastHeartbeatMs).toBe(10);
    expect(r.events.filter((e) => e.kind === 'node')).toEqual([]);
    const replaced = apply(r.state, {
      type: 'replace',
      atMs: 11,
      items: [{ sandboxId: 'b', nodeId: 'n2', gpuDevices: [] }],
    });
    expect(replaced.result).toEqual({ ok: true });
    expect(replaced.state.sandbox('b')).toMatchObject({ state: 'placed', nodeId: 'n2' });
    expect(replaced.state.sandbox('b')?.lostFrom).toBeUndefined();
  });

  it('scheduler reconcile - a draining node stays draining, and its lost sandboxes still come back', () => {
    // Reconcile brings back only a down node; a draining one keeps its state (it takes no new placements,
    // but restoring what it holds is not a placement).
    const state = run([{ type: 'node.state', atMs: 4, nodeId: 'n1', state: 'draining' }], downState()).state;
    const r = apply(state, reconcileCmd('n1', [{ sandboxId: 'a', state: 'running' }]));
    expect(r.state.nodes.get('n1')?.spec.state).toBe('draining');
    expect(r.state.sandbox('a')).toMatchObject({ state: 'running', nodeId: 'n1' });
  });

  it('scheduler reconcile - a node reporting a sandbox suspended gets it back suspended with its snapshot', () => {
    // a was suspending when n1 died; the node finished the suspend and reports it suspended. It comes
    // back suspended with n1 as its snapshot node and takes no allocation.
    const state = run(
      [
        { type: 'node.register', atMs: 1, spec: node('n1') },
        placeCmd([['a', spec(), 'n1']]),
        { type: 'status', atMs: 2, items: [{ sandboxId: 'a', state: 'running' }] },
        { type: 'suspend', atMs: 3, sandboxId: 'a' },
        { type: 'node.state', atMs: 4, nodeId: 'n1', state: 'down' },
      ],
      SchedulerState.empty(),
    ).state;
    const r = apply(state, reconcileCmd('n1', [{ sandboxId: 'a', state: 'suspended' }]));
    expect(reconciled(r).restored).toEqual([{ sandboxId: 'a', state: 'suspended' }]);
    expect(r.state.sandbox('a')).toMatchObject({ state: 'suspended', snapshotNodeId: 'n1' });
    expect(r.state.sandbox('a')?.nodeId).toBeUndefined();
    expect(r.state.index.get('n1')?.allocated.cpu).toBe(0);
    // Reported again later, suspended with its snapshot on n1 is held: nothing changes.
    const again = apply(r.state, reconcileCmd('n1', [{ sandboxId: 'a', state: 'suspended' }], 11));
    expect(reconciled(again)).toEqual({ restored: [], lost: [], failed: [], orphans: [] });
    expect(again.state.sandbox('a')).toBe(r.state.sandbox('a'));
  });

  it('scheduler reconcile - what no longer fits is never restored: stateless stays lost, stateful fails, node stops both', () => {
    // While n1 was down, an operator set it ready and new work filled it to 3 of 4 cores. n1 then reports
    // a, b and c (1 core each): a fits (lowest id first) and is restored; b (stateless) does not and stays
    // lost for re-placement; c (stateful) does not and fails, since the node must stop its only copy. n1's
    // allocation ends at exactly its capacity.
    const state = run(
      [
        { type: 'node.state', atMs: 4, nodeId: 'n1', state: 'ready' },
        placeCmd(
          [
            ['x', spec('t2', 1000), 'n1'],
            ['y', spec('t2', 1000), 'n1'],
            ['z', spec('t2', 1000), 'n1'],
          ],
          5,
        ),
      ],
      downState(),
    ).state;
    const r = apply(
      state,
      reconcileCmd('n1', [
        { sandboxId: 'x', state: 'running' },
        { sandboxId: 'y', state: 'running' },
        { sandboxId: 'z', state: 'running' },
        { sandboxId: 'c', state: 'running' },
        { sandboxId: 'b', state: 'running' },
        { sandboxId: 'a', state: 'running' },
      ]),
    );
    const result = reconciled(r);
    const noRoom = 'node n1 came back without room for it';
    expect(result).toEqual({
      restored: [{ sandboxId: 'a', state: 'running' }],
      lost: [],
      failed: ['c'],
      orphans: [
        { sandboxId: 'b', reason: noRoom },
        { sandboxId: 'c', reason: noRoom },
      ],
    });
    expect(r.state.sandbox('b')).toMatchObject({ state: 'lost', lostFrom: { nodeId: 'n1' } });
    expect(r.state.sandbox('c')).toMatchObject({ state: 'failed', reason: noRoom });
    expect(r.state.sandbox('c')?.lostFrom).toBeUndefined();
    expect(r.state.usage('t1').sandboxes).toBe(3); // c no longer counts
    expect(r.state.index.get('n1')?.allocated.cpu).toBe(4000);
    expectWithinCapacity(r.state);
  });

  it('scheduler reconcile - a status report cannot bring a lost sandbox back or take resources', () => {
    // Only reconcile (or replace) re-takes an allocation: status lost → running, lost → suspended and
    // suspended → resuming are refused item by item, leaving the state as it was.
    let state = downState();
    state = run(
      [
        placeCmd([['s', spec(), 'n2']], 4),
        { type: 'status', atMs: 4, items: [{ sandboxId: 's', state: 'running' }] },
        { type: 'suspend', atMs: 4, sandboxId: 's' },
        { type: 'status', atMs: 4, items: [{ sandboxId: 's', state: 'suspended' }] },
      ],
      state,
    ).state;
    const r = apply(state, {
      type: 'status',
      atMs: 5,
      items: [
        { sandboxId: 'a', state: 'running' },
        { sandboxId: 'c', state: 'suspended' },
        { sandboxId: 's', state: 'resuming' },
      ],
    });
    const codes = r.result.ok ? (r.result.itemErrors ?? []).map((e) => e.code) : [];
    expect(codes).toEqual([
      'SCHED_ILLEGAL_TRANSITION',
      'SCHED_ILLEGAL_TRANSITION',
      'SCHED_ILLEGAL_TRANSITION',
    ]);
    expect(stateDigest(r.state)).toBe(stateDigest(state));
  });
});

describe('scheduler reconcile - determinism, capacity, snapshots', () => {
  it('scheduler reconcile - random reports never over-commit, and two replicas applying them agree', () => {
    // A seeded run of 300 steps over 4 small nodes: random places, node deaths, and reconciles whose
    // reports mix lost, held, foreign and unknown sandboxes in random states. Each command is applied to
    // two independently built states (replicas); after every step their digests must be equal and no
    // node may hold more than its capacity.
    const rng = createRng(7);
    const nodes = ['n1', 'n2', 'n3', 'n4'];
    let a = SchedulerState.empty();
    let b = SchedulerState.empty();
    const step = (cmd: Command): Applied => {
      // The command goes through the codec, as a Raft entry would, and each replica decodes its own copy.
      const bytes = commandCodec.encode(cmd);
      const ra = applyCommand(a, commandCodec.decode(bytes), a.applied + 1);
      const rb = applyCommand(b, commandCodec.decode(bytes), b.applied + 1);
      a = ra.state;
      b = rb.state;
      expect(stateDigest(a)).toBe(stateDigest(b));
      expect(rb.events).toEqual(ra.events);
      expect(rb.result).toEqual(ra.result);
      expectWithinCapacity(a);
      return ra;
    };
    for (const id of nodes) step({ type: 'node.register', atMs: 1, spec: node(id, 3000, 3072) });
    let next = 0;
    let restoredTotal = 0;
    let orphansTotal = 0;
    for (let i = 0; i < 300; i++) {
      const atMs = 10 + i;
      const roll = rng.next();
      const target = rng.pick(nodes);
      if (roll < 0.45) {
        const id = `s${next++}`;
        step(
          placeCmd(
            [[id, spec('t1', 500 + rng.int(0, 3) * 250, 512, { stateless: rng.next() < 0.5 }), target]],
            atMs,
          ),
        );
      } else if (roll < 0.6) {
        step({ type: 'node.state', atMs, nodeId: target, state: 'down' });
      } else if (roll < 0.65) {
        step({ type: 'node.state', atMs, nodeId: target, state: 'ready' });
      } else {
        const ids = [...a.sandboxes.keys(), 'ghost-1', 'ghost-2'].filter(() => rng.next() < 0.4);
        const report = ids.map((sandboxId) => ({ sandboxId, state: rng.pick(nodeHeldStates) }));
        const r = reconciled(step(reconcileCmd(target, report, atMs)));
        restoredTotal += r.restored.length;
        orphansTotal += r.orphans.length;
      }
    }
    // The run exercised both outcomes, so the checks above were not vacuous.
    expect(restoredTotal).toBeGreaterThan(5);
    expect(orphansTotal).toBeGreaterThan(5);
  });

  it('scheduler reconcile - snapshot and restore after a reconcile give the same state, lost sandboxes remembering their node', () => {
    // After a reconcile that restores a and loses nothing else, b and c are still lost from n1. The
    // snapshot must round-trip to an equal digest, and a later reconcile applied to the original and to
    // the restored copy must give equal states: lostFrom survived the snapshot.
    const r = apply(downState(), reconcileCmd('n1', [{ sandboxId: 'a', state: 'running' }]));
    const restored = decodeSnapshot(encodeSnapshot(r.state));
    expect(stateDigest(restored)).toBe(stateDigest(r.state));
    expect(restored.applied).toBe(r.state.applied);
    expect(restored.sandbox('c')?.lostFrom).toEqual({ nodeId: 'n1', gpuDevices: [] });
    const later = reconcileCmd(
      'n1',
      [
        { sandboxId: 'a', state: 'running' },
        { sandboxId: 'c', state: 'running' },
      ],
      20,
    );
    const x = apply(r.state, later);
    const y = apply(restored, later);
    expect(reconciled(y).restored).toEqual([{ sandboxId: 'c', state: 'running' }]);
    expect(stateDigest(y.state)).toBe(stateDigest(x.state));
    expect(y.state.index.get('n1')?.allocated.cpu).toBe(2000);
  });
});

describe('scheduler reconcile - older snapshots', () => {
  it('scheduler reconcile - a v2 snapshot (no lostFrom) still restores; its lost sandboxes become orphans', () => {
    // Rewrites a v3 snapshot as v2 wrote it (version 2, eleven fields per sandbox). It must restore to the
    // same state minus lostFrom, and a reconcile then treats those lost sandboxes as orphans: without the
    // memory of their node, giving them back would be a guess.
    const state = downState();
    const body = new Decoder().decode(encodeSnapshotV4(state)) as { v: number; sandboxes: unknown[][] };
    body.v = 2;
    body.sandboxes = body.sandboxes.map((row) => row.slice(0, 11));
    const old = decodeSnapshot(new Encoder().encode(body));
    expect(old.sandbox('a')?.state).toBe('lost');
    expect(old.sandbox('a')?.lostFrom).toBeUndefined();
    const r = apply(old, reconcileCmd('n1', [{ sandboxId: 'a', state: 'running' }]));
    expect(reconciled(r).orphans).toEqual([{ sandboxId: 'a', reason: 'it was lost from an unknown node' }]);
    expect(r.state.sandbox('a')?.state).toBe('lost');
  });
});

describe('scheduler reconcile - bad input', () => {
  it('scheduler reconcile - an unknown node or a duplicate id is refused whole, state unchanged', () => {
    // Apply refuses both deterministically (the proposer gets the typed code back); only `applied` moves.
    const state = downState();
    const unknown = apply(state, reconcileCmd('n9', [{ sandboxId: 'a', state: 'running' }]));
    expect(unknown.result.ok ? '' : unknown.result.error.code).toBe('PLACEMENT_UNKNOWN_NODE');
    expect(stateDigest(unknown.state)).toBe(stateDigest(state));
    expect(unknown.events).toEqual([]);
    const dup = apply(
      state,
      reconcileCmd('n1', [
        { sandboxId: 'a', state: 'running' },
        { sandboxId: 'a', state: 'starting' },
      ]),
    );
    expect(dup.result.ok ? '' : dup.result.error).toEqual({
      code: 'VALIDATION',
      message: 'running.1.sandboxId: sandbox a is listed twice',
    });
    expect(stateDigest(dup.state)).toBe(stateDigest(state));
    expect(dup.state.nodes.get('n1')?.spec.state).toBe('down');
  });

  it('scheduler reconcile - the schema refuses bad ids, bad states, duplicates and oversized reports', () => {
    // The same checks guard the public call (as ValidationError with the field path) and the Raft entry
    // (as CodecError on decode), so a bad report never reaches apply from either side.
    const pathOf = (report: unknown): string => {
      const parsed = reconcileReportSchema.safeParse(report);
      return parsed.success ? 'ok' : (parsed.error.issues[0]?.path ?? []).join('.');
    };
    expect(pathOf([{ sandboxId: 'a', state: 'running' }])).toBe('ok');
    expect(pathOf([{ sandboxId: 'bad id!', state: 'running' }])).toBe('0.sandboxId');
    expect(pathOf([{ sandboxId: '', state: 'running' }])).toBe('0.sandboxId');
    expect(pathOf([{ sandboxId: 'a', state: 'lost' }])).toBe('0.state');
    expect(pathOf([{ sandboxId: 'a', state: 'running', extra: 1 }])).toBe('0');
    expect(
      pathOf([
        { sandboxId: 'a', state: 'running' },
        { sandboxId: 'b', state: 'running' },
        { sandboxId: 'a', state: 'running' },
      ]),
    ).toBe('2.sandboxId');
    const tooMany = Array.from({ length: reconcileReportMax + 1 }, (_, i) => ({
      sandboxId: `s${i}`,
      state: 'running' as const,
    }));
    expect(pathOf(tooMany)).toBe('');
    expect(() => commandCodec.decode(commandCodec.encode(reconcileCmd('n1', tooMany)))).toThrow(CodecError);
    expect(() => commandCodec.decode(commandCodec.encode(reconcileCmd('bad id', [])))).toThrow(CodecError);
    const dup = reconcileCmd('n1', [
      { sandboxId: 'a', state: 'running' },
      { sandboxId: 'a', state: 'running' },
    ]);
    expect(() => commandCodec.decode(commandCodec.encode(dup))).toThrow(/listed twice/);
  });
});

const until = (cond: UntilCondition<boolean>, what: string, timeoutMs = 10_000): Promise<boolean> =>
  poll(cond, what, { timeoutMs, pollMs: 5 });

describe('scheduler reconcile - public API on a Raft group', () => {
  it('scheduler reconcile - a node marked down comes back with a report: its sandboxes are restored, orphans returned', async () => {
    // Three replicas of a real Raft group, three generated nodes. Four sandboxes are created and the node
    // holding the stateless one is marked down; the leader re-places the stateless one elsewhere. The node
    // then reports everything it held plus an id the scheduler never saw: the stateful ones come back
    // running on it, the stateless one (now elsewhere) and the stranger are orphans, the node is ready,
    // watch() saw the events, no node is over capacity, every replica agrees, and bad reports are refused
    // with typed errors while changing nothing.
    const cluster = await startTestCluster({ nodes: 3, seed: 3, pipeline: { heartbeatIntervalMs: 5 } });
    const s = cluster.scheduler;
    try {
      const small = { tenant: 't1', resources: { cpu: 100, memory: 128, disk: 128 } };
      const stateless = await s.create({ ...small, stateless: true }, { requestId: 'r-stateless' });
      const victim = stateless.nodeId as string;
      for (const i of [1, 2, 3]) await s.create(small, { requestId: `r-${i}` });
      const held = await s.list({ nodeId: victim });
      const stateful = held.filter((sb) => sb.id !== stateless.id).map((sb) => sb.id);
      expect(stateful.length).toBeGreaterThan(0);
      await s.reportStatus(held.map((sb) => ({ sandboxId: sb.id, state: 'running' as const })));

      await s.setNodeState(victim, 'down');
      await until(async () => (await s.get(stateless.id))?.state === 'placed', 'the stateless one re-placed');
      const elsewhere = (await s.get(stateless.id))?.nodeId;
      expect(elsewhere).not.toBe(victim);
      for (const id of stateful) expect((await s.get(id))?.state).toBe('lost');

      const events = s.watch();
      const report = [...held.map((sb) => ({ sandboxId: sb.id, state: 'running' as const }))];
      report.push({ sandboxId: 'stranger', state: 'running' });
      const result = await s.reconcileNode(victim, report);
      expect(result.restored).toEqual(stateful.sort().map((sandboxId) => ({ sandboxId, state: 'running' })));
      expect(result.lost).toEqual([]);
      expect(result.failed).toEqual([]);
      expect(result.orphans).toEqual(
        [
          { sandboxId: stateless.id, reason: `it runs on node ${String(elsewhere)}` },
          { sandboxId: 'stranger', reason: 'unknown to the scheduler (never placed, or terminated)' },
        ].sort((a, b) => (a.sandboxId < b.sandboxId ? -1 : 1)),
      );
      for (const id of stateful) expect(await s.get(id)).toMatchObject({ state: 'running', nodeId: victim });
      expect(await s.get(stateless.id)).toMatchObject({ state: 'placed', nodeId: elsewhere });
      const views = await s.nodes();
      expect(views.find((v) => v.id === victim)?.state).toBe('ready');
      for (const v of views) {
        expect(v.allocated.cpu).toBeLessThanOrEqual(v.spec.capacity.cpu);
        expect(v.allocated.memory).toBeLessThanOrEqual(v.spec.capacity.memory);
      }
      expect(views.find((v) => v.id === victim)?.allocated.cpu).toBe(100 * stateful.length);

      // watch() started before the reconcile: it yields the node's return, each restore and each orphan.
      const seen: string[] = [];
      const wanted = 1 + stateful.length + 2;
      while (seen.length < wanted) {
        const e = (await events.next()).value as SchedulerEvent;
        if (e.kind === 'node') seen.push(`node:${e.state}`);
        else if (e.kind === 'orphan') seen.push(`orphan:${e.sandboxId}`);
        else if (e.from === 'lost') seen.push(`${e.sandboxId}:${e.to}`);
      }
      await events.return?.();
      expect(seen.sort()).toEqual(
        [
          'node:ready',
          ...stateful.map((id) => `${id}:running`),
          `orphan:${stateless.id}`,
          'orphan:stranger',
        ].sort(),
      );

      // Bad input is refused before or at apply, with typed errors, and changes nothing.
      await cluster.converged();
      const before = stateDigest(cluster.log.machine(0).state);
      await expect(s.reconcileNode('nope', [])).rejects.toBeInstanceOf(UnknownNodeError);
      await expect(s.reconcileNode('bad id!', [])).rejects.toMatchObject({
        name: 'ValidationError',
        path: 'nodeId',
      });
      await expect(
        s.reconcileNode(victim, [{ sandboxId: 'bad id!', state: 'running' }]),
      ).rejects.toMatchObject({ name: 'ValidationError', path: 'running.0.sandboxId' });
      await expect(
        s.reconcileNode(victim, [
          { sandboxId: 'x', state: 'running' },
          { sandboxId: 'x', state: 'running' },
        ]),
      ).rejects.toMatchObject({ name: 'ValidationError', path: 'running.1.sandboxId' });
      const tooMany = Array.from({ length: reconcileReportMax + 1 }, (_, i) => ({
        sandboxId: `s${i}`,
        state: 'running' as const,
      }));
      await expect(s.reconcileNode(victim, tooMany)).rejects.toMatchObject({
        name: 'ValidationError',
        path: 'running',
      });
      await expect(
        s.reconcileNode(victim, [{ sandboxId: 'x', state: 'lost' as unknown as 'running' }]),
      ).rejects.toBeInstanceOf(ValidationError);
      await cluster.converged();
      expect(stateDigest(cluster.log.machine(0).state)).toBe(before);
      expect(cluster.replicasEqual()).toBe(true);
    } finally {
      await cluster.close();
    }
  });
});
