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
import type {
  AntiAffinityRule,
  Constraint,
  GpuRequest,
  GpuSpec,
  NodeSpec,
  PlacementRequest,
  Preference,
  Resources,
  SpreadRule,
} from './types.js';
import { nodeStates } from './types.js';

/** Largest amount of any scalar resource on one node or request (2^31 - 1 fits the Int32 columns). */
export const resourceAmountMax = 0x7fffffff;
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

function integer(path: string, v: unknown, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw new ValidationError(path, `must be an integer in ${min}..${max}, got ${String(v)}`);
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

function constraint(path: string, v: unknown): Constraint {
  const c = object(path, v);
  const label = text(`${path}.label`, own(c, 'label'));
  const op = own(c, 'op');
  switch (op) {
    case 'eq':
      return Object.freeze({ label, op, value: text(`${path}.value`, own(c, 'value')) });
    case 'in':
    case 'notIn': {
      const raw = array(`${path}.values`, own(c, 'values'), constraintValuesMax);
      if (raw.length === 0)
        throw new ValidationError(`${path}.values`, `must list 1..${constraintValuesMax} values`);
      const values = Object.freeze(raw.map((x, i) => text(`${path}.values.${i}`, x)));
      return Object.freeze({ label, op, values });
    }
    case 'exists':
      return Object.freeze({ label, op });
    default:
      throw new ValidationError(`${path}.op`, `must be one of eq, in, notIn, exists`);
  }
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
  // A null-prototype copy: even a careless `labels[key]` cannot reach Object.prototype, and a `__proto__` key
  // is an ordinary own label.
  const out: Record<string, string> = Object.create(null);
  for (const k of keys) {
    text(`${path}.${k}`, k);
    out[k] = text(`${path}.${k}`, raw[k]);
  }
  return Object.freeze(out);
}

/** Checks a node spec and returns a frozen copy of its known fields; throws ValidationError naming the first bad field. */
export function normalizeNodeSpec(v: unknown): NodeSpec {
  const spec = object('', v);
  const nodeId = id('id', own(spec, 'id'));
  const capacity = resources('capacity', own(spec, 'capacity'));
  const state = own(spec, 'state');
  if (typeof state !== 'string' || !(nodeStates as readonly string[]).includes(state)) {
    throw new ValidationError('state', `unknown state ${String(state)}`);
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
  const count = own(g, 'count');
  const milli = own(g, 'milli');
  if ((count === undefined) === (milli === undefined)) {
    throw new ValidationError(path, 'give exactly one of count (whole devices) or milli (a share of one)');
  }
  const model = own(g, 'model');
  const out: { count?: number; milli?: number; model?: string } = {};
  if (count !== undefined) out.count = integer(`${path}.count`, count, 1, gpuDevicesPerNodeMax);
  if (milli !== undefined) out.milli = integer(`${path}.milli`, milli, 1, gpuMilliPerDevice - 1);
  if (model !== undefined) out.model = text(`${path}.model`, model);
  return Object.freeze(out);
}

function preference(path: string, v: unknown): Preference {
  const p = object(path, v);
  return Object.freeze({
    constraint: constraint(`${path}.constraint`, own(p, 'constraint')),
    weight: integer(`${path}.weight`, own(p, 'weight'), 1, 100),
  });
}

function spreadRule(path: string, v: unknown): SpreadRule {
  const s = object(path, v);
  const out: { label: string; maxSkew: number; group?: string } = {
    label: text(`${path}.label`, own(s, 'label')),
    maxSkew: integer(`${path}.maxSkew`, own(s, 'maxSkew'), 1, resourceAmountMax),
  };
  const group = own(s, 'group');
  if (group !== undefined) out.group = text(`${path}.group`, group);
  return Object.freeze(out);
}

function antiAffinityRule(path: string, v: unknown): AntiAffinityRule {
  const a = object(path, v);
  return Object.freeze({
    group: text(`${path}.group`, own(a, 'group')),
    maxPerNode: integer(`${path}.maxPerNode`, own(a, 'maxPerNode'), 1, resourceAmountMax),
  });
}

/**
 * Checks a placement request and returns a frozen copy of its known fields, with absent optional lists left
 * absent; throws ValidationError naming the first bad field.
 */
export function normalizeRequest(v: unknown): PlacementRequest {
  const r = object('', v);
  const out: { -readonly [K in keyof PlacementRequest]: PlacementRequest[K] } = {
    id: id('id', own(r, 'id')),
    tenant: id('tenant', own(r, 'tenant')),
    resources: resources('resources', own(r, 'resources')),
  };
  const priority = own(r, 'priority');
  if (priority !== undefined) out.priority = integer('priority', priority, -priorityAbsMax, priorityAbsMax);
  const gpu = own(r, 'gpu');
  if (gpu !== undefined) out.gpu = gpuRequest('gpu', gpu);
  const constraints = own(r, 'constraints');
  if (constraints !== undefined) {
    out.constraints = Object.freeze(
      array('constraints', constraints, constraintsPerRequestMax).map((c, i) =>
        constraint(`constraints.${i}`, c),
      ),
    );
  }
  const preferences = own(r, 'preferences');
  if (preferences !== undefined) {
    out.preferences = Object.freeze(
      array('preferences', preferences, preferencesPerRequestMax).map((p, i) =>
        preference(`preferences.${i}`, p),
      ),
    );
  }
  const spread = own(r, 'spread');
  if (spread !== undefined) out.spread = spreadRule('spread', spread);
  const antiAffinity = own(r, 'antiAffinity');
  if (antiAffinity !== undefined) out.antiAffinity = antiAffinityRule('antiAffinity', antiAffinity);
  const imageId = own(r, 'imageId');
  if (imageId !== undefined) out.imageId = text('imageId', imageId);
  const pinnedNode = own(r, 'pinnedNode');
  if (pinnedNode !== undefined) out.pinnedNode = id('pinnedNode', pinnedNode);
  const strategy = own(r, 'strategy');
  if (strategy !== undefined) {
    if (strategy !== 'binpack' && strategy !== 'spread')
      throw new ValidationError('strategy', 'must be binpack or spread');
    out.strategy = strategy;
  }
  return Object.freeze(out);
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
