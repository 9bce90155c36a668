/**
 * A small seeded pseudo-random source (sfc32 seeded through splitmix32). Everything random in Trellis takes
 * one of these as an argument, so a run is replayed exactly from its seed. Not for cryptography.
 *
 * Pure: the pure cores may import this module.
 */
import { assert } from './assert.js';

export interface Rng {
  /** A float in [0, 1). */
  next(): number;
  /** An integer in [lo, hi). */
  int(lo: number, hi: number): number;
  /** True with probability p. */
  chance(p: number): boolean;
  /** A uniformly chosen element; the array must not be empty. */
  pick<T>(items: readonly T[]): T;
  /** Shuffles `items` in place (Fisher–Yates) and returns it. */
  shuffle<T>(items: T[]): T[];
  /** An independent generator derived from this one, for a sub-component. */
  fork(): Rng;
  /** The seed this generator was created with. */
  readonly seed: number;
}

function splitmix32(state: number): () => number {
  let s = state >>> 0;
  return () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
}

/** Creates a generator from a 32-bit seed; the same seed always yields the same sequence. */
export function createRng(seed: number): Rng {
  assert(Number.isInteger(seed), 'seed must be an integer', { seed });
  const init = splitmix32(seed);
  let a = init();
  let b = init();
  let c = init();
  let d = init();
  const u32 = (): number => {
    const t = (((a + b) >>> 0) + d) >>> 0;
    d = (d + 1) >>> 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) >>> 0;
    c = (c << 21) | (c >>> 11);
    c = (c + t) >>> 0;
    return t;
  };
  for (let i = 0; i < 12; i++) u32();
  const rng: Rng = {
    seed,
    next: () => u32() / 4294967296,
    int: (lo, hi) => {
      assert(hi > lo, 'empty range', { lo, hi });
      return lo + Math.floor((u32() / 4294967296) * (hi - lo));
    },
    chance: (p) => u32() / 4294967296 < p,
    pick: (items) => {
      assert(items.length > 0, 'pick from an empty array');
      return items[Math.floor((u32() / 4294967296) * items.length)] as (typeof items)[number];
    },
    shuffle: (items) => {
      for (let i = items.length - 1; i > 0; i--) {
        const j = Math.floor((u32() / 4294967296) * (i + 1));
        const tmp = items[i] as (typeof items)[number];
        items[i] = items[j] as (typeof items)[number];
        items[j] = tmp;
      }
      return items;
    },
    fork: () => createRng(u32() | 0),
  };
  return rng;
}
