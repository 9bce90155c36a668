import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { failureOf } from '../../src/cli/errors.js';
import { describeEvent } from '../../src/cli/ops/sandboxes.js';
import { ValidationError } from '../../src/lib/errors.js';
import { printable, unsafeTextPath } from '../../src/lib/text.js';

// biome-ignore lint/suspicious/noControlCharactersInRegex: the test matches control characters on purpose.
const unsafe = /[\u0000-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069]/;

describe('text', () => {
  it('text - unsafeTextPath names the first string holding a control character or a bidi override', () => {
    expect(unsafeTextPath({ a: 'plain', b: ['ok', 'é 日本'] }, 'spec')).toBeUndefined();
    expect(unsafeTextPath({ labels: { role: 'x\u001b[31m' } }, 'spec')).toBe('spec.labels.role');
    expect(unsafeTextPath({ images: ['ok', 'b\u0000'] })).toBe('images.1');
    expect(unsafeTextPath({ labels: { 'k\u202e': 'v' } }, 'node')).toBe('node.labels.k\\u{202e}');
    expect(unsafeTextPath('\u0085')).toBe('');
    expect(unsafeTextPath(42)).toBeUndefined();
  });

  it('text - printable escapes every unsafe character and leaves other text as it is', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 40 }), (s) => {
        const out = printable(s);
        if (unsafe.test(out)) return false;
        return unsafe.test(s) ? unsafeTextPath(s) === '' : out === s;
      }),
      { seed: 16, numRuns: 500 },
    );
    expect(printable('a\u001b[2Jb\rc')).toBe('a\\u{1b}[2Jb\\u{d}c');
  });

  it('text - the CLI error line and event lines reach the terminal escaped', () => {
    const line = failureOf(new ValidationError('id', "unknown 'x\u001b]0;pwned\u0007'")).line;
    expect(line).toBe("error: id: unknown 'x\\u{1b}]0;pwned\\u{7}' (VALIDATION)");
    const event = describeEvent({
      kind: 'sandbox',
      index: 7,
      sandboxId: 'sb1',
      from: 'starting',
      to: 'failed',
      nodeId: 'n1',
      reason: 'boot: \u001b[31mpanic\r',
    } as never);
    expect(unsafe.test(event)).toBe(false);
    expect(event).toContain('boot: \\u{1b}[31mpanic\\u{d}');
  });
});
