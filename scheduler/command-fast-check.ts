/**
 * A fast check of the hot Raft commands (`place`, `pend`, `status`), in front of zod when a replica decodes
 * a committed entry. zod stays the schema of record and the only source of errors: this check answers
 * "certainly valid" (the body is returned as is, since zod's output for a valid body of these shapes is an
 * equal copy) or "not known", and then `commandSchema` decides, refusing with the same typed error as
 * without this check. It is deliberately stricter than zod: anything outside the common subset (a spec
 * with constraints, labels, spread or anti-affinity; an object with another prototype; an unknown key) is
 * "not known". test/scheduler/command-fast-check.test.ts holds it to zod on valid and hostile bodies.
 *
 * Why: zod allocated ~6 KB per place item (600 MB over bench:scheduler's 100,000 creates), and an entry of
 * 4,000 items is decoded once per replica process.
 */
import { gpuDevicesPerNodeMax, gpuMilliPerDevice, resourceAmountMax } from '../placement/index.js';
import { idLengthMax } from '../src/lib/ids.js';
import { isWellFormedText } from '../src/lib/text.js';
import { type Command, commandItemsMax, textLengthMax } from './core/commands.js';
import { sandboxStates } from './core/lifecycle.js';

const idPattern = /^[A-Za-z0-9_-]+$/;
const digestPattern = /^[0-9a-f]{16}$/;
const states: ReadonlySet<unknown> = new Set(sandboxStates);
const strategies: ReadonlySet<unknown> = new Set(['binpack', 'spread']);
const resumePolicies: ReadonlySet<unknown> = new Set(['wait', 'move', 'fail']);
/** Priority bounds of `sandboxSpecSchema`. */
const priorityAbsMax = 1_000_000;

/** A plain object (msgpack's maps decode to these): no other prototype can hide or add fields. */
function plain(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && Object.getPrototypeOf(v) === Object.prototype;
}

/** Own enumerable keys of a plain object, counted without allocating a key array. */
function keyCount(o: Record<string, unknown>): number {
  let n = 0;
  for (const k in o) if (Object.hasOwn(o, k)) n++;
  return n;
}

function isId(v: unknown): boolean {
  return typeof v === 'string' && v.length >= 1 && v.length <= idLengthMax && idPattern.test(v);
}

/**
 * Text of the schema's length, and well formed (no lone surrogate): what is vouched for then survives a msgpack
 * round trip unchanged, which `encodeProposal` (state-machine.ts) relies on. A decoded string always is.
 */
function isText(v: unknown): boolean {
  return typeof v === 'string' && v.length >= 1 && v.length <= textLengthMax && isWellFormedText(v);
}

function isInt(v: unknown, min: number, max: number): boolean {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= min && v <= max;
}

function isAmount(v: unknown): boolean {
  return isInt(v, 0, resourceAmountMax);
}

function isResources(v: unknown): boolean {
  return plain(v) && keyCount(v) === 3 && isAmount(v.cpu) && isAmount(v.memory) && isAmount(v.disk);
}

function isGpuRequest(v: unknown): boolean {
  if (!plain(v)) return false;
  let n = 0;
  if (v.count !== undefined) {
    if (!isInt(v.count, 0, gpuDevicesPerNodeMax)) return false;
    n++;
  }
  if (v.milli !== undefined) {
    if (!isInt(v.milli, 0, gpuMilliPerDevice - 1)) return false;
    n++;
  }
  if (v.model !== undefined) {
    if (!isText(v.model)) return false;
    n++;
  }
  return keyCount(v) === n;
}

/** A spec of the common subset: tenant, resources and the scalar options (no rule lists or label maps). */
function isSpec(v: unknown): boolean {
  if (!plain(v) || !isId(v.tenant) || !isResources(v.resources)) return false;
  let n = 2;
  if (v.gpu !== undefined) {
    if (!isGpuRequest(v.gpu)) return false;
    n++;
  }
  if (v.image !== undefined) {
    if (!isText(v.image)) return false;
    n++;
  }
  if (v.priority !== undefined) {
    if (!isInt(v.priority, -priorityAbsMax, priorityAbsMax)) return false;
    n++;
  }
  if (v.strategy !== undefined) {
    if (!strategies.has(v.strategy)) return false;
    n++;
  }
  if (v.resumePolicy !== undefined) {
    if (!resumePolicies.has(v.resumePolicy)) return false;
    n++;
  }
  if (v.stateless !== undefined) {
    if (typeof v.stateless !== 'boolean') return false;
    n++;
  }
  return keyCount(v) === n;
}

function isGpuDevices(v: unknown): boolean {
  if (!Array.isArray(v) || v.length > gpuDevicesPerNodeMax) return false;
  for (const d of v) {
    if (
      !plain(d) ||
      keyCount(d) !== 2 ||
      !isInt(d.device, 0, gpuDevicesPerNodeMax - 1) ||
      !isInt(d.milli, 1, gpuMilliPerDevice)
    )
      return false;
  }
  return true;
}

function isPlaceItem(v: unknown): boolean {
  return (
    plain(v) &&
    keyCount(v) === 6 &&
    isId(v.requestId) &&
    isId(v.sandboxId) &&
    isId(v.nodeId) &&
    typeof v.specDigest === 'string' &&
    digestPattern.test(v.specDigest) &&
    isGpuDevices(v.gpuDevices) &&
    isSpec(v.spec)
  );
}

function isPendItem(v: unknown): boolean {
  return (
    plain(v) &&
    keyCount(v) === 6 &&
    isId(v.requestId) &&
    isId(v.sandboxId) &&
    typeof v.specDigest === 'string' &&
    digestPattern.test(v.specDigest) &&
    isText(v.reason) &&
    isInt(v.deadlineMs, 0, Number.MAX_SAFE_INTEGER) &&
    isSpec(v.spec)
  );
}

function isStatusItem(v: unknown): boolean {
  if (!plain(v) || !isId(v.sandboxId) || !states.has(v.state)) return false;
  let n = 2;
  if (v.reason !== undefined) {
    if (!isText(v.reason)) return false;
    n++;
  }
  if (v.nodeId !== undefined) {
    if (!isId(v.nodeId)) return false;
    n++;
  }
  return keyCount(v) === n;
}

const itemChecks: Readonly<Record<string, (item: unknown) => boolean>> = {
  place: isPlaceItem,
  pend: isPendItem,
  status: isStatusItem,
};

/**
 * `body` itself when it is certainly a valid `place`, `pend` or `status` command of the common subset
 * (zod would return an equal copy); undefined when not known, for `commandSchema` to decide. A body it vouches
 * for is plain data (plain objects and arrays, safe integers, booleans, well-formed strings, no `undefined`),
 * so its msgpack round trip gives an equal value.
 */
export function fastCheckedCommand(body: unknown): Command | undefined {
  if (!plain(body) || keyCount(body) !== 3) return undefined;
  const check = typeof body.type === 'string' ? itemChecks[body.type] : undefined;
  if (check === undefined || !Object.hasOwn(itemChecks, body.type as string)) return undefined;
  if (!isInt(body.atMs, 0, Number.MAX_SAFE_INTEGER)) return undefined;
  const items = body.items;
  if (!Array.isArray(items) || items.length > commandItemsMax) return undefined;
  for (const item of items) if (!check(item)) return undefined;
  return body as unknown as Command;
}
