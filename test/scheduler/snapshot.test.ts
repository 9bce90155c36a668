import { describe, expect, it } from 'vitest';
import type { Command } from '../../scheduler/commands.js';
import { concatFrames, SnapshotReader, snapshotFrames } from '../../scheduler/snapshot.js';
import { applyCommand, type SchedulerState } from '../../scheduler/state.js';
import {
  decodeSnapshot,
  encodeSnapshot,
  encodeSnapshotV4,
  readSnapshot,
  SchedulerStateMachine,
  stateDigest,
  writeSnapshot,
} from '../../scheduler/state-machine.js';
import { AssertionFailure } from '../../src/lib/assert.js';
import { node, placeCmd, run, spec } from './fixtures.js';

/**
 * A state with a record of every kind a snapshot carries: nodes in several states, sandboxes placed,
 * running, suspended, lost (with lostFrom), pending (with a deadline and reason), failed; a quota; dedup
 * entries for creates and for other commands with their first outcome; and ids that are not the request id.
 */
function variedState(): SchedulerState {
  const many = Array.from(
    { length: 40 },
    (_, i) => [`m${i}`, spec(i % 3 === 0 ? 't2' : 't1', 10, 16), `n${i % 3}`] as const,
  );
  return run([
    { type: 'node.register', atMs: 1, spec: node('n0') },
    { type: 'node.register', atMs: 1, spec: node('n1') },
    { type: 'node.register', atMs: 1, spec: node('n2', 8000) },
    { type: 'quota.set', atMs: 1, requestId: 'q-1', tenant: 't2', quota: { sandboxes: 100 } },
    placeCmd([...many.map(([id, s, n]) => [id, s, n] as [string, ReturnType<typeof spec>, string])]),
    placeCmd([
      ['a', spec('t1', 1000), 'n1'],
      ['b', spec('t1', 1000, 1024, { stateless: true }), 'n1'],
      ['s', spec('t2', 500), 'n2'],
    ]),
    {
      type: 'pend',
      atMs: 2,
      items: [
        {
          requestId: 'p-1',
          sandboxId: 'p1',
          spec: spec('t1', 100_000),
          specDigest: 'x',
          reason: 'no node has 100 cpus',
          deadlineMs: 30_000,
        },
      ],
    },
    {
      type: 'status',
      atMs: 2,
      items: [
        { sandboxId: 'a', state: 'running' },
        { sandboxId: 's', state: 'running' },
      ],
    },
    { type: 'suspend', atMs: 3, sandboxId: 's' },
    { type: 'status', atMs: 4, items: [{ sandboxId: 's', state: 'suspended' }] },
    { type: 'status', atMs: 4, items: [{ sandboxId: 'm5', state: 'failed', reason: 'boot failed' }] },
    { type: 'node.state', atMs: 5, nodeId: 'n1', state: 'down' },
    { type: 'terminate', atMs: 6, requestId: 'term-1', sandboxId: 'm7' },
  ]).state;
}

describe('scheduler snapshot - format 5', () => {
  it('scheduler snapshot - a state cut into many small frames restores to the same state, index included', () => {
    // Three records per frame, so sandboxes and dedup entries span many frames and the interned tables
    // (tenants, states, node ids, specs) grow across them. Canonical digests must match, and one more
    // command applied to both must agree, so the restored index is live.
    const state = variedState();
    const frames = [...snapshotFrames(state, 3)];
    expect(frames.length).toBeGreaterThan(20);
    const restored = decodeSnapshot(concatFrames(frames));
    expect(stateDigest(restored)).toBe(stateDigest(state));
    expect(restored.applied).toBe(state.applied);
    expect(restored.sandbox('b')?.lostFrom?.nodeId).toBe('n1');
    expect(restored.sandbox('p1')?.pendingUntilMs).toBe(30_000);
    expect(restored.dedup.get('term-1')?.result).toEqual({ ok: true });
    expect([...restored.sandboxesOfNode('n2')].sort()).toEqual([...state.sandboxesOfNode('n2')].sort());
    expect([...restored.sandboxesOfTenant('t2')].sort()).toEqual([...state.sandboxesOfTenant('t2')].sort());
    const more = placeCmd([['z', spec('t2', 4000), 'n2']]);
    expect(stateDigest(run([more], restored).state)).toBe(stateDigest(run([more], state).state));
  });

  it('scheduler snapshot - a format-4 snapshot still restores, to the same state as format 5', () => {
    // Replicas that wrote format 4 before an upgrade must come back with the same state.
    const state = variedState();
    const fromV4 = decodeSnapshot(encodeSnapshotV4(state));
    expect(stateDigest(fromV4)).toBe(stateDigest(state));
    expect(stateDigest(fromV4)).toBe(stateDigest(decodeSnapshot(encodeSnapshot(state))));
  });

  it('scheduler snapshot - frames written while apply goes on hold the version they started from', () => {
    // The writer holds one immutable version; commands applied between its frames make newer versions
    // and must not leak into what is written.
    const state = variedState();
    const before = stateDigest(state);
    let later = state;
    const frames: Uint8Array[] = [];
    let k = 0;
    for (const frame of snapshotFrames(state, 4)) {
      frames.push(frame);
      const cmd: Command = placeCmd([[`late${k}`, spec('t1', 10, 16), 'n0']]);
      later = applyCommand(later, cmd, later.applied + 1).state;
      k++;
    }
    expect(later.sandboxes.size).toBeGreaterThan(state.sandboxes.size);
    expect(stateDigest(decodeSnapshot(concatFrames(frames)))).toBe(before);
    expect(stateDigest(state)).toBe(before);
  });

  it('scheduler snapshot - the state machine writes the version it had when asked, while it applies on', async () => {
    // snapshotLater() takes the version at once and writes it across event-loop turns; the machine applies
    // more entries before the writer runs. readSnapshot restores it across turns too.
    const m = new SchedulerStateMachine(
      (entry) => JSON.parse(new TextDecoder().decode(entry.data)) as Command,
    );
    const entry = (index: number, cmd: Command) =>
      ({ index, term: 1, type: 'normal', data: new TextEncoder().encode(JSON.stringify(cmd)) }) as const;
    m.apply(entry(1, { type: 'node.register', atMs: 1, spec: node('n1') }));
    m.apply(entry(2, placeCmd([['a', spec(), 'n1']])));
    const taken = stateDigest(m.state);
    const write = m.snapshotLater();
    m.apply(entry(3, placeCmd([['b', spec(), 'n1']])));
    const bytes = await write();
    const restored = await readSnapshot(bytes);
    expect(stateDigest(restored)).toBe(taken);
    expect(restored.applied).toBe(2);
    expect(stateDigest(await readSnapshot(await writeSnapshot(m.state)))).toBe(stateDigest(m.state));
  });

  it('scheduler snapshot - a truncated or corrupted snapshot is refused, never loaded in part', () => {
    // A cut in the middle of a frame, a frame missing at the end, and a length beyond the buffer all fail
    // the restore loudly (an assertion with the values), rather than returning a state with records missing.
    const bytes = encodeSnapshot(variedState());
    expect(() => decodeSnapshot(bytes.subarray(0, bytes.length - 5))).toThrow(AssertionFailure);
    const frames = [...snapshotFrames(variedState(), 8)];
    expect(() => decodeSnapshot(concatFrames(frames.slice(0, -1)))).toThrow(AssertionFailure);
    const bad = bytes.slice();
    new DataView(bad.buffer).setUint32(4, 0x7fff_ffff);
    expect(() => decodeSnapshot(bad)).toThrow(AssertionFailure);
    const reader = new SnapshotReader(concatFrames(frames.slice(0, 3)));
    while (reader.step()) {}
    expect(() => reader.finish()).toThrow(AssertionFailure);
  });
});
