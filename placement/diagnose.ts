/**
 * Why a request fits nowhere. Runs only on rejection: it visits every node once and counts, per node, the
 * first stage it fails in the order state → constraint → anti-affinity → spread → resources, so that
 * `shortOf` describes exactly the nodes that passed everything but resources. Cost O(nodes) per rejection.
 */
import type { IndexReader } from './cluster-index.js';
import {
  antiAffinityHolds,
  classVerdict,
  describeConstraint,
  pickGpuDevices,
  spreadHolds,
  verdictConstraint,
  verdictGpuModel,
  verdictState,
} from './stages/feasibility.js';
import type { CompiledRequest } from './stages/request.js';
import type { FilterCounts, Rejection, ResourceName } from './types.js';
import { gpuMilliPerDevice } from './validate.js';

/** What the node lacks for the request, per resource (only the short ones). */
export function shortfallOf(
  index: IndexReader,
  req: CompiledRequest,
  slot: number,
): Partial<Record<ResourceName, number>> {
  const out: Partial<Record<ResourceName, number>> = {};
  if (req.cpu > index.freeCpu(slot)) out.cpu = req.cpu - index.freeCpu(slot);
  if (req.memory > index.freeMem(slot)) out.memory = req.memory - index.freeMem(slot);
  if (req.disk > index.freeDisk(slot)) out.disk = req.disk - index.freeDisk(slot);
  if (req.gpu !== undefined && pickGpuDevices(index, slot, req.gpu) === null) {
    let whole = 0;
    let maxFree = 0;
    for (let d = 0; d < index.gpuCount(slot); d++) {
      const f = index.gpuFree(slot, d);
      if (f === gpuMilliPerDevice) whole++;
      maxFree = Math.max(maxFree, f);
    }
    out.gpu =
      req.gpu.count !== undefined
        ? (req.gpu.count - whole) * gpuMilliPerDevice
        : (req.gpu.milli ?? 0) - maxFree;
  }
  return out;
}

function distance(req: CompiledRequest, short: Partial<Record<ResourceName, number>>): number {
  // Shortfall as a fraction of what was asked, summed: 0 means it fits.
  const part = (asked: number, s: number | undefined): number =>
    s === undefined ? 0 : s / Math.max(1, asked);
  const gpuAsked =
    req.gpu === undefined ? 0 : (req.gpu.count ?? 0) * gpuMilliPerDevice + (req.gpu.milli ?? 0);
  return (
    part(req.cpu, short.cpu) +
    part(req.memory, short.memory) +
    part(req.disk, short.disk) +
    part(gpuAsked, short.gpu)
  );
}

/** Builds the rejection for a request no node can take. */
export function diagnose(index: IndexReader, req: CompiledRequest): Rejection {
  const filtered: FilterCounts = { state: 0, constraint: 0, antiAffinity: 0, spread: 0, resources: 0 };
  const shortOf: Record<ResourceName, number> = { cpu: 0, memory: 0, disk: 0, gpu: 0 };
  const constraintFails = new Map<string, number>();
  let closest: { slot: number; d: number; short: Partial<Record<ResourceName, number>> } | undefined;
  let evaluated = 0;
  const failConstraint = (what: string): void => {
    filtered.constraint++;
    constraintFails.set(what, (constraintFails.get(what) ?? 0) + 1);
  };
  const pinnedName = req.req.pinnedNode;
  for (const slot of index.slots()) {
    evaluated++;
    const verdict = classVerdict(index, req, index.classOf(slot));
    if (verdict === verdictState) filtered.state++;
    else if (pinnedName !== undefined && slot !== req.pinnedSlot)
      failConstraint(`pinned to node ${pinnedName}`);
    else if (verdict === verdictGpuModel)
      failConstraint(req.gpu?.model === undefined ? 'has GPUs' : `gpu model = ${req.gpu.model}`);
    else if (verdict >= verdictConstraint) {
      failConstraint(
        describeConstraint(req.constraints[verdict - verdictConstraint] ?? { label: '?', op: 'exists' }),
      );
    } else if (!antiAffinityHolds(req, slot)) filtered.antiAffinity++;
    else if (!spreadHolds(index, req, slot)) filtered.spread++;
    else {
      const short = shortfallOf(index, req, slot);
      const keys = Object.keys(short) as ResourceName[];
      if (keys.length === 0) continue; // Feasible: only reached if a caller diagnoses a placeable request.
      filtered.resources++;
      for (const k of keys) shortOf[k]++;
      const d = distance(req, short);
      if (closest === undefined || d < closest.d) closest = { slot, d, short };
    }
  }
  if (pinnedName !== undefined && (req.pinnedSlot === undefined || req.pinnedSlot < 0)) {
    constraintFails.set(`pinned node ${pinnedName} exists`, evaluated);
  }
  const code: Rejection['code'] =
    evaluated === 0
      ? 'no-nodes'
      : filtered.resources > 0
        ? 'resources'
        : filtered.spread > 0
          ? 'spread'
          : filtered.antiAffinity > 0
            ? 'anti-affinity'
            : filtered.constraint > 0
              ? 'constraint'
              : 'state';
  let topConstraint: string | undefined;
  let topCount = -1;
  for (const [what, n] of constraintFails) {
    if (n > topCount) {
      topConstraint = what;
      topCount = n;
    }
  }
  const closestOut =
    closest === undefined ? undefined : { nodeId: index.nodeId(closest.slot), shortfall: closest.short };
  const rejection: Rejection = {
    requestId: req.req.id,
    code,
    message: describe(code, evaluated, filtered, shortOf, closestOut, topConstraint),
    nodesEvaluated: evaluated,
    filtered,
    shortOf,
    ...(closestOut === undefined ? {} : { closest: closestOut }),
    ...(topConstraint === undefined ? {} : { constraint: topConstraint }),
  };
  return rejection;
}

const units: Readonly<Record<ResourceName, string>> = {
  cpu: 'millicores',
  memory: 'MiB',
  disk: 'MiB',
  gpu: 'milli-GPU',
};

function describe(
  code: Rejection['code'],
  evaluated: number,
  f: FilterCounts,
  shortOf: Record<ResourceName, number>,
  closest: Rejection['closest'],
  constraint: string | undefined,
): string {
  if (code === 'no-nodes') return 'no nodes are registered';
  const parts: string[] = [];
  if (f.resources > 0) {
    const short = (Object.keys(shortOf) as ResourceName[])
      .filter((k) => shortOf[k] > 0)
      .map((k) => `${k} on ${shortOf[k]}`)
      .join(', ');
    let s = `${f.resources} node(s) short of resources (${short})`;
    if (closest !== undefined) {
      const lacks = (Object.entries(closest.shortfall) as [ResourceName, number][])
        .map(([k, v]) => `${v} ${units[k]} ${k}`)
        .join(' and ');
      s += `; closest is ${closest.nodeId}, lacking ${lacks}`;
    }
    parts.push(s);
  }
  if (f.spread > 0) parts.push(`${f.spread} would break the spread's max skew`);
  if (f.antiAffinity > 0) parts.push(`${f.antiAffinity} at the anti-affinity limit`);
  if (f.constraint > 0)
    parts.push(`${f.constraint} ruled out by constraints (most often: ${constraint ?? '?'})`);
  if (f.state > 0) parts.push(`${f.state} not ready`);
  return `no node of ${evaluated} fits: ${parts.join('; ')}`;
}
