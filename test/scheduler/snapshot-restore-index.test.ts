/**
 * A restore puts its sandbox ids and request ids into the key maps in one pass each at finish
 * (`SlotTableDraft.appendUnindexed`, scheduler/snapshot.ts): what it restores must equal the state written, a
 * key listed twice must still be refused, and the reader's steps must see nothing of it before finish.
 */
import { describe, expect, it } from 'vitest';
import { slotTableCounts } from '../../scheduler/core/slot-table.js';
import { concatFrames, encodeSnapshotV5, SnapshotReader, snapshotFrames } from '../../scheduler/snapshot.js';
import { applyCommand, SchedulerState, specDigest } from '../../scheduler/state.js';
import { decodeSnapshot, stateDigest } from '../../scheduler/state-machine.js';
import { AssertionFailure } from '../../src/lib/assert.js';
import { patchedSnapshot } from '../helpers/snapshot-patch.js';
import { node, spec } from './fixtures.js';

/** `n` placed sandboxes on two nodes; ids `x0`… (each its own request id) and a few with other request ids. */
function stateOf(n: number): SchedulerState {
  let state = SchedulerState.empty();
  for (const [i, id] of ['n0', 'n1'].entries()) {
    const capacity = { cpu: 1_000_000, memory: 1_000_000, disk: 1_000_000 };
    const spec = node(id, 1_000_000, 1_000_000, { capacity });
    state = applyCommand(state, { type: 'node.register', atMs: 1, spec }, i + 1).state;
  }
  const s = spec('t1', 1, 1, { resources: { cpu: 1, memory: 1, disk: 1 } });
  const items = Array.from({ length: n }, (_, i) => ({
    requestId: i % 10 === 0 ? `r${i}` : `x${i}`,
    sandboxId: `x${i}`,
    spec: s,
    specDigest: specDigest(s),
    nodeId: i % 2 === 0 ? 'n0' : 'n1',
    gpuDevices: [],
  }));
  return applyCommand(state, { type: 'place', atMs: 5, items }, 3).state;
}

describe('scheduler/snapshot restore index', () => {
  it('snapshot restore - ids indexed in one pass at finish restore the very state, in both formats', () => {
    const state = stateOf(3000);
    expect(state.sandboxes.size).toBe(3000);
    const before = slotTableCounts.sortedInserts;
    for (const bytes of [concatFrames([...snapshotFrames(state, 256)]), encodeSnapshotV5(state)]) {
      const restored = decodeSnapshot(bytes);
      expect(stateDigest(restored)).toBe(stateDigest(state));
      expect(restored.sandboxes.get('x2999')?.nodeId).toBe('n1');
      expect(restored.dedup.get('r2990')?.sandboxId).toBe('x2990');
      expect(restored.dedup.get('x2990')).toBeUndefined();
    }
    // Two tables per restore, each in one sorted pass.
    expect(slotTableCounts.sortedInserts).toBe(before + 4);
  });

  it('snapshot restore - a sandbox id or a request id listed twice is refused at finish', () => {
    const state = stateOf(2);
    const frames = [...snapshotFrames(state)];
    // frames: magic, header, one sandbox frame, one dedup frame. Patch bytes inside the msgpack bodies.
    const patch = (at: number, from: string, to: string): Uint8Array => patchedSnapshot(frames, at, from, to);
    const intact = new SnapshotReader(concatFrames(frames));
    while (intact.step()) {}
    expect(stateDigest(intact.finish())).toBe(stateDigest(state));
    // The frame's ids are one string, 'x0x1': 'x0x0' lists sandbox x0 twice.
    const sameId = new SnapshotReader(patch(2, 'x0x1', 'x0x0'));
    while (sameId.step()) {}
    expect(() => sameId.finish()).toThrow(AssertionFailure);
    // Dedup rows 1 and 2 (Uint32 little-endian): both entries name row 1, so request id r0 comes twice.
    const rowBytes = '\u0001\u0000\u0000\u0000\u0002\u0000\u0000\u0000';
    expect(() =>
      decodeSnapshot(patch(3, rowBytes, '\u0001\u0000\u0000\u0000\u0001\u0000\u0000\u0000')),
    ).toThrow(AssertionFailure);
  });
});
