/**
 * A fast check of a create's spec, in front of `validateSpec`'s schema path (admission.ts). zod stays the schema
 * of record and the only source of errors: this check answers "certainly valid" with the spec, or "not known",
 * and then the schema path decides, refusing with the same typed error as without this check. It is stricter
 * than every check of that path together (zod's schema, the unsafe-text check, placement's request rules):
 * anything outside the common subset (constraints, labels, spread, anti-affinity; an object with another
 * prototype; an unknown key; a key present with the value `undefined`; -0; text with a lone surrogate) is "not known".
 * test/scheduler/spec-check.test.ts holds it to the schema path on valid and hostile specs.
 *
 * What it returns is interned: one deeply frozen spec object per distinct content (keys in the schema's order,
 * as zod writes them), so the creates of a workload's few shapes share a handful of spec objects. Their digest
 * (state.ts `specDigest`, kept with a deeply frozen spec) is then computed once per shape instead of once per
 * create, every record of the shape holds the same object, and nothing of the caller's object is kept: each
 * field is read once, checked, and copied.
 *
 * Why: zod allocated ~3.6 KB per create (~360 MB over bench:scheduler's 100,000) and each create's spec, a
 * fresh object, was digested (its keys sorted at every level) in the verifier: together ~20% of the leader's
 * allocation, all of it alive until its batch, which is what the young-generation GC pays for.
 */
import { gpuDevicesPerNodeMax, gpuMilliPerDevice, resourceAmountMax } from '../../placement/index.js';
import { idLengthMax } from '../../src/lib/ids.js';
import { hasUnsafeText, isWellFormedText } from '../../src/lib/text.js';
import { type SandboxSpec, textLengthMax } from './commands.js';

/** Distinct spec contents interned at most; past it the table starts over (a bound, not an eviction policy). */
export const internedSpecsMax = 4096;

/** Priority bounds of the schema and of placement's request check (both ±10^6). */
const priorityAbsMax = 1_000_000;
/** Free text of the subset (image, GPU model): within the schema's and placement's bounds (both 256). */
const fastTextLengthMax = Math.min(textLengthMax, 256);
const idPattern = /^[A-Za-z0-9_-]+$/;

type Raw = Record<string, unknown>;

/** A plain object: no other prototype can hide or add fields. */
function plain(v: unknown): v is Raw {
  return typeof v === 'object' && v !== null && Object.getPrototypeOf(v) === Object.prototype;
}

/** Own enumerable keys of a plain object, counted without allocating a key array. */
function keyCount(o: Raw): number {
  let n = 0;
  for (const k in o) if (Object.hasOwn(o, k)) n++;
  return n;
}

function isId(v: unknown): v is string {
  return typeof v === 'string' && v.length >= 1 && v.length <= idLengthMax && idPattern.test(v);
}

function isText(v: unknown): v is string {
  return (
    typeof v === 'string' &&
    v.length >= 1 &&
    v.length <= fastTextLengthMax &&
    !hasUnsafeText(v) &&
    isWellFormedText(v)
  );
}

/** A safe integer in [min, max], and not -0 (the interning key writes -0 as 0; zod would return -0). */
function isInt(v: unknown, min: number, max: number): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= min && v <= max && !Object.is(v, -0);
}

/** The fields of a spec of the subset, read once each: the interned copy is built from these. */
interface Fields {
  tenant: string;
  cpu: number;
  memory: number;
  disk: number;
  gpuCount: number | undefined;
  gpuMilli: number | undefined;
  gpuModel: string | undefined;
  hasGpu: boolean;
  image: string | undefined;
  priority: number | undefined;
  strategy: 'binpack' | 'spread' | undefined;
  resumePolicy: 'wait' | 'move' | 'fail' | undefined;
  stateless: boolean | undefined;
}

/** Reads and checks a GPU request into `f`; false when it is outside the subset. */
function readGpu(v: unknown, f: Fields): boolean {
  if (!plain(v)) return false;
  const count = v.count;
  const milli = v.milli;
  const model = v.model;
  let n = 0;
  // Placement's rule: exactly one of a whole-device count (1..8) or a share of one device (1..999).
  if (count !== undefined) {
    if (!isInt(count, 1, gpuDevicesPerNodeMax) || milli !== undefined) return false;
    n++;
  } else if (!isInt(milli, 1, gpuMilliPerDevice - 1)) return false;
  else n++;
  if (model !== undefined) {
    if (!isText(model)) return false;
    n++;
  }
  if (keyCount(v) !== n) return false;
  f.hasGpu = true;
  f.gpuCount = count as number | undefined;
  f.gpuMilli = milli as number | undefined;
  f.gpuModel = model;
  return true;
}

/** Reads and checks a spec of the subset; undefined when it is outside it. */
function readSpec(v: unknown): Fields | undefined {
  if (!plain(v)) return undefined;
  const tenant = v.tenant;
  const resources = v.resources;
  if (!isId(tenant) || !plain(resources) || keyCount(resources) !== 3) return undefined;
  const cpu = resources.cpu;
  const memory = resources.memory;
  const disk = resources.disk;
  if (!isInt(cpu, 0, resourceAmountMax) || !isInt(memory, 0, resourceAmountMax)) return undefined;
  if (!isInt(disk, 0, resourceAmountMax)) return undefined;
  const f: Fields = {
    tenant,
    cpu,
    memory,
    disk,
    gpuCount: undefined,
    gpuMilli: undefined,
    gpuModel: undefined,
    hasGpu: false,
    image: undefined,
    priority: undefined,
    strategy: undefined,
    resumePolicy: undefined,
    stateless: undefined,
  };
  let n = 2;
  const gpu = v.gpu;
  if (gpu !== undefined) {
    if (!readGpu(gpu, f)) return undefined;
    n++;
  }
  const image = v.image;
  if (image !== undefined) {
    if (!isText(image)) return undefined;
    f.image = image;
    n++;
  }
  const priority = v.priority;
  if (priority !== undefined) {
    if (!isInt(priority, -priorityAbsMax, priorityAbsMax)) return undefined;
    f.priority = priority;
    n++;
  }
  const strategy = v.strategy;
  if (strategy !== undefined) {
    if (strategy !== 'binpack' && strategy !== 'spread') return undefined;
    f.strategy = strategy;
    n++;
  }
  const resumePolicy = v.resumePolicy;
  if (resumePolicy !== undefined) {
    if (resumePolicy !== 'wait' && resumePolicy !== 'move' && resumePolicy !== 'fail') return undefined;
    f.resumePolicy = resumePolicy;
    n++;
  }
  const stateless = v.stateless;
  if (stateless !== undefined) {
    if (typeof stateless !== 'boolean') return undefined;
    f.stateless = stateless;
    n++;
  }
  return keyCount(v) === n ? f : undefined;
}

/**
 * The spec's canonical JSON (keys sorted at every level, as state.ts `canonicalJson` writes it): the interning
 * key. Written field by field from what was checked, with no key sort and no intermediate objects. Ids need no
 * escaping (letters, digits, '_' and '-'); free text goes through JSON.stringify.
 */
function internKey(f: Fields): string {
  let k = '{';
  if (f.hasGpu) {
    k += '"gpu":{';
    let sep = '';
    if (f.gpuCount !== undefined) {
      k += `"count":${f.gpuCount}`;
      sep = ',';
    }
    if (f.gpuMilli !== undefined) {
      k += `${sep}"milli":${f.gpuMilli}`;
      sep = ',';
    }
    if (f.gpuModel !== undefined) k += `${sep}"model":${JSON.stringify(f.gpuModel)}`;
    k += '},';
  }
  if (f.image !== undefined) k += `"image":${JSON.stringify(f.image)},`;
  if (f.priority !== undefined) k += `"priority":${f.priority},`;
  k += `"resources":{"cpu":${f.cpu},"disk":${f.disk},"memory":${f.memory}},`;
  if (f.resumePolicy !== undefined) k += `"resumePolicy":"${f.resumePolicy}",`;
  if (f.stateless !== undefined) k += `"stateless":${f.stateless},`;
  if (f.strategy !== undefined) k += `"strategy":"${f.strategy}",`;
  return `${k}"tenant":"${f.tenant}"}`;
}

/** The frozen spec of `f`, with its keys in the schema's order (as zod's output has them). */
function frozenSpec(f: Fields): SandboxSpec {
  const spec: { -readonly [K in keyof SandboxSpec]: SandboxSpec[K] } = {
    tenant: f.tenant,
    resources: Object.freeze({ cpu: f.cpu, memory: f.memory, disk: f.disk }),
  };
  if (f.hasGpu) {
    const gpu: { count?: number; milli?: number; model?: string } = {};
    if (f.gpuCount !== undefined) gpu.count = f.gpuCount;
    if (f.gpuMilli !== undefined) gpu.milli = f.gpuMilli;
    if (f.gpuModel !== undefined) gpu.model = f.gpuModel;
    spec.gpu = Object.freeze(gpu);
  }
  if (f.image !== undefined) spec.image = f.image;
  if (f.priority !== undefined) spec.priority = f.priority;
  if (f.strategy !== undefined) spec.strategy = f.strategy;
  if (f.resumePolicy !== undefined) spec.resumePolicy = f.resumePolicy;
  if (f.stateless !== undefined) spec.stateless = f.stateless;
  return Object.freeze(spec);
}

let interned = new Map<string, SandboxSpec>();

/** The interning key of `input` (its canonical JSON) when it is of the subset; for tests. */
export function specInternKey(input: unknown): string | undefined {
  const f = readSpec(input);
  return f === undefined ? undefined : internKey(f);
}

/**
 * Interned specs of the commonest shape (tenant and resources alone) by tenant, cpu, memory and disk: found
 * without building a key string or a `Fields` record (~0.5 KB per create otherwise). Bounded with the table.
 */
let bareSpecs = new Map<string, Map<number, Map<number, Map<number, SandboxSpec>>>>();
let bareSpecCount = 0;

/** `fastCheckedSpec` for a plain object of two keys; undefined when it is not a valid bare spec. */
function bareSpec(v: Raw): SandboxSpec | undefined {
  const tenant = v.tenant;
  const resources = v.resources;
  if (!isId(tenant) || !plain(resources) || keyCount(resources) !== 3) return undefined;
  const cpu = resources.cpu;
  const memory = resources.memory;
  const disk = resources.disk;
  if (!isInt(cpu, 0, resourceAmountMax) || !isInt(memory, 0, resourceAmountMax)) return undefined;
  if (!isInt(disk, 0, resourceAmountMax)) return undefined;
  const found = bareSpecs.get(tenant)?.get(cpu)?.get(memory)?.get(disk);
  if (found !== undefined) return found;
  if (bareSpecCount >= internedSpecsMax) {
    bareSpecs = new Map();
    bareSpecCount = 0;
  }
  const spec = Object.freeze({ tenant, resources: Object.freeze({ cpu, memory, disk }) });
  let byCpu = bareSpecs.get(tenant);
  if (byCpu === undefined) {
    byCpu = new Map();
    bareSpecs.set(tenant, byCpu);
  }
  let byMemory = byCpu.get(cpu);
  if (byMemory === undefined) {
    byMemory = new Map();
    byCpu.set(cpu, byMemory);
  }
  let byDisk = byMemory.get(memory);
  if (byDisk === undefined) {
    byDisk = new Map();
    byMemory.set(memory, byDisk);
  }
  byDisk.set(disk, spec);
  bareSpecCount++;
  return spec;
}

/**
 * The interned, deeply frozen spec equal to what `validateSpec`'s schema path returns for `input`, when
 * `input` is certainly valid and of the common subset; undefined when not known (the schema path decides).
 */
export function fastCheckedSpec(input: unknown): SandboxSpec | undefined {
  // A bare spec is found or refused here; readSpec would refuse what bareSpec refuses.
  if (plain(input) && keyCount(input) === 2) return bareSpec(input);
  const f = readSpec(input);
  if (f === undefined) return undefined;
  const key = internKey(f);
  let spec = interned.get(key);
  if (spec === undefined) {
    if (interned.size >= internedSpecsMax) interned = new Map();
    spec = frozenSpec(f);
    interned.set(key, spec);
  }
  return spec;
}
