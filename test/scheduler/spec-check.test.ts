/**
 * The create path's fast spec check (scheduler/core/spec-check.ts) against the schema path it stands in front
 * of: on seeded random specs and every one-step hostile variant of each, `validateSpec` gives what
 * `validateSpecWithSchema` gives — the same value (keys in the same order) or the same error (class, code,
 * message) — the fast check vouches only for specs the schema path accepts, every spec of the subset is
 * vouched for, and what it returns is interned (equal content, one frozen object) under a key that is the
 * spec's canonical JSON.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { validateSpec, validateSpecWithSchema } from '../../scheduler/core/admission.js';
import { fastCheckedSpec, specInternKey } from '../../scheduler/core/spec-check.js';
import { specDigest } from '../../scheduler/state.js';
import { isDeepFrozen } from '../../src/lib/freeze.js';
import { oneStepVariants } from '../helpers/variants.js';

/** fast-check's seed: fixed, so a failure replays; `SEED=n` tries another. Printed in every failure. */
const seed = process.env.SEED === undefined ? 9 : Number(process.env.SEED);
const runs = { seed, numRuns: 24 };

const id = fc.stringMatching(/^[A-Za-z0-9_-]{1,12}$/);
const text = fc.string({ minLength: 1, maxLength: 12 });
const amount = fc.nat({ max: 100_000 });

/** A GPU request as placement takes it (exactly one of count and milli), and now and then one it refuses. */
const gpu = fc.oneof(
  fc.record({ count: fc.integer({ min: 1, max: 8 }), model: text }, { requiredKeys: ['count'] }),
  fc.record({ milli: fc.integer({ min: 1, max: 999 }), model: text }, { requiredKeys: ['milli'] }),
  fc.record({ count: fc.nat({ max: 8 }), milli: fc.nat({ max: 999 }), model: text }, { requiredKeys: [] }),
);

const subsetFields = {
  tenant: id,
  resources: fc.record({ cpu: amount, memory: amount, disk: amount }),
  gpu,
  image: text,
  priority: fc.integer({ min: -1_000_000, max: 1_000_000 }),
  strategy: fc.constantFrom('binpack', 'spread'),
  resumePolicy: fc.constantFrom('wait', 'move', 'fail'),
  stateless: fc.boolean(),
};

/** Specs of the subset the fast check covers, and one in three outside it (rules, labels, spread). */
const spec = fc.oneof(
  { arbitrary: fc.record(subsetFields, { requiredKeys: ['tenant', 'resources'] }), weight: 2 },
  {
    arbitrary: fc.record(
      {
        ...subsetFields,
        labels: fc.dictionary(id, text, { maxKeys: 2 }),
        constraints: fc.constant([{ label: 'zone', op: 'exists' }]),
        spread: fc.constant({ label: 'zone', maxSkew: 1 }),
        antiAffinity: fc.constant({ group: 'g', maxPerNode: 1 }),
      },
      { requiredKeys: ['tenant', 'resources'] },
    ),
    weight: 1,
  },
);

/**
 * Values tried at every position of a spec: wrong types, each bound of the schema and of placement's rules and
 * one past it (ids 128 characters, text 256, amounts 2^31-1, GPU count 1..8 and milli 1..999, priority ±10^6),
 * unsafe text, -0, and `undefined` (a key present without a value).
 */
const hostile: readonly unknown[] = [
  undefined,
  null,
  true,
  false,
  {},
  [],
  '',
  'a b',
  'a\u0000b',
  'x\u001b[2J',
  'left\u202eright',
  '\u2066',
  `${'x'.repeat(60)}\ud800`,
  '__proto__',
  'binpack',
  'spread',
  'move',
  'x'.repeat(128),
  'x'.repeat(129),
  'x'.repeat(256),
  'x'.repeat(257),
  -1,
  -0,
  0,
  1,
  1.5,
  8,
  9,
  999,
  1000,
  2 ** 31 - 1,
  2 ** 31,
  2 ** 53,
  -1_000_000,
  -1_000_001,
  1_000_000,
  1_000_001,
  Number.NaN,
  Number.POSITIVE_INFINITY,
];

/** Every one-step variant of `v` (test/helpers/variants.ts), each optional key of the schema also present as `undefined`. */
function variants(v: unknown): Generator<unknown> {
  return oneStepVariants(v, hostile, ['gpu', 'image', 'priority', 'model', 'count', 'milli', 'stateless']);
}

/** The outcome of validating: the value with its key order, or the error's class, code and message. */
function outcome(f: () => unknown): unknown {
  try {
    const value = f();
    return { value, json: JSON.stringify(value) };
  } catch (err) {
    const e = err as Error & { code?: string };
    return { error: [e.constructor.name, e.code, e.message] };
  }
}

/** Canonical JSON as state.ts writes it for a digest (keys sorted at every level), written independently. */
function canonical(v: unknown): string {
  if (v === null || typeof v !== 'object') return JSON.stringify(v);
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  const o = v as Record<string, unknown>;
  const keys = Object.keys(o)
    .filter((k) => o[k] !== undefined)
    .sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonical(o[k])}`).join(',')}}`;
}

/** In the subset: no rules, labels, spread or anti-affinity, and a GPU request placement takes. */
function inSubset(s: Record<string, unknown>): boolean {
  const g = s.gpu as Record<string, unknown> | undefined;
  const gpuOk =
    g === undefined ||
    ((g.count === undefined) !== (g.milli === undefined) &&
      (g.count === undefined || (g.count as number) >= 1) &&
      (g.milli === undefined || (g.milli as number) >= 1));
  return (
    gpuOk &&
    s.labels === undefined &&
    s.constraints === undefined &&
    s.spread === undefined &&
    s.antiAffinity === undefined
  );
}

describe('scheduler/spec-check', () => {
  it('scheduler/spec-check - validateSpec gives the schema path value or error on valid and hostile specs', () => {
    let vouched = 0;
    let tried = 0;
    fc.assert(
      fc.property(spec, (generated) => {
        // Plain objects, as a caller writes them (fast-check also makes null-prototype ones: tested below).
        const valid = structuredClone(generated);
        // The spec, and its bare form (tenant and resources alone: the fast path's own lookup), with variants.
        const bare = { tenant: valid.tenant, resources: structuredClone(valid.resources) };
        for (const variant of [valid, ...variants(valid), bare, ...variants(bare)]) {
          tried++;
          const fast = fastCheckedSpec(variant);
          const slow = outcome(() => validateSpecWithSchema(variant));
          expect(
            outcome(() => validateSpec(variant)),
            `seed ${seed}: ${JSON.stringify(variant)}`,
          ).toStrictEqual(slow);
          if (fast === undefined) continue;
          vouched++;
          expect(slow, `seed ${seed}: vouched for ${JSON.stringify(variant)}`).toHaveProperty('value');
          const value = (slow as { value: Parameters<typeof specDigest>[0] }).value;
          expect(isDeepFrozen(fast), `seed ${seed}`).toBe(true);
          expect(specDigest(fast), `seed ${seed}`).toBe(specDigest(value));
          expect(specInternKey(variant), `seed ${seed}`).toBe(canonical(value));
        }
        if (inSubset(valid))
          expect(
            fastCheckedSpec(valid),
            `seed ${seed}: a spec of the subset was not vouched for`,
          ).toBeDefined();
      }),
      runs,
    );
    expect(vouched).toBeGreaterThan(200);
    expect(tried).toBeGreaterThan(vouched);
  });

  it('scheduler/spec-check - equal specs share one frozen object; different ones never do', () => {
    const a = { tenant: 't1', resources: { cpu: 100, memory: 128, disk: 256 } };
    const first = validateSpec(a);
    // Another object of the same content, its keys in another order.
    const same = validateSpec({ resources: { disk: 256, memory: 128, cpu: 100 }, tenant: 't1' });
    expect(same).toBe(first);
    expect(first).not.toBe(a);
    expect(Object.isFrozen(first) && Object.isFrozen(first.resources)).toBe(true);
    // The caller's object is copied: changing it later changes nothing already validated.
    a.resources.cpu = 5;
    expect(first.resources.cpu).toBe(100);
    const others = [
      { tenant: 't2', resources: { cpu: 100, memory: 128, disk: 256 } },
      { tenant: 't1', resources: { cpu: 100, memory: 256, disk: 128 } },
      { tenant: 't1', resources: { cpu: 100, memory: 128, disk: 256 }, image: 'i' },
      { tenant: 't1', resources: { cpu: 100, memory: 128, disk: 256 }, image: 'i",' },
      { tenant: 't1', resources: { cpu: 100, memory: 128, disk: 256 }, stateless: false },
      { tenant: 't1', resources: { cpu: 100, memory: 128, disk: 256 }, gpu: { count: 1 } },
      { tenant: 't1', resources: { cpu: 100, memory: 128, disk: 256 }, gpu: { milli: 1 } },
    ].map(validateSpec);
    expect(new Set([first, ...others]).size).toBe(others.length + 1);
  });

  it('scheduler/spec-check - objects that are not plain data are left to the schema path', () => {
    const fields = { tenant: 't1', resources: { cpu: 1, memory: 1, disk: 1 } };
    const inherited = Object.assign(Object.create({ image: 'x' }), fields);
    const nullProto = Object.assign(Object.create(null), fields);
    class Spec {
      tenant = 't1';
      resources = { cpu: 1, memory: 1, disk: 1 };
    }
    for (const v of [inherited, nullProto, new Spec(), [fields]]) {
      expect(fastCheckedSpec(v)).toBeUndefined();
      expect(outcome(() => validateSpec(v))).toStrictEqual(outcome(() => validateSpecWithSchema(v)));
    }
    // A getter is read once: the value checked is the value kept.
    let reads = 0;
    const tricky = {
      resources: { cpu: 1, memory: 1, disk: 1 },
      get tenant() {
        reads++;
        return reads === 1 ? 't1' : 'bad id!';
      },
    };
    expect(validateSpec(tricky).tenant).toBe('t1');
  });
});
