/**
 * Hand-written validation of nodes, requests, plan options and allocation shapes (this room may not depend on a
 * schema library). Each check throws `ValidationError` naming the field; a value that passes is safe for every
 * stage.
 *
 * Input arrives from callers in any shape (JSON off the network, a hostile or careless consumer), so every
 * field is type-checked before it is read — `null` where an object belongs is a ValidationError, never a
 * TypeError — and the `normalize*` functions return a frozen copy holding only the known fields. The placer and
 * the index keep the copy, never the caller's object: mutating the original later changes nothing, and a
 * getter cannot answer validation one way and the placer another.
 */
import { ValidationError } from '../src/lib/errors.js';
import { isId } from '../src/lib/ids.js';
import type { AllocationShape } from './cluster-index.js';
import { resourceAmountMax } from './limits.js';
import type {
  Constraint,
  GpuRequest,
  GpuSpec,
  NodeSpec,
  PlacementRequest,
  Preference,
  Resources,
  Strategy,
} from './types.js';
import { nodeStates } from './types.js';

export { resourceAmountMax };
/** Devices one node may carry. */
export const gpuDevicesPerNodeMax = 8;
/** milli-GPU in one device. */
export const gpuMilliPerDevice = 1000;
export const labelsPerNodeMax = 64;
export const labelLengthMax = 256;
export const constraintsPerRequestMax = 32;
export const preferencesPerRequestMax = 32;
export const constraintValuesMax = 64;
export const imagesPerNodeMax = 1024;
export const priorityAbsMax = 1_000_000;

type Raw = Record<string, unknown>;

/** Reads an own property only: a missing key never falls through to `Object.prototype`. */
function own(o: Raw, key: string): unknown {
  return Object.hasOwn(o, key) ? o[key] : undefined;
}

/**
 * The value of label `key`, or undefined when the node has no such label. Labels are read only through this:
 * `labels[key]` would answer `constructor`, `toString` or `__proto__` from `Object.prototype` for a node that
 * has none of them.
 */
export function labelValue(labels: Readonly<Record<string, string>>, key: string): string | undefined {
  return Object.hasOwn(labels, key) ? labels[key] : undefined;
}

function object(path: string, v: unknown): Raw {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) {
    throw new ValidationError(path, `must be an object, got ${describe(v)}`);
  }
  return v as Raw;
}

function array(path: string, v: unknown, max: number): readonly unknown[] {
  if (!Array.isArray(v)) throw new ValidationError(path, `must be an array, got ${describe(v)}`);
  if (v.length > max) throw new ValidationError(path, `at most ${max} entries`);
  return v;
}

function describe(v: unknown): string {
  return v === null ? 'null' : Array.isArray(v) ? 'an array' : typeof v;
}

/**
 * A value for an error message: primitives as themselves, anything else by its kind. `String(v)` of an object
 * runs its own `toString`, which may throw (`{ toString: '' }`) — a bad request must be a ValidationError.
 */
export function shown(v: unknown): string {
  const t = typeof v;
  return t === 'string' || t === 'number' || t === 'boolean' || t === 'bigint' || t === 'undefined'
    ? String(v)
    : describe(v);
}

function integer(path: string, v: unknown, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw new ValidationError(path, `must be an integer in ${min}..${max}, got ${shown(v)}`);
  }
  return v;
}

function amount(path: string, v: unknown): number {
  return integer(path, v, 0, resourceAmountMax);
}

function text(path: string, v: unknown): string {
  if (typeof v !== 'string' || v.length === 0 || v.length > labelLengthMax) {
    throw new ValidationError(path, `must be a string of 1..${labelLengthMax} characters`);
  }
  return v;
}

function id(path: string, v: unknown): string {
  if (!isId(v)) throw new ValidationError(path, 'must be an id of letters, digits, _ and -');
  return v;
}

function resources(path: string, v: unknown): Resources {
  const r = object(path, v);
  return Object.freeze({
    cpu: amount(`${path}.cpu`, own(r, 'cpu')),
    memory: amount(`${path}.memory`, own(r, 'memory')),
    disk: amount(`${path}.disk`, own(r, 'disk')),
  });
}

function gpuSpec(path: string, v: unknown): GpuSpec {
  const g = object(path, v);
  return Object.freeze({
    model: text(`${path}.model`, own(g, 'model')),
    count: integer(`${path}.count`, own(g, 'count'), 1, gpuDevicesPerNodeMax),
  });
}

function labels(path: string, v: unknown): Readonly<Record<string, string>> {
  const raw = object(path, v);
  const keys = Object.keys(raw);
  if (keys.length > labelsPerNodeMax) throw new ValidationError(path, `at most ${labelsPerNodeMax} labels`);
  // fromEntries defines own properties, so a `__proto__` key is an ordinary own label, never the prototype.
  // Readers still go through labelValue, which never falls through to Object.prototype.
  return Object.freeze(
    Object.fromEntries(keys.map((k) => [text(`${path}.${k}`, k), text(`${path}.${k}`, raw[k])])),
  );
}

/** Checks a node spec and returns a frozen copy of its known fields; throws ValidationError naming the first bad field. */
export function normalizeNodeSpec(v: unknown): NodeSpec {
  const spec = object('', v);
  const nodeId = id('id', own(spec, 'id'));
  const capacity = resources('capacity', own(spec, 'capacity'));
  const state = own(spec, 'state');
  if (typeof state !== 'string' || !(nodeStates as readonly string[]).includes(state)) {
    throw new ValidationError('state', `unknown state ${shown(state)}`);
  }
  const rawGpu = own(spec, 'gpu');
  const gpu = rawGpu === undefined ? undefined : gpuSpec('gpu', rawGpu);
  const nodeLabels = labels('labels', own(spec, 'labels'));
  const rawImages = own(spec, 'images');
  const images =
    rawImages === undefined
      ? undefined
      : Object.freeze(array('images', rawImages, imagesPerNodeMax).map((img, i) => text(`images.${i}`, img)));
  const out: { -readonly [K in keyof NodeSpec]: NodeSpec[K] } = {
    id: nodeId,
    capacity,
    labels: nodeLabels,
    state: state as NodeSpec['state'],
  };
  if (gpu !== undefined) out.gpu = gpu;
  if (images !== undefined) out.images = images;
  return Object.freeze(out);
}

/** Checks a node spec; throws ValidationError naming the first bad field. */
export function validateNodeSpec(spec: NodeSpec): void {
  normalizeNodeSpec(spec);
}

function gpuRequest(path: string, v: unknown): GpuRequest {
  const g = object(path, v);
  const { count, milli, model } = g;
  if ((count === undefined) === (milli === undefined)) {
    throw new ValidationError(path, 'give exactly one of count (whole devices) or milli (a share of one)');
  }
  if (count !== undefined) integer(`${path}.count`, count, 1, gpuDevicesPerNodeMax);
  if (milli !== undefined) integer(`${path}.milli`, milli, 1, gpuMilliPerDevice - 1);
  if (model !== undefined) text(`${path}.model`, model);
  return g as GpuRequest;
}

function checkedConstraints(path: string, v: unknown, max: number): readonly Constraint[] {
  const list = array(path, v, max);
  for (let i = 0; i < list.length; i++) checkConstraint(path, i, '', list[i]);
  return list as readonly Constraint[];
}

function isText(v: unknown): boolean {
  return typeof v === 'string' && v.length !== 0 && v.length <= labelLengthMax;
}

/**
 * Validates constraint `list.index` (`list.index.suffix` when `suffix` is given) in place (requests are checked,
 * not copied: the planner reads them once per batch). The field paths are built only when a check fails: built
 * up front they were ~23 KiB of strings a batch of 1,000 (sampled allocation profile), for messages never shown.
 */
function checkConstraint(list: string, index: number, suffix: string, v: unknown): void {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) object(fieldPath(list, index, suffix, ''), v);
  const c = v as Raw;
  if (!isText(c.label)) text(fieldPath(list, index, suffix, '.label'), c.label);
  switch (c.op) {
    case 'eq':
      if (!isText(c.value)) text(fieldPath(list, index, suffix, '.value'), c.value);
      return;
    case 'in':
    case 'notIn': {
      const values = c.values;
      if (!Array.isArray(values) || values.length > constraintValuesMax)
        array(fieldPath(list, index, suffix, '.values'), values, constraintValuesMax);
      const vals = values as readonly unknown[];
      if (vals.length === 0)
        throw new ValidationError(
          fieldPath(list, index, suffix, '.values'),
          `must list 1..${constraintValuesMax} values`,
        );
      for (let i = 0; i < vals.length; i++)
        if (!isText(vals[i])) text(fieldPath(list, index, suffix, `.values.${i}`), vals[i]);
      return;
    }
    case 'exists':
      return;
    default:
      throw new ValidationError(
        fieldPath(list, index, suffix, '.op'),
        `must be one of eq, in, notIn, exists`,
      );
  }
}

/** `list.index` + `suffix` + `field`: a failing constraint field's path (a function, not a closure: no context per call). */
function fieldPath(list: string, index: number, suffix: string, field: string): string {
  return `${list}.${index}${suffix}${field}`;
}

/**
 * The fields of a validated request that its request class is made of (placement/classes.ts), as normalizeRequest
 * read them: handed over in one object of one shape, so classifying a request does not read the request's own
 * properties again (requests come in many shapes, and each property read of one costs a megamorphic lookup).
 */
export interface RequestFields {
  cpu: number;
  memory: number;
  disk: number;
  priority: number;
  gpu: GpuRequest | undefined;
  constraints: readonly Constraint[] | undefined;
  preferences: readonly Preference[] | undefined;
  imageId: string | undefined;
  pinnedNode: string | undefined;
  strategy: Strategy | undefined;
  /** Per request, not a class field: the request has a spread or anti-affinity rule. */
  grouped: boolean;
}

/**
 * Checks a placement request in place and returns it typed; throws ValidationError naming the first bad field.
 * Every field the placer reads is checked here for type and range (null where an object belongs is refused,
 * never a TypeError later). Requests are not copied: copying cost a third of a microsecond per request, and
 * the planner reads each request synchronously within the call that validated it. Each property is read once
 * (a read of a request's property is a megamorphic lookup; reading each twice, to test and then to check, was
 * half of validation's reads); with `fields`, the class fields are left there as read.
 */
export function normalizeRequest(v: unknown, fields?: RequestFields): PlacementRequest {
  const r = object('', v);
  id('id', r.id);
  id('tenant', r.tenant);
  // Literal paths: building `${path}.cpu` for every valid request cost more than the checks themselves.
  const res = object('resources', r.resources);
  const cpu = amount('resources.cpu', res.cpu);
  const memory = amount('resources.memory', res.memory);
  const disk = amount('resources.disk', res.disk);
  const priority = r.priority;
  if (priority !== undefined) integer('priority', priority, -priorityAbsMax, priorityAbsMax);
  const gpu = r.gpu;
  if (gpu !== undefined) gpuRequest('gpu', gpu);
  const constraints = r.constraints;
  if (constraints !== undefined) checkedConstraints('constraints', constraints, constraintsPerRequestMax);
  const preferences = r.preferences;
  if (preferences !== undefined) {
    const prefs = array('preferences', preferences, preferencesPerRequestMax);
    for (let i = 0; i < prefs.length; i++) {
      const p = object(`preferences.${i}`, prefs[i]);
      checkConstraint('preferences', i, '.constraint', p.constraint);
      integer(`preferences.${i}.weight`, p.weight, 1, 100);
    }
  }
  const spread = r.spread;
  if (spread !== undefined) {
    const sp = object('spread', spread);
    text('spread.label', sp.label);
    integer('spread.maxSkew', sp.maxSkew, 1, resourceAmountMax);
    if (sp.group !== undefined) text('spread.group', sp.group);
  }
  const antiAffinity = r.antiAffinity;
  if (antiAffinity !== undefined) {
    const aa = object('antiAffinity', antiAffinity);
    text('antiAffinity.group', aa.group);
    integer('antiAffinity.maxPerNode', aa.maxPerNode, 1, resourceAmountMax);
  }
  const imageId = r.imageId;
  if (imageId !== undefined) text('imageId', imageId);
  const pinnedNode = r.pinnedNode;
  if (pinnedNode !== undefined) id('pinnedNode', pinnedNode);
  const strategy = r.strategy;
  if (strategy !== undefined && strategy !== 'binpack' && strategy !== 'spread') {
    throw new ValidationError('strategy', 'must be binpack or spread');
  }
  if (fields !== undefined) {
    fields.cpu = cpu;
    fields.memory = memory;
    fields.disk = disk;
    fields.priority = (priority as number | undefined) ?? 0;
    fields.gpu = gpu as GpuRequest | undefined;
    fields.constraints = constraints as readonly Constraint[] | undefined;
    fields.preferences = preferences as readonly Preference[] | undefined;
    fields.imageId = imageId as string | undefined;
    fields.pinnedNode = pinnedNode as string | undefined;
    fields.strategy = strategy as Strategy | undefined;
    fields.grouped = spread !== undefined || antiAffinity !== undefined;
  }
  return r as unknown as PlacementRequest;
}

/** Checks a placement request; throws ValidationError naming the first bad field. */
export function validateRequest(req: PlacementRequest): void {
  normalizeRequest(req);
}

/**
 * Checks what an allocation or release names (IndexBuilder.allocate / release): amounts are integers in
 * 0..resourceAmountMax — a NaN, a fraction or a negative amount would otherwise be stored as a wrong number and
 * free capacity could rise above the node's capacity — and each GPU device appears at most once with a share in
 * 1..gpuMilliPerDevice. Returns a frozen copy.
 */
export function normalizeAllocationShape(v: unknown): AllocationShape {
  const s = object('shape', v);
  const out: {
    resources: Resources;
    gpuDevices?: readonly { readonly device: number; readonly milli: number }[];
    antiAffinityGroup?: string;
    spread?: { readonly group: string; readonly label: string };
  } = { resources: resources('shape.resources', own(s, 'resources')) };
  const devices = own(s, 'gpuDevices');
  if (devices !== undefined) {
    const seen = new Set<number>();
    out.gpuDevices = Object.freeze(
      array('shape.gpuDevices', devices, gpuDevicesPerNodeMax).map((raw, i) => {
        const g = object(`shape.gpuDevices.${i}`, raw);
        const device = integer(`shape.gpuDevices.${i}.device`, own(g, 'device'), 0, gpuDevicesPerNodeMax - 1);
        if (seen.has(device)) {
          throw new ValidationError(`shape.gpuDevices.${i}.device`, `device ${device} is named twice`);
        }
        seen.add(device);
        const milli = integer(`shape.gpuDevices.${i}.milli`, own(g, 'milli'), 1, gpuMilliPerDevice);
        return Object.freeze({ device, milli });
      }),
    );
  }
  const group = own(s, 'antiAffinityGroup');
  if (group !== undefined) out.antiAffinityGroup = text('shape.antiAffinityGroup', group);
  const spread = own(s, 'spread');
  if (spread !== undefined) {
    const sp = object('shape.spread', spread);
    out.spread = Object.freeze({
      group: text('shape.spread.group', own(sp, 'group')),
      label: text('shape.spread.label', own(sp, 'label')),
    });
  }
  return Object.freeze(out);
}
