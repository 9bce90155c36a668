/**
 * `specDigest` keeps the digest of a deeply frozen spec (it cannot change); a spec that can still change, at
 * any depth, is digested every time, so an edit is never hidden behind an old digest.
 */
import { describe, expect, it } from 'vitest';
import type { SandboxSpec } from '../../scheduler/commands.js';
import { specDigest } from '../../scheduler/state.js';
import { deepFreeze, isDeepFrozen } from '../../src/lib/freeze.js';
import { spec } from './fixtures.js';

describe('scheduler spec digests', () => {
  it('state - a spec edited at any depth gets a new digest unless it is deeply frozen', () => {
    // Frozen at the top only: its resources can still change, and the digest must follow.
    const shallow = Object.freeze(spec('t1', 1000, 1024)) as SandboxSpec;
    const before = specDigest(shallow);
    (shallow.resources as { cpu: number }).cpu = 2000;
    expect(specDigest(shallow)).not.toBe(before);
    expect(specDigest(shallow)).toBe(specDigest(spec('t1', 2000, 1024)));
    // Not frozen at all.
    const open = spec('t1', 1000, 1024);
    const first = specDigest(open);
    (open as { tenant: string }).tenant = 't2';
    expect(specDigest(open)).not.toBe(first);
    // Deeply frozen: the same digest as an equal open spec, every time.
    const frozen = deepFreeze(spec('t1', 1000, 1024, { labels: { a: 'b' } }));
    expect(isDeepFrozen(frozen)).toBe(true);
    expect(specDigest(frozen)).toBe(specDigest(spec('t1', 1000, 1024, { labels: { a: 'b' } })));
    expect(specDigest(frozen)).toBe(specDigest(frozen));
    expect(() => {
      (frozen.labels as Record<string, string>).a = 'c';
    }).toThrow(TypeError);
  });
});
