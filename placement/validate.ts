/**
 * Hand-written validation of nodes and requests (this room may not depend on a schema library). Each check
 * throws `ValidationError` naming the field; a value that passes is safe for every stage.
 */
import { ValidationError } from '../src/lib/errors.js';
import { isId } from '../src/lib/ids.js';
import type { Constraint, NodeSpec, PlacementRequest, Resources } from './types.js';
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
export const constraintValuesMax = 64;
export const imagesPerNodeMax = 1024;
export const priorityAbsMax = 1_000_000;

function amount(path: string, v: unknown): void {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > resourceAmountMax) {
    throw new ValidationError(path, `must be an integer in 0..${resourceAmountMax}, got ${String(v)}`);
  }
}

function text(path: string, v: unknown): void {
  if (typeof v !== 'string' || v.length === 0 || v.length > labelLengthMax) {
    throw new ValidationError(path, `must be a string of 1..${labelLengthMax} characters`);
  }
}

function resources(path: string, r: Resources | undefined): void {
  if (typeof r !== 'object' || r === null) throw new ValidationError(path, 'must be an object');
  amount(`${path}.cpu`, r.cpu);
  amount(`${path}.memory`, r.memory);
  amount(`${path}.disk`, r.disk);
}

function constraint(path: string, c: Constraint): void {
  if (typeof c !== 'object' || c === null) throw new ValidationError(path, 'must be an object');
  text(`${path}.label`, c.label);
  switch (c.op) {
    case 'eq':
      text(`${path}.value`, c.value);
      return;
    case 'in':
    case 'notIn':
      if (!Array.isArray(c.values) || c.values.length === 0 || c.values.length > constraintValuesMax) {
        throw new ValidationError(`${path}.values`, `must list 1..${constraintValuesMax} values`);
      }
      c.values.forEach((v, i) => {
        text(`${path}.values.${i}`, v);
      });
      return;
    case 'exists':
      return;
    default:
      throw new ValidationError(`${path}.op`, `must be one of eq, in, notIn, exists`);
  }
}

/** Checks a node spec; throws ValidationError naming the first bad field. */
export function validateNodeSpec(spec: NodeSpec): void {
  if (!isId(spec.id)) throw new ValidationError('id', 'must be an id of letters, digits, _ and -');
  resources('capacity', spec.capacity);
  if (!nodeStates.includes(spec.state))
    throw new ValidationError('state', `unknown state ${String(spec.state)}`);
  if (spec.gpu !== undefined) {
    text('gpu.model', spec.gpu.model);
    const n = spec.gpu.count;
    if (!Number.isInteger(n) || n < 1 || n > gpuDevicesPerNodeMax) {
      throw new ValidationError('gpu.count', `must be an integer in 1..${gpuDevicesPerNodeMax}`);
    }
  }
  const labels = Object.entries(spec.labels ?? {});
  if (labels.length > labelsPerNodeMax)
    throw new ValidationError('labels', `at most ${labelsPerNodeMax} labels`);
  for (const [k, v] of labels) {
    text(`labels.${k}`, k);
    text(`labels.${k}`, v);
  }
  const images = spec.images ?? [];
  if (images.length > imagesPerNodeMax)
    throw new ValidationError('images', `at most ${imagesPerNodeMax} images`);
  images.forEach((img, i) => {
    text(`images.${i}`, img);
  });
}

/** Checks a placement request; throws ValidationError naming the first bad field. */
export function validateRequest(req: PlacementRequest): void {
  if (!isId(req.id)) throw new ValidationError('id', 'must be an id of letters, digits, _ and -');
  if (!isId(req.tenant)) throw new ValidationError('tenant', 'must be an id of letters, digits, _ and -');
  resources('resources', req.resources);
  if (
    req.priority !== undefined &&
    (!Number.isInteger(req.priority) || Math.abs(req.priority) > priorityAbsMax)
  ) {
    throw new ValidationError('priority', `must be an integer within ±${priorityAbsMax}`);
  }
  if (req.gpu !== undefined) {
    const { count, milli } = req.gpu;
    if ((count === undefined) === (milli === undefined)) {
      throw new ValidationError('gpu', 'give exactly one of count (whole devices) or milli (a share of one)');
    }
    if (count !== undefined && (!Number.isInteger(count) || count < 1 || count > gpuDevicesPerNodeMax)) {
      throw new ValidationError('gpu.count', `must be an integer in 1..${gpuDevicesPerNodeMax}`);
    }
    if (milli !== undefined && (!Number.isInteger(milli) || milli < 1 || milli >= gpuMilliPerDevice)) {
      throw new ValidationError('gpu.milli', `must be an integer in 1..${gpuMilliPerDevice - 1}`);
    }
    if (req.gpu.model !== undefined) text('gpu.model', req.gpu.model);
  }
  const constraints = req.constraints ?? [];
  if (constraints.length > constraintsPerRequestMax) {
    throw new ValidationError('constraints', `at most ${constraintsPerRequestMax} constraints`);
  }
  constraints.forEach((c, i) => {
    constraint(`constraints.${i}`, c);
  });
  (req.preferences ?? []).forEach((p, i) => {
    constraint(`preferences.${i}.constraint`, p.constraint);
    if (!Number.isInteger(p.weight) || p.weight < 1 || p.weight > 100) {
      throw new ValidationError(`preferences.${i}.weight`, 'must be an integer in 1..100');
    }
  });
  if (req.spread !== undefined) {
    text('spread.label', req.spread.label);
    if (!Number.isInteger(req.spread.maxSkew) || req.spread.maxSkew < 1) {
      throw new ValidationError('spread.maxSkew', 'must be an integer >= 1');
    }
    if (req.spread.group !== undefined) text('spread.group', req.spread.group);
  }
  if (req.antiAffinity !== undefined) {
    text('antiAffinity.group', req.antiAffinity.group);
    if (!Number.isInteger(req.antiAffinity.maxPerNode) || req.antiAffinity.maxPerNode < 1) {
      throw new ValidationError('antiAffinity.maxPerNode', 'must be an integer >= 1');
    }
  }
  if (req.imageId !== undefined) text('imageId', req.imageId);
  if (req.pinnedNode !== undefined && !isId(req.pinnedNode))
    throw new ValidationError('pinnedNode', 'must be an id');
  if (req.strategy !== undefined && req.strategy !== 'binpack' && req.strategy !== 'spread') {
    throw new ValidationError('strategy', 'must be binpack or spread');
  }
}
