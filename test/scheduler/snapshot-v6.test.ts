/**
 * Snapshot format 6 (scheduler/snapshot.ts): ids in one string per frame, dedup entries that name their
 * sandbox's row. Checked against format 5 as the previous writer wrote it (its writer path is kept), on a
 * varied state and on seeded random streams, including a state whose dedup order is not its sandbox order
 * (the row walk runs out and the keys are written instead).
 */
import { Decoder } from '@msgpack/msgpack';
import { describe, expect, it } from 'vitest';
import type { Command } from '../../scheduler/commands.js';
import { emptyDedupTable } from '../../scheduler/core/dedup-table.js';
import {
  concatFrames,
  encodeSnapshotV5,
  isSnapshotV5,
  isSnapshotV6,
  SnapshotReader,
  snapshotFrames,
} from '../../scheduler/snapshot.js';
import { applyCommand, SchedulerState, specDigest } from '../../scheduler/state.js';
import { decodeSnapshot, encodeSnapshot, readSnapshot, stateDigest } from '../../scheduler/state-machine.js';
import { AssertionFailure } from '../../src/lib/assert.js';
import { createRng, type Rng } from '../../src/lib/prng.js';
import { patchedSnapshot } from '../helpers/snapshot-patch.js';
import { node, spec } from './fixtures.js';

const sandboxIds = Array.from({ length: 30 }, (_, i) => `s${i}`);

/** A command of a small random workload: creates (own or other request ids), pends, reports, terminates. */
function randomCommand(rng: Rng, atMs: number, serial: { n: number }): Command {
  const sandboxId = rng.pick(sandboxIds);
  const s = spec(rng.pick(['ta', 'tb']), rng.pick([100, 300]));
  const rid = rng.chance(0.6) ? `${sandboxId}-${serial.n++}` : `q${serial.n++}`;
  switch (rng.int(0, 6)) {
    case 0:
    case 1: {
      const items = Array.from({ length: rng.int(1, 4) }, () => {
        const id = rng.chance(0.5) ? `c${serial.n++}` : rng.pick(sandboxIds);
        return {
          // Most creates take their request's id as the sandbox id, as the API does; some do not.
          requestId: rng.chance(0.7) ? id : `r${serial.n++}`,
          sandboxId: id,
          spec: s,
          specDigest: specDigest(s),
          nodeId: rng.pick(['n0', 'n1', 'n2']),
          gpuDevices: [],
        };
      });
      return { type: 'place', atMs, items };
    }
    case 2:
      return {
        type: 'pend',
        atMs,
        items: [
          {
            requestId: rid,
            sandboxId,
            spec: s,
            specDigest: specDigest(s),
            reason: 'full',
            deadlineMs: atMs + 50,
          },
        ],
      };
    case 3:
      return {
        type: 'status',
        atMs,
        items: [{ sandboxId, state: rng.pick(['running', 'terminated', 'failed'] as const) }],
      };
    case 4:
      return { type: 'terminate', atMs, requestId: rid, sandboxId };
    default:
      return { type: 'quota.set', atMs, requestId: rid, tenant: 'tb', quota: { sandboxes: rng.int(5, 40) } };
  }
}

function frameBodies(frames: readonly Uint8Array[]): Record<string, unknown>[] {
  const decoder = new Decoder();
  return frames.slice(1).map((f) => decoder.decode(f.subarray(4)) as Record<string, unknown>);
}

/** Restores `bytes` frame by frame, as a replica does. */
function readInSteps(bytes: Uint8Array): SchedulerState {
  const reader = new SnapshotReader(bytes);
  while (reader.step()) {}
  return reader.finish();
}

describe('scheduler snapshot - format 6', () => {
  it.each([1, 2, 3, 4, 5, 6])(
    'scheduler snapshot v6 - random states restore to the same state as from format 5 (seed %i)',
    (seed) => {
      const rng = createRng(seed);
      const ctx = `seed ${seed}`;
      let state = SchedulerState.empty();
      for (const id of ['n0', 'n1', 'n2'])
        state = applyCommand(
          state,
          { type: 'node.register', atMs: 1, spec: node(id) },
          state.applied + 1,
        ).state;
      const serial = { n: 0 };
      let rowsUsed = 0;
      let keysWritten = 0;
      for (let step = 0; step < 300; step++) {
        const atMs = 2 + step * 7 + rng.next();
        state = applyCommand(state, randomCommand(rng, atMs, serial), state.applied + 1).state;
        if (step % 25 !== 24) continue;
        const per = rng.int(1, 9);
        const v6 = [...snapshotFrames(state, per)];
        const v5 = [...snapshotFrames(state, per, 5)];
        const digest = stateDigest(state);
        expect(isSnapshotV6(v6[0] as Uint8Array), ctx).toBe(true);
        expect(isSnapshotV5(v5[0] as Uint8Array), ctx).toBe(true);
        expect(stateDigest(readInSteps(concatFrames(v6))), `${ctx}, step ${step}, v6`).toBe(digest);
        expect(stateDigest(readInSteps(concatFrames(v5))), `${ctx}, step ${step}, v5`).toBe(digest);
        for (const body of frameBodies(v6)) {
          if (body.k !== 'd') continue;
          const rows = new Uint32Array((body.row as Uint8Array).slice().buffer);
          rowsUsed += rows.filter((r) => r > 0).length;
          keysWritten += rows.filter((r) => r === 0).length;
        }
      }
      // Both ways of naming an entry's key were taken.
      expect(rowsUsed, ctx).toBeGreaterThan(0);
      expect(keysWritten, ctx).toBeGreaterThan(0);
    },
  );

  it('scheduler snapshot v6 - a create names its sandbox row, and a state whose dedup order is not its sandbox order still restores', async () => {
    let state = SchedulerState.empty();
    state = applyCommand(state, { type: 'node.register', atMs: 1, spec: node('n0') }, 1).state;
    const s = spec('t1', 100, 100);
    const items = Array.from({ length: 20 }, (_, i) => ({
      requestId: `a${i}`,
      sandboxId: `a${i}`,
      spec: s,
      specDigest: specDigest(s),
      nodeId: 'n0',
      gpuDevices: [],
    }));
    state = applyCommand(state, { type: 'place', atMs: 5, items }, 2).state;
    const bodies = frameBodies([...snapshotFrames(state)]);
    const dedup = bodies.find((b) => b.k === 'd') as Record<string, unknown>;
    expect([...new Uint32Array((dedup.row as Uint8Array).slice().buffer)]).toEqual(
      Array.from({ length: 20 }, (_, i) => i + 1),
    );
    expect(dedup.keys).toBe('');
    expect(dedup.digests).toEqual([specDigest(s)]);
    // The same entries in reverse order: rows can be named only while the walk finds them in order.
    const d = state.data();
    const reversed = emptyDedupTable().edit();
    for (const [k, e] of [...d.dedup.entries()].reverse()) reversed.set(k, e);
    const odd = SchedulerState.fromData({ ...d, dedup: reversed.publish() });
    const bytes = encodeSnapshot(odd);
    expect(stateDigest(decodeSnapshot(bytes))).toBe(stateDigest(odd));
    expect(stateDigest(await readSnapshot(bytes))).toBe(stateDigest(odd));
    expect([...decodeSnapshot(bytes).dedup.keys()]).toEqual([...odd.dedup.keys()]);
  });

  it('scheduler snapshot v6 - a format-5 snapshot written by the previous writer restores to the same state', () => {
    let state = SchedulerState.empty();
    state = applyCommand(state, { type: 'node.register', atMs: 1, spec: node('n0') }, 1).state;
    const rng = createRng(9);
    const serial = { n: 0 };
    for (let i = 0; i < 80; i++)
      state = applyCommand(state, randomCommand(rng, 10 + i, serial), state.applied + 1).state;
    const v5 = encodeSnapshotV5(state);
    expect(isSnapshotV5(v5)).toBe(true);
    expect(stateDigest(decodeSnapshot(v5))).toBe(stateDigest(state));
    expect(stateDigest(decodeSnapshot(encodeSnapshot(state)))).toBe(stateDigest(state));
  });

  it('scheduler snapshot v6 - a row past the restored sandboxes, lengths that do not cover the ids, or a header of another format are refused', () => {
    let state = SchedulerState.empty();
    state = applyCommand(state, { type: 'node.register', atMs: 1, spec: node('n0') }, 1).state;
    const s = spec('t1', 100);
    const items = ['a', 'b'].map((id) => ({
      requestId: id,
      sandboxId: id,
      spec: s,
      specDigest: specDigest(s),
      nodeId: 'n0',
      gpuDevices: [],
    }));
    state = applyCommand(state, { type: 'place', atMs: 5, items }, 2).state;
    const frames = [...snapshotFrames(state)];
    // frames: magic, header, one sandbox frame, one dedup frame. Patch bytes inside the msgpack bodies.
    const patch = (at: number, from: string, to: string): Uint8Array => patchedSnapshot(frames, at, from, to);
    // Rows 1 and 2 (Uint32 little-endian) in the dedup frame: name row 9 instead.
    const rowBytes = '\u0001\u0000\u0000\u0000\u0002\u0000\u0000\u0000';
    expect(() =>
      decodeSnapshot(patch(3, rowBytes, '\u0009\u0000\u0000\u0000\u0002\u0000\u0000\u0000')),
    ).toThrow(AssertionFailure);
    // Id lengths 1 and 1 in the sandbox frame: 1 and 2 run past the string 'ab'.
    const lenBytes = '\u0001\u0000\u0000\u0000\u0001\u0000\u0000\u0000';
    expect(() =>
      decodeSnapshot(patch(2, lenBytes, '\u0001\u0000\u0000\u0000\u0002\u0000\u0000\u0000')),
    ).toThrow(AssertionFailure);
    // A format-6 magic before a header that says 5.
    const v5 = [...snapshotFrames(state, 1024, 5)];
    const mixed = concatFrames([frames[0] as Uint8Array, ...v5.slice(1)]);
    expect(() => decodeSnapshot(mixed)).toThrow(AssertionFailure);
  });
});
