import { describe, expect, it } from 'vitest';
import { AssertionFailure, assert, assertLe } from '../../src/lib/assert.js';
import { ValidationError } from '../../src/lib/errors.js';
import { idLengthMax, nodeId, sandboxId } from '../../src/lib/ids.js';
import { createRng } from '../../src/lib/prng.js';

describe('lib/assert', () => {
  it('lib/assert - prints the values involved', () => {
    // Checks a failed assertion names the invariant and prints both values, so a log line is enough.
    expect(() => assertLe(7, 5, 'applied <= committed')).toThrow('applied <= committed (left=7, right=5)');
    expect(() => assert(false, 'x', { node: 'n1', free: [1, 2] })).toThrow(AssertionFailure);
    expect(() => assert([1].length === 1, 'never')).not.toThrow();
  });
});

describe('lib/ids', () => {
  it('lib/ids - accepts subject-safe ids and refuses the rest with a ValidationError naming the field', () => {
    // Checks the alphabet: ids become NATS subject tokens, so '.', '*', '>' and spaces must be refused.
    expect(nodeId('node-01_a')).toBe('node-01_a');
    for (const bad of ['', 'a.b', 'a*', 'a>', 'a b', 'x'.repeat(idLengthMax + 1), 42, null]) {
      expect(() => sandboxId(bad, 'spec.id')).toThrow(ValidationError);
    }
    try {
      nodeId('a.b', 'node.id');
    } catch (err) {
      expect((err as ValidationError).path).toBe('node.id');
    }
  });
});

describe('lib/prng', () => {
  it('lib/prng - the same seed gives the same sequence, another seed another', () => {
    // Checks determinism (replay from a seed) and that seeds actually matter.
    const a = createRng(123);
    const b = createRng(123);
    const c = createRng(124);
    const seqA = Array.from({ length: 20 }, () => a.int(0, 1_000_000));
    const seqB = Array.from({ length: 20 }, () => b.int(0, 1_000_000));
    const seqC = Array.from({ length: 20 }, () => c.int(0, 1_000_000));
    expect(seqA).toEqual(seqB);
    expect(seqA).not.toEqual(seqC);
  });

  it('lib/prng - values stay in range and are roughly uniform', () => {
    // Checks int() bounds over many draws and that each of 10 buckets gets a fair share (within 20%).
    const rng = createRng(9);
    const buckets = new Array<number>(10).fill(0);
    for (let i = 0; i < 100_000; i++) {
      const v = rng.int(0, 10);
      expect(v >= 0 && v < 10).toBe(true);
      buckets[v] = (buckets[v] ?? 0) + 1;
    }
    for (const count of buckets) expect(Math.abs(count - 10_000)).toBeLessThan(2_000);
  });
});
