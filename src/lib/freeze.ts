/** Deep freezing of plain data (specs shared by many records), and its check. */

/** Freezes `v` and every object reachable from it; returns it. */
export function deepFreeze<T>(v: T): T {
  if (v === null || typeof v !== 'object' || Object.isFrozen(v)) return v;
  for (const x of Object.values(v)) deepFreeze(x);
  return Object.freeze(v);
}

/** True when `v` and every object reachable from it are frozen (so it can never change). */
export function isDeepFrozen(v: unknown): boolean {
  if (v === null || typeof v !== 'object') return true;
  if (!Object.isFrozen(v)) return false;
  for (const x of Object.values(v)) if (!isDeepFrozen(x)) return false;
  return true;
}
