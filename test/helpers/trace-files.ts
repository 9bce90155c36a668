/**
 * Trace files for the reader tests: a temp directory removed after the file's tests, a writer into it, and the
 * check that a read was refused at a line and column (TraceFormatError, code TRACE_FORMAT).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect } from 'vitest';
import { TraceFormatError } from '../../src/sim/index.js';

/** A temp directory for this test file (removed after its tests) and a function writing a named file there. */
export function traceDir(prefix: string): {
  dir: string;
  file: (name: string, text: string | Buffer) => string;
} {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const file = (name: string, text: string | Buffer): string => {
    const p = join(dir, name);
    writeFileSync(p, text);
    return p;
  };
  return { dir, file };
}

/** Awaits `p` and requires a TraceFormatError at `line` and `column` (and `message`, when given). */
export async function rejectsAt(
  p: Promise<unknown>,
  line: number,
  column: string,
  message?: RegExp,
): Promise<void> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(TraceFormatError);
  expect((err as TraceFormatError).line).toBe(line);
  expect((err as TraceFormatError).column).toBe(column);
  expect((err as TraceFormatError).code).toBe('TRACE_FORMAT');
  if (message !== undefined) expect((err as Error).message).toMatch(message);
}
