/**
 * The gateway's pure parts: request entry parsing (total: every input is a request or a dead-letter
 * reason, checked with random field lists too), configuration checks, and the mapping between event
 * stream ids and log positions.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { gatewayConfig, redactUrl } from '../../src/gateway/config.js';
import { cursorAfter, eventStreamId } from '../../src/gateway/egress.js';
import { copyOfFields, deadLetterCopyBytesMax, deadReasons, parseEntry } from '../../src/gateway/entry.js';
import { ConfigError } from '../../src/lib/errors.js';

const reserved = new Set(['trellis:requests', 'trellis:events', 'trellis:dead-letter']);

describe('gateway entry', () => {
  it('gateway entry - well-formed requests of each type parse', () => {
    expect(
      parseEntry(['id', 'a', 'type', 'create', 'reply', 'r', 'spec', '{"tenant":"t"}'], reserved),
    ).toEqual({
      ok: true,
      request: { type: 'create', id: 'a', reply: 'r', spec: { tenant: 't' } },
    });
    for (const type of ['terminate', 'suspend', 'resume']) {
      expect(parseEntry(['type', type, 'reply', 'x:y', 'sandbox', 's-1', 'id', 'b'], reserved)).toEqual({
        ok: true,
        request: { type, id: 'b', reply: 'x:y', sandboxId: 's-1' },
      });
    }
  });

  it('gateway entry - each malformed shape names its reason', () => {
    const cases: [string, string[]][] = [
      ['bad-field', ['id', 'a', 'type']],
      ['too-large', Array.from({ length: 20 }, (_, i) => `f${i}`)],
      ['bad-field', ['id', 'a', 'id', 'b', 'type', 'create', 'reply', 'r', 'spec', '{}']],
      ['missing-field', ['type', 'create', 'reply', 'r']],
      ['missing-field', ['id', 'a', 'reply', 'r']],
      ['missing-field', ['id', 'a', 'type', 'create']],
      ['bad-field', ['id', '', 'type', 'create', 'reply', 'r']],
      ['bad-type', ['id', 'a', 'type', 'CREATE', 'reply', 'r']],
      ['bad-reply-stream', ['id', 'a', 'type', 'create', 'reply', '', 'spec', '{}']],
      ['bad-reply-stream', ['id', 'a', 'type', 'create', 'reply', 'a\nb', 'spec', '{}']],
      ['bad-reply-stream', ['id', 'a', 'type', 'create', 'reply', 'trellis:dead-letter', 'spec', '{}']],
      ['unknown-field', ['id', 'a', 'type', 'terminate', 'reply', 'r', 'sandbox', 's', 'spec', '{}']],
      ['missing-field', ['id', 'a', 'type', 'create', 'reply', 'r']],
      ['bad-json', ['id', 'a', 'type', 'create', 'reply', 'r', 'spec', 'null']],
      ['bad-json', ['id', 'a', 'type', 'create', 'reply', 'r', 'spec', '"text"']],
      ['too-large', ['id', 'a', 'type', 'create', 'reply', 'r', 'spec', `"${'x'.repeat(70_000)}"`]],
      ['too-large', ['id', 'a', 'type', 'create', 'reply', 'r'.repeat(2_000)]],
      ['bad-field', ['id', 'a', 'type', 'resume', 'reply', 'r', 'sandbox', 'x y']],
    ];
    for (const [reason, fields] of cases) {
      const parsed = parseEntry(fields, reserved);
      expect(parsed, JSON.stringify(fields).slice(0, 80)).toMatchObject({ ok: false, reason });
      if (!parsed.ok) expect(parsed.detail.length).toBeLessThan(300);
    }
  });

  it('gateway entry - any field list parses to a request or a known dead-letter reason, never throws', () => {
    // Random names (mostly the real ones) and values (short, long, unicode, JSON-ish).
    const name = fc.oneof(
      fc.constantFrom('id', 'type', 'reply', 'spec', 'sandbox'),
      fc.string({ maxLength: 10 }),
    );
    const value = fc.oneof(
      fc.constantFrom('create', 'terminate', 'a-1', 'r', '{}', '{"a":1}', '[]', 'trellis:events'),
      fc.string({ maxLength: 50 }),
      fc.json(),
    );
    fc.assert(
      fc.property(fc.array(fc.oneof(name, value), { maxLength: 14 }), (fields) => {
        const parsed = parseEntry(fields, reserved);
        if (parsed.ok) expect(['create', 'terminate', 'suspend', 'resume']).toContain(parsed.request.type);
        else expect(deadReasons).toContain(parsed.reason);
      }),
      { seed: Number(process.env.SEED ?? 42), numRuns: 2_000 },
    );
  });

  it('gateway entry - the dead-letter copy of an entry is bounded', () => {
    const copy = copyOfFields(['spec', 'x'.repeat(100_000), 'id', 'y'.repeat(10_000)]);
    expect(copy.length).toBeLessThanOrEqual(deadLetterCopyBytesMax + 1);
    expect(JSON.parse(copyOfFields(['id', 'a', 'type', 'b']))).toEqual({ id: 'a', type: 'b' });
  });
});

describe('gateway config', () => {
  it('gateway config - defaults fill what is not given; redis:// and rediss:// are taken', () => {
    expect(gatewayConfig({ url: 'redis://127.0.0.1:6379' })).toMatchObject({
      requests: 'trellis:requests',
      group: 'trellis',
      events: 'trellis:events',
      deadLetter: 'trellis:dead-letter',
      inFlightMax: 512,
    });
    expect(gatewayConfig({ url: 'rediss://cache.example:6380/2', user: 'u', password: 'p' }).user).toBe('u');
  });

  it('gateway config - bad values are ConfigError naming them, and never echo a password', () => {
    const bad = [
      { url: 'http://127.0.0.1' },
      { url: 'redis://' },
      { url: 'redis://h:1/x' },
      { url: 'redis://h:1?tls=true' },
      { url: 'redis://h:1', inFlightMax: 0 },
      { url: 'redis://h:1', events: 'trellis:requests' },
      { url: 'redis://h:1', group: 'a b' },
      { url: 'redis://h:1', requests: '' },
      { url: 'redis://h:1', claimIdleMs: 1.5 },
    ];
    for (const input of bad) expect(() => gatewayConfig(input), JSON.stringify(input)).toThrow(ConfigError);
    expect(() => gatewayConfig({ url: 'ftp://u:hunter2@h' })).toThrow(/^(?!.*hunter2)/);
    expect(redactUrl('redis://u:hunter2@h:1')).toBe('redis://u:***@h:1');
  });
});

describe('gateway events ids', () => {
  it('gateway events ids - a stream id is a log position and reads back as the position after it', () => {
    expect(eventStreamId({ index: 7, count: 0 })).toBe('7-0');
    expect(eventStreamId({ index: 7, count: 2 })).toBe('7-2');
    expect(cursorAfter('7-2')).toEqual({ index: 7, count: 3 });
    expect(cursorAfter('0-0')).toEqual({ index: 0, count: 0 });
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 2 ** 40 }),
        fc.integer({ min: 0, max: 1_000 }),
        (index, count) => {
          expect(cursorAfter(eventStreamId({ index, count }))).toEqual({ index, count: count + 1 });
        },
      ),
      { seed: Number(process.env.SEED ?? 42) },
    );
  });
});
