import { encode } from '@msgpack/msgpack';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { createCodec } from '../../src/lib/codec.js';
import { CodecError } from '../../src/lib/errors.js';
import { zodDecoder } from '../../src/lib/validate.js';

// A payload that changed shape between versions: v1 had `name`, v2 renamed it to `id` and added `count`.
const v2 = z.strictObject({ id: z.string().max(64), count: z.number().int().nonnegative() });
const v1 = z.strictObject({ name: z.string().max(64) });
const codec = createCodec<z.output<typeof v2>>({
  kind: 'test.thing',
  version: 2,
  frameBytesMax: 1024,
  decoders: {
    1: (body) => ({ id: zodDecoder(v1)(body).name, count: 0 }),
    2: zodDecoder(v2),
  },
});

function reasonOf(bytes: Uint8Array): string {
  try {
    codec.decode(bytes);
    return 'ok';
  } catch (err) {
    expect(err).toBeInstanceOf(CodecError);
    return (err as CodecError).reason;
  }
}

describe('lib/codec', () => {
  it('lib/codec - round-trips a value through the versioned envelope', () => {
    // Checks encode then decode returns an equal value, and the frame carries kind and version.
    const bytes = codec.encode({ id: 'a', count: 3 });
    expect(codec.decode(bytes)).toEqual({ id: 'a', count: 3 });
  });

  it('lib/codec - migrates an older version to the current shape', () => {
    // Checks a v1 frame written by an older peer decodes into the v2 shape.
    expect(codec.decode(encode(['test.thing', 1, { name: 'old' }]))).toEqual({ id: 'old', count: 0 });
  });

  it('lib/codec - refuses each kind of bad frame with its own reason', () => {
    // Checks every rejection path names the right reason, which metrics use as a label.
    expect(reasonOf(new Uint8Array([0xc1]))).toBe('malformed');
    expect(reasonOf(encode({ not: 'an envelope' }))).toBe('envelope');
    expect(reasonOf(encode(['other.kind', 2, { id: 'a', count: 1 }]))).toBe('kind');
    expect(reasonOf(encode(['test.thing', 3, { id: 'a', count: 1 }]))).toBe('version');
    expect(reasonOf(encode(['test.thing', 2, { id: 'a', count: -1 }]))).toBe('shape');
    expect(reasonOf(encode(['test.thing', 2, { id: 'a', count: 1, extra: true }]))).toBe('shape');
    expect(reasonOf(new Uint8Array(2048))).toBe('too-large');
    expect(() => codec.encode({ id: 'x'.repeat(2000), count: 1 })).toThrow(CodecError);
  });

  it('lib/codec - random bytes never throw anything but CodecError', () => {
    // Checks the boundary promise: whatever arrives, decode either returns a valid value or throws CodecError.
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
        const reason = reasonOf(bytes);
        expect(['ok', 'malformed', 'envelope', 'kind', 'version', 'shape', 'too-large']).toContain(reason);
      }),
      { seed: 42, numRuns: 2000 },
    );
  });

  it('lib/codec - random well-formed msgpack values never pass as a wrong shape', () => {
    // Checks that arbitrary msgpack structures inside a correct envelope are either valid or refused.
    fc.assert(
      fc.property(fc.anything({ maxDepth: 3 }), (body) => {
        let bytes: Uint8Array;
        try {
          bytes = encode(['test.thing', 2, body]);
        } catch {
          return; // Not encodable as msgpack (e.g. a symbol): nothing to test.
        }
        const reason = reasonOf(bytes);
        if (reason === 'ok') expect(v2.safeParse(codec.decode(bytes)).success).toBe(true);
      }),
      { seed: 7, numRuns: 1000 },
    );
  });
});
