/**
 * `encodePlaceFrame` (scheduler/place-encoding.ts) writes the bytes `commandCodec.encode` writes: compared byte
 * for byte on seeded random place commands (interned frozen specs, plain ones, shallowly frozen ones, GPU
 * lists, non-ASCII text, undefined values) and at each msgpack header boundary it writes itself (strings of
 * 31/32 and 255/256 characters, 15/16 keys, 15/16 and 65,535/65,536 items); and a deeply frozen value changed
 * inside after it was written once (impossible) or a shallowly frozen one changed inside is written as it is now.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { commandCodec, type PlaceItem } from '../../scheduler/commands.js';
import { validateSpec } from '../../scheduler/core/admission.js';
import { encodePlaceFrame } from '../../scheduler/place-encoding.js';

/** fast-check's seed: fixed, so a failure replays; `SEED=n` tries another. Printed in every failure. */
const seed = process.env.SEED === undefined ? 21 : Number(process.env.SEED);

type Place = { type: 'place'; atMs: number; items: PlaceItem[] };

const id = fc.oneof(
  fc.stringMatching(/^[A-Za-z0-9_-]{1,40}$/),
  fc.constantFrom('x'.repeat(31), 'x'.repeat(32), 'x'.repeat(128), 'x'.repeat(255), 'x'.repeat(256)),
  fc.constantFrom('é', 'ñode-1', '日本', 'a\u0000b'),
);
const specOf = fc.record(
  {
    tenant: fc.stringMatching(/^[a-z0-9]{1,8}$/),
    resources: fc.record({ cpu: fc.nat(100_000), memory: fc.nat(100_000), disk: fc.nat(100_000) }),
    image: fc.string({ maxLength: 40, unit: 'binary' }),
    stateless: fc.boolean(),
  },
  { requiredKeys: ['tenant', 'resources'] },
);
/** A spec as the create path interns it, as a caller's plain object, or shallowly frozen. */
const spec = fc.tuple(specOf, fc.constantFrom('interned', 'plain', 'shallow')).map(([s, how]) => {
  const plain = structuredClone(s);
  if (how === 'plain') return plain;
  if (how === 'shallow') return Object.freeze(plain);
  try {
    return validateSpec(plain);
  } catch {
    return plain;
  }
});
const gpuDevices = fc.oneof(
  fc.constant(Object.freeze([]) as unknown as PlaceItem['gpuDevices']),
  fc.array(fc.record({ device: fc.nat(7), milli: fc.integer({ min: 1, max: 1000 }) }), { maxLength: 3 }),
);
const item = fc.record({
  requestId: id,
  sandboxId: id,
  spec,
  specDigest: fc.stringMatching(/^[0-9a-f]{16}$/),
  nodeId: id,
  gpuDevices,
});
const command = fc.record({
  type: fc.constant('place' as const),
  atMs: fc.oneof(fc.nat(), fc.constant(1_764_000_000_000)),
  items: fc.array(item, { maxLength: 20 }),
});

const library = (cmd: Place): Uint8Array => commandCodec.encode(cmd);

describe('scheduler/place-encoding', () => {
  it('scheduler/place-encoding - writes the bytes commandCodec writes on random place commands', () => {
    fc.assert(
      fc.property(command, (cmd) => {
        expect(encodePlaceFrame(cmd as Place), `seed ${seed}`).toStrictEqual(library(cmd as Place));
      }),
      { seed, numRuns: 300 },
    );
  });

  it('scheduler/place-encoding - writes the same bytes at each header boundary', () => {
    const s = validateSpec({ tenant: 't', resources: { cpu: 1, memory: 1, disk: 1 } });
    const one = (i: number): PlaceItem => ({
      requestId: `r${i}`,
      sandboxId: `s${i}`,
      spec: s,
      specDigest: '0123456789abcdef',
      nodeId: 'n',
      gpuDevices: [],
    });
    for (const n of [0, 1, 15, 16, 65_535, 65_536]) {
      const cmd: Place = { type: 'place', atMs: 5, items: Array.from({ length: n }, (_, i) => one(i)) };
      expect(Buffer.from(encodePlaceFrame(cmd) as Uint8Array).equals(library(cmd)), `${n} items`).toBe(true);
    }
    // Items of 15 and 16 keys, a key left out for its undefined value, and an item with another prototype's key.
    const wide = (k: number): PlaceItem =>
      Object.fromEntries(Array.from({ length: k }, (_, i) => [`k${i}`, i])) as unknown as PlaceItem;
    const holes = { ...one(1), extra: undefined } as unknown as PlaceItem;
    const inherited = Object.assign(Object.create({ hidden: 1 }), one(2)) as PlaceItem;
    const cmd: Place = { type: 'place', atMs: 5, items: [wide(15), wide(16), holes, inherited] };
    expect(encodePlaceFrame(cmd)).toStrictEqual(library(cmd));
  });

  it('scheduler/place-encoding - a shallowly frozen value changed inside is written as it is now', () => {
    const resources = { cpu: 1, memory: 1, disk: 1 };
    const shallow = Object.freeze({ tenant: 't', resources });
    const cmd: Place = {
      type: 'place',
      atMs: 1,
      items: [
        {
          requestId: 'r',
          sandboxId: 's',
          spec: shallow,
          specDigest: '0123456789abcdef',
          nodeId: 'n',
          gpuDevices: [],
        },
      ],
    };
    expect(encodePlaceFrame(cmd)).toStrictEqual(library(cmd));
    resources.cpu = 2;
    expect(encodePlaceFrame(cmd)).toStrictEqual(library(cmd));
  });

  it('scheduler/place-encoding - leaves a command whose items are not its last key to the codec', () => {
    const cmd = { items: [], type: 'place', atMs: 1 } as unknown as Place;
    expect(encodePlaceFrame(cmd)).toBeUndefined();
  });
});
