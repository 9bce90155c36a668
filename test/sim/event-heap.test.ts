/**
 * The capacity simulator's event queue (src/sim/heap.ts) against a sorted-list reference: every pop must be the
 * least (time, rank, push order) of what is queued, whatever the interleaving of pushes and pops, on every time
 * scale — ties within a few milliseconds, spans of minutes and hours, before 0, at epoch-millisecond times, and
 * pushed behind the last pop. Seeded; a failing seed is printed.
 */
import { describe, expect, it } from 'vitest';
import { AssertionFailure } from '../../src/lib/assert.js';
import { createRng } from '../../src/lib/prng.js';
import { EventHeap, heapRankMax } from '../../src/sim/heap.js';

interface Ref {
  readonly t: number;
  readonly r: number;
  readonly seq: number;
}

const before = (a: Ref, b: Ref): boolean =>
  a.t < b.t || (a.t === b.t && (a.r < b.r || (a.r === b.r && a.seq < b.seq)));

function runSeed(seed: number): void {
  const rng = createRng(seed);
  const heap = new EventHeap<Ref>();
  const queued: Ref[] = [];
  let seq = 0;
  // A time scale per seed (milliseconds to hours); an origin at 0, below 0 or at epoch milliseconds. Few distinct times and ranks at small scales, so ties on time and on rank are common;
  // fractional times as arrivals have; now and then a push behind the last pop, or a run of pushes.
  const span = 262_144;
  const scale = rng.pick([16, 40, 160, span / 3, 3 * span, 40 * span]);
  const origin = rng.pick([0, 0, -span / 2, 1_764_633_600_000]);
  let last = origin;
  const steps = rng.int(200, 2500);
  for (let s = 0; s < steps; s++) {
    if (queued.length === 0 || rng.chance(0.55)) {
      const base = rng.chance(0.1) ? origin : last;
      const offset = rng.chance(0.3) ? rng.next() * scale : rng.int(0, Math.max(1, Math.floor(scale)));
      const t = rng.chance(0.05) ? base - rng.int(0, 64) : base + offset;
      const e: Ref = { t, r: rng.int(0, 9), seq: seq++ };
      heap.push(e.t, e.r, e);
      queued.push(e);
      continue;
    }
    let least = 0;
    for (let k = 1; k < queued.length; k++) if (before(queued[k] as Ref, queued[least] as Ref)) least = k;
    const want = queued[least] as Ref;
    queued.splice(least, 1);
    expect(heap.peekTime(), `seed ${seed} step ${s}`).toBe(want.t);
    const got = rng.chance(0.5) ? heap.popItem() : heap.pop()?.item;
    expect(got, `seed ${seed} step ${s}`).toBe(want);
    expect([heap.poppedTimeMs, heap.poppedRank], `seed ${seed} step ${s}`).toEqual([want.t, want.r]);
    expect(heap.size, `seed ${seed} step ${s}`).toBe(queued.length);
    last = want.t;
  }
}

describe('sim event heap', () => {
  it('event heap - pops in (time, rank, push order) whatever the interleaving (seeded, against a sorted list)', () => {
    for (let seed = 1; seed <= 48; seed++) runSeed(seed);
  });

  it('event heap - grows past its first capacity and drains in order', () => {
    const heap = new EventHeap<number>();
    const n = 5000;
    const rng = createRng(7);
    const keys = Array.from({ length: n }, (_, i) => ({ t: rng.int(0, 100), r: rng.int(0, 3), i }));
    for (const k of keys) heap.push(k.t, k.r, k.i);
    const want = [...keys].sort((a, b) => a.t - b.t || a.r - b.r || a.i - b.i).map((k) => k.i);
    const got: number[] = [];
    while (heap.size > 0) got.push(heap.popItem());
    expect(got).toEqual(want);
    expect(heap.pop()).toBeUndefined();
    expect(heap.peekTime()).toBe(Number.POSITIVE_INFINITY);
  });

  it('event heap - refuses a rank outside its packed key and a non-finite time', () => {
    const heap = new EventHeap<number>();
    expect(() => heap.push(0, heapRankMax + 1, 1)).toThrow(AssertionFailure);
    expect(() => heap.push(0, -1, 1)).toThrow(AssertionFailure);
    expect(() => heap.push(0, 1.5, 1)).toThrow(AssertionFailure);
    expect(() => heap.push(Number.NaN, 0, 1)).toThrow(AssertionFailure);
    expect(heap.size).toBe(0);
  });
});
