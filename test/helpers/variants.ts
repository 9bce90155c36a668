/**
 * One-step hostile variants of a valid value, for tests that hold a hand-written fast check to the schema path
 * (test/scheduler/command-fast-check.test.ts, test/scheduler/spec-check.test.ts): each must give the same value or
 * the same typed error either way.
 */

/** Every path to a value inside `v` (objects and arrays), the root excluded. */
function paths(v: unknown, from: (string | number)[] = []): (string | number)[][] {
  if (v === null || typeof v !== 'object') return [];
  const out: (string | number)[][] = [];
  for (const [k, x] of Object.entries(v)) {
    const p = [...from, Array.isArray(v) ? Number(k) : k];
    out.push(p, ...paths(x, p));
  }
  return out;
}

function at(v: unknown, path: readonly (string | number)[]): unknown {
  let o = v;
  for (const k of path) o = (o as Record<string | number, unknown>)[k];
  return o;
}

/**
 * Every one-step variant of `v`: each value replaced by each of `hostile`, each object key deleted, an unknown
 * key added to each object, and each of `optionalKeys` an object lacks present with the value `undefined`.
 */
export function* oneStepVariants(
  v: unknown,
  hostile: readonly unknown[],
  optionalKeys: readonly string[] = [],
): Generator<unknown> {
  const all = paths(v);
  for (const path of all) {
    const last = path[path.length - 1] as string | number;
    for (const value of hostile) {
      const copy = structuredClone(v);
      (at(copy, path.slice(0, -1)) as Record<string | number, unknown>)[last] = value;
      yield copy;
    }
    if (typeof last === 'string') {
      const copy = structuredClone(v);
      delete (at(copy, path.slice(0, -1)) as Record<string, unknown>)[last];
      yield copy;
    }
  }
  for (const path of [[], ...all]) {
    const copy = structuredClone(v);
    const o = at(copy, path);
    if (o !== null && typeof o === 'object' && !Array.isArray(o)) {
      (o as Record<string, unknown>).extraKey = 1;
      yield copy;
      for (const k of optionalKeys) {
        if (Object.hasOwn(o, k)) continue;
        const again = structuredClone(v);
        (at(again, path) as Record<string, unknown>)[k] = undefined;
        yield again;
      }
    }
  }
}
