/**
 * Stage 1 — feasibility: can this node take this request at all? Checks run cheapest first: the class
 * verdict (state, GPU model, label constraints, computed once per class and cached for the batch), then
 * anti-affinity, spread skew, and finally the node's free resources and devices.
 */
import type { IndexReader } from '../cluster-index.js';
import type { Constraint, GpuRequest } from '../types.js';
import { gpuMilliPerDevice, labelValue } from '../validate.js';
import type { CompiledRequest } from './request.js';

/** Class verdicts: pass, or the first check the class fails. Constraint i fails as `verdictConstraint + i`. */
export const verdictPass = -1;
export const verdictState = 0;
export const verdictGpuModel = 1;
export const verdictConstraint = 2;
export const verdictUnknown = 0x7fff;

export function constraintHolds(c: Constraint, labels: Readonly<Record<string, string>>): boolean {
  const v = labelValue(labels, c.label);
  switch (c.op) {
    case 'eq':
      return v === c.value;
    case 'in':
      return v !== undefined && c.values.includes(v);
    case 'notIn':
      return v === undefined || !c.values.includes(v);
    case 'exists':
      return v !== undefined;
  }
}

/** The constraint as a person writes it, for rejection messages. */
export function describeConstraint(c: Constraint): string {
  switch (c.op) {
    case 'eq':
      return `${c.label} = ${c.value}`;
    case 'in':
      return `${c.label} in [${c.values.join(', ')}]`;
    case 'notIn':
      return `${c.label} not in [${c.values.join(', ')}]`;
    case 'exists':
      return `${c.label} exists`;
  }
}

/** The verdict of one class for one request, computed on first use and cached in `req.classVerdicts`. */
export function classVerdict(index: IndexReader, req: CompiledRequest, classId: number): number {
  let cache = req.classVerdicts;
  if (cache.length <= classId) {
    const bigger = new Int16Array(Math.max(index.classes.length, classId + 1)).fill(verdictUnknown);
    bigger.set(cache);
    cache = bigger;
    req.classVerdicts = cache;
  }
  const known = cache[classId] as number;
  if (known !== verdictUnknown) return known;
  const info = index.classes[classId];
  let verdict = verdictPass;
  if (info === undefined || info.state !== 'ready') verdict = verdictState;
  else if (
    req.gpu !== undefined &&
    (info.gpuModel === '' || (req.gpu.model !== undefined && req.gpu.model !== info.gpuModel))
  ) {
    verdict = verdictGpuModel;
  } else {
    for (let i = 0; i < req.constraints.length; i++) {
      if (!constraintHolds(req.constraints[i] as Constraint, info.labels)) {
        verdict = verdictConstraint + i;
        break;
      }
    }
  }
  cache[classId] = verdict;
  return verdict;
}

/** Picks GPU devices for the request on a node, or null when its devices cannot serve it. */
export function pickGpuDevices(
  index: IndexReader,
  slot: number,
  gpu: GpuRequest,
): { device: number; milli: number }[] | null {
  const devices = index.gpuCount(slot);
  if (gpu.count !== undefined) {
    const picked: { device: number; milli: number }[] = [];
    for (let d = 0; d < devices && picked.length < gpu.count; d++) {
      if (index.gpuFree(slot, d) === gpuMilliPerDevice) picked.push({ device: d, milli: gpuMilliPerDevice });
    }
    return picked.length === gpu.count ? picked : null;
  }
  // A share goes to the device it fits most tightly, keeping whole devices whole for whole-GPU requests.
  const milli = gpu.milli ?? 0;
  let best = -1;
  let bestFree = gpuMilliPerDevice + 1;
  for (let d = 0; d < devices; d++) {
    const free = index.gpuFree(slot, d);
    if (free >= milli && free < bestFree) {
      best = d;
      bestFree = free;
    }
  }
  return best < 0 ? null : [{ device: best, milli }];
}

/** Anti-affinity: the node holds fewer than `maxPerNode` sandboxes of the group. */
export function antiAffinityHolds(req: CompiledRequest, slot: number): boolean {
  const aa = req.antiAffinity;
  return aa === undefined || (req.antiAffinityCounts?.get(slot) ?? 0) < aa.maxPerNode;
}

/**
 * Spread: placing on this node keeps the group's count in the node's domain within `maxSkew` of the least
 * loaded eligible domain. A node without the spread label is not eligible.
 */
export function spreadHolds(index: IndexReader, req: CompiledRequest, slot: number): boolean {
  const sp = req.spread;
  if (sp === undefined) return true;
  // A node's labels are its class's: the value id comes from the spread's domain index (request.ts).
  const v = sp.valueOfClass[index.classOf(slot)];
  if (v !== undefined) return v >= 0 && sp.valueHolds[v] === 1;
  const value = labelValue(index.meta(slot).spec.labels, sp.label);
  if (value === undefined) return false;
  return (sp.counts.get(value) ?? 0) + 1 - sp.minCount <= sp.maxSkew;
}

/** Resources and devices: everything fits in what is free now. */
export function resourcesFit(index: IndexReader, req: CompiledRequest, slot: number): boolean {
  if (req.cpu > index.freeCpu(slot) || req.memory > index.freeMem(slot) || req.disk > index.freeDisk(slot)) {
    return false;
  }
  return req.gpu === undefined || pickGpuDevices(index, slot, req.gpu) !== null;
}

/** The whole chain for one node; the fast placer's per-candidate check. */
export function feasible(index: IndexReader, req: CompiledRequest, slot: number): boolean {
  return (
    classVerdict(index, req, index.classOf(slot)) === verdictPass &&
    resourcesFit(index, req, slot) &&
    antiAffinityHolds(req, slot) &&
    spreadHolds(index, req, slot)
  );
}
