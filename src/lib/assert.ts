/**
 * Always-on assertions for programmer errors (TigerStyle): they stay enabled in production, and the
 * message prints the values involved so a failure can be diagnosed from the log line alone.
 *
 * Pure: no I/O, no clock. The pure cores (`placement/`, `raft/core`) may import this module.
 */

/** Thrown when an internal invariant does not hold. Never thrown for bad user input. */
export class AssertionFailure extends Error {
  override readonly name = 'AssertionFailure';
  readonly values: Readonly<Record<string, unknown>>;
  constructor(message: string, values: Readonly<Record<string, unknown>> = {}) {
    super(`${message}${formatValues(values)}`);
    this.values = values;
  }
}

function formatValues(values: Readonly<Record<string, unknown>>): string {
  const keys = Object.keys(values);
  if (keys.length === 0) return '';
  const parts = keys.map((k) => `${k}=${safeString(values[k])}`);
  return ` (${parts.join(', ')})`;
}

function safeString(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'bigint') return `${v}n`;
  if (v instanceof Uint8Array) return `Uint8Array(${v.length})`;
  try {
    const s = JSON.stringify(v);
    return s === undefined ? String(v) : s.length > 200 ? `${s.slice(0, 200)}…` : s;
  } catch {
    return String(v);
  }
}

/** Asserts `cond`; on failure throws AssertionFailure with `message` and the printed `values`. */
export function assert(
  cond: unknown,
  message: string,
  values?: Readonly<Record<string, unknown>>,
): asserts cond {
  if (!cond) throw new AssertionFailure(message, values);
}

/** Asserts `a === b` and prints both on failure. */
export function assertEqual<T>(a: T, b: T, message: string): void {
  if (a !== b) throw new AssertionFailure(message, { actual: a, expected: b });
}

/** Asserts `a <= b`, the relationship most invariants have (`applied <= committed`). */
export function assertLe(a: number, b: number, message: string): void {
  if (!(a <= b)) throw new AssertionFailure(message, { left: a, right: b });
}

/** For exhaustive switches: the compiler proves this unreachable; at run time it reports the value. */
export function unreachable(value: never, message = 'unreachable'): never {
  throw new AssertionFailure(message, { value });
}
