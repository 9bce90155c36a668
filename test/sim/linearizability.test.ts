import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { createRng } from '../../src/lib/prng.js';
import { checkHistory, type KvInput, type KvOutput, type Operation } from './linearizability.js';

const put = (
  client: number,
  key: string,
  value: string,
  callAt: number,
  returnAt: number | undefined,
): Operation => ({
  client,
  input: { op: 'put', key, value },
  output: returnAt === undefined ? undefined : { ok: true },
  callAt,
  returnAt,
});
const get = (
  client: number,
  key: string,
  value: string | null,
  callAt: number,
  returnAt: number,
): Operation => ({
  client,
  input: { op: 'get', key },
  output: { value },
  callAt,
  returnAt,
});

describe('sim/linearizability - known histories', () => {
  it('sim/linearizability - accepts a concurrent read that sees either value', () => {
    // put(x,1) overlaps get(x): both the old (null) and the new value are valid answers.
    expect(checkHistory([put(1, 'x', '1', 0, 10), get(2, 'x', null, 1, 5)]).ok).toBe(true);
    expect(checkHistory([put(1, 'x', '1', 0, 10), get(2, 'x', '1', 1, 5)]).ok).toBe(true);
  });

  it('sim/linearizability - flags a stale read after a completed write', () => {
    // put(x,1) returned at 10; a get that starts at 11 and sees null read stale data.
    expect(checkHistory([put(1, 'x', '1', 0, 10), get(2, 'x', null, 11, 12)])).toEqual({
      ok: false,
      key: 'x',
      reason: 'not-linearizable',
    });
  });

  it('sim/linearizability - flags a lost write and reordered writes', () => {
    // Lost: put(1) then put(2) complete in order, yet a later read sees 1.
    expect(checkHistory([put(1, 'x', '1', 0, 1), put(1, 'x', '2', 2, 3), get(2, 'x', '1', 4, 5)]).ok).toBe(
      false,
    );
    // Reordered: two readers see the writes in opposite orders, after both writes completed.
    const reordered = [
      put(1, 'x', 'a', 0, 10),
      put(2, 'x', 'b', 0, 10),
      get(3, 'x', 'a', 11, 12),
      get(4, 'x', 'b', 13, 14),
      get(3, 'x', 'a', 15, 16),
    ];
    expect(checkHistory(reordered).ok).toBe(false);
  });

  it('sim/linearizability - an operation that never returned may or may not have happened', () => {
    // put(x,1) timed out: a later read may see it, or not see it, but not see it and then lose it.
    expect(checkHistory([put(1, 'x', '1', 0, undefined), get(2, 'x', '1', 5, 6)]).ok).toBe(true);
    expect(checkHistory([put(1, 'x', '1', 0, undefined), get(2, 'x', null, 5, 6)]).ok).toBe(true);
    expect(
      checkHistory([put(1, 'x', '1', 0, undefined), get(2, 'x', '1', 5, 6), get(2, 'x', null, 7, 8)]).ok,
    ).toBe(false);
  });

  it('sim/linearizability - cas must agree with the value it found', () => {
    // cas(x, null → 1) applied, then a read must see 1; a second cas(null → 2) must not apply.
    const cas = (
      c: number,
      expected: string | null,
      value: string,
      applied: boolean,
      t: number,
    ): Operation => ({
      client: c,
      input: { op: 'cas', key: 'x', expected, value },
      output: { applied },
      callAt: t,
      returnAt: t + 1,
    });
    expect(
      checkHistory([cas(1, null, '1', true, 0), get(2, 'x', '1', 2, 3), cas(3, null, '2', false, 4)]).ok,
    ).toBe(true);
    expect(checkHistory([cas(1, null, '1', true, 0), cas(3, null, '2', true, 4)]).ok).toBe(false);
  });
});

/**
 * Generates a history from a real sequential execution with random overlap: each operation takes effect at a
 * point inside its [call, return] interval, so the history is linearizable by construction.
 */
function linearizableHistory(seed: number, count: number): Operation[] {
  const rng = createRng(seed);
  const store = new Map<string, string | null>();
  const ops: Operation[] = [];
  let t = 0;
  for (let i = 0; i < count; i++) {
    t += rng.int(1, 4);
    const key = rng.pick(['x', 'y']);
    const roll = rng.int(0, 3);
    const current = store.get(key) ?? null;
    let input: KvInput;
    let output: KvOutput;
    if (roll === 0) {
      input = { op: 'put', key, value: String(i) };
      output = { ok: true };
      store.set(key, String(i));
    } else if (roll === 1) {
      input = { op: 'get', key };
      output = { value: current };
    } else {
      const expected = rng.chance(0.5) ? current : 'nope';
      input = { op: 'cas', key, expected, value: String(i) };
      output = { applied: expected === current };
      if (expected === current) store.set(key, String(i));
    }
    // The effect happened at t; the call started up to 5 before and the return comes up to 5 after.
    ops.push({
      client: i,
      input,
      output,
      callAt: t - rng.int(0, 6) * 0.1,
      returnAt: t + rng.int(0, 6) * 0.1,
    });
  }
  return ops;
}

describe('sim/linearizability - properties', () => {
  it('sim/linearizability - every history produced by a sequential execution is accepted', () => {
    fc.assert(
      fc.property(fc.integer(), fc.integer({ min: 1, max: 60 }), (seed, n) => {
        expect(checkHistory(linearizableHistory(seed, n)).ok).toBe(true);
      }),
      { numRuns: 200 },
    );
  });

  it('sim/linearizability - changing one read to a value never written is always caught', () => {
    fc.assert(
      fc.property(fc.integer(), fc.integer({ min: 2, max: 40 }), (seed, n) => {
        const history = linearizableHistory(seed, n);
        const i = history.findIndex((o) => o.input.op === 'get');
        if (i < 0) return;
        const broken = history.map((o, j) => (j === i ? { ...o, output: { value: 'never-written' } } : o));
        expect(checkHistory(broken).ok).toBe(false);
      }),
      { numRuns: 200 },
    );
  });
});
