import { afterEach, describe, expect, it } from 'vitest';
import { setTypedErrorStacks, ValidationError } from '../../src/lib/errors.js';

describe('errors', () => {
  afterEach(() => setTypedErrorStacks(true));

  it('errors - typed errors capture no stack when turned off, and other errors keep theirs', () => {
    setTypedErrorStacks(false);
    const typed = new ValidationError('x', 'bad');
    expect(typed.stack).not.toMatch(/\n\s+at /);
    expect(typed.code).toBe('VALIDATION');
    expect(typed.message).toBe('x: bad');
    // The global limit is restored: a plain error still has its frames.
    expect(new Error('plain').stack).toMatch(/\n\s+at /);
    setTypedErrorStacks(true);
    expect(new ValidationError('x', 'bad').stack).toMatch(/\n\s+at /);
  });
});
