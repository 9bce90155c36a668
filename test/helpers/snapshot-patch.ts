/** Damaging a snapshot on purpose: one frame's bytes replaced where a known text stands. */
import { expect } from 'vitest';
import { concatFrames } from '../../scheduler/snapshot.js';

/**
 * The snapshot of `frames` with frame `at`'s first occurrence of `from` (as latin1 bytes inside its msgpack
 * body) overwritten by `to`, of the same length; the test fails if `from` is not in that frame.
 */
export function patchedSnapshot(
  frames: readonly Uint8Array[],
  at: number,
  from: string,
  to: string,
): Uint8Array {
  expect(to.length, 'a patch keeps the frame length').toBe(from.length);
  const f = (frames[at] as Uint8Array).slice();
  const i = Buffer.from(f).toString('latin1').indexOf(from);
  expect(i, `frame ${at} holds the text to patch`).toBeGreaterThan(0);
  f.set(Buffer.from(to, 'latin1'), i);
  return concatFrames(frames.map((x, k) => (k === at ? f : x)));
}
