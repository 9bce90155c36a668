/**
 * FGD — fragmentation gradient descent (Weng et al., "Beware of Fragmentation: Scheduling GPU-Sharing
 * Workloads with Fragmentation Gradient Descent", USENIX ATC '23), as a placement scorer.
 *
 * The fragmentation of a node for one task class m is the free GPU capacity (milli-GPU) m could not use
 * there: all of it when m cannot run on the node at all (too little cpu or memory, wrong GPU model, not
 * enough whole devices), otherwise the free share of each device too small for m (a device with less free
 * than m's share, or any partly used device when m asks for whole GPUs). A CPU-only class uses no GPU, so
 * every free GPU share counts for it. The node's expected fragmentation is the sum over the workload's classes
 * weighted by their popularity. FGD places a request on the node whose expected fragmentation grows least
 * when the request lands there (the device the request would take is the one placement picks,
 * stages/feasibility.ts pickGpuDevices).
 *
 * The score maps the growth Δ (milli-GPU) to (0, 1) with a logistic curve, decreasing in Δ, so it is
 * comparable across nodes; a small best-fit term breaks ties (nodes without GPUs all have Δ = 0).
 * Pure: the workload mix comes in as data.
 */
import type { IndexReader } from './cluster-index.js';
import { pickGpuDevices } from './stages/feasibility.js';
import type { CompiledRequest } from './stages/request.js';
import { gpuBestFit, type NodeScorer } from './stages/score-gpu.js';
import type { GpuRequest } from './types.js';
import { gpuMilliPerDevice } from './validate.js';

/** One class of the workload: a request shape and its share of arrivals. */
export interface TaskClass {
  readonly cpu: number;
  readonly memory: number;
  readonly gpu?: GpuRequest;
  /** Popularity; the classes' popularities are normalised to sum to 1. */
  readonly weight: number;
}

/** Classes one FGD scorer weighs at most (the most popular are kept). */
export const fgdClassesMax = 64;
/** Weight of the best-fit tie-break in the score. */
export const fgdTieBreakWeight = 0.001;
/** GPU devices per node FGD reasons about (the index holds at most this many per node). */
const devicesMax = 64;

interface Compiled {
  readonly cpu: number;
  readonly memory: number;
  readonly count: number;
  readonly milli: number;
  readonly model: string | undefined;
  readonly p: number;
}

/** Expected fragmentation (milli-GPU) of a node with the given free cpu, memory and per-device free GPU. */
function expectedFragmentation(
  classes: readonly Compiled[],
  cpu: number,
  mem: number,
  free: Int32Array,
  devices: number,
  model: string,
): number {
  let total = 0;
  let whole = 0;
  for (let d = 0; d < devices; d++) {
    const f = free[d] as number;
    total += f;
    if (f === gpuMilliPerDevice) whole += 1;
  }
  if (total === 0) return 0;
  let sum = 0;
  for (const c of classes) {
    let frag: number;
    const gpuTask = c.count > 0 || c.milli > 0;
    if (!gpuTask || c.cpu > cpu || c.memory > mem || (c.model !== undefined && c.model !== model))
      frag = total;
    else if (c.count > 0) {
      // Whole GPUs: partly used devices are fragments; with too few whole devices, everything is.
      frag = whole < c.count ? total : total - whole * gpuMilliPerDevice;
    } else {
      frag = 0;
      let fits = false;
      for (let d = 0; d < devices; d++) {
        const f = free[d] as number;
        if (f < c.milli) frag += f;
        else fits = true;
      }
      if (!fits) frag = total;
    }
    sum += c.p * frag;
  }
  return sum;
}

export function fgdScorer(mix: readonly TaskClass[]): NodeScorer {
  const kept = [...mix]
    .filter((c) => c.weight > 0)
    .sort((a, b) => b.weight - a.weight)
    .slice(0, fgdClassesMax);
  const total = kept.reduce((s, c) => s + c.weight, 0);
  const classes: Compiled[] = kept.map((c) => ({
    cpu: c.cpu,
    memory: c.memory,
    count: c.gpu?.count ?? 0,
    milli: c.gpu?.milli ?? 0,
    model: c.gpu?.model,
    p: total === 0 ? 0 : c.weight / total,
  }));
  const before = new Int32Array(devicesMax);
  const after = new Int32Array(devicesMax);
  return Object.freeze({
    name: 'fgd',
    score(index: IndexReader, req: CompiledRequest, slot: number): number {
      const devices = Math.min(index.gpuCount(slot), devicesMax);
      const tie = fgdTieBreakWeight * gpuBestFit.score(index, req, slot);
      if (devices === 0) return 0.5 * (1 - fgdTieBreakWeight) + tie;
      for (let d = 0; d < devices; d++) {
        before[d] = index.gpuFree(slot, d);
        after[d] = before[d] as number;
      }
      if (req.gpu !== undefined) {
        for (const g of pickGpuDevices(index, slot, req.gpu) ?? [])
          after[g.device] = (after[g.device] as number) - g.milli;
      }
      const model = index.meta(slot).spec.gpu?.model ?? '';
      const cpu = index.freeCpu(slot);
      const mem = index.freeMem(slot);
      const delta =
        expectedFragmentation(classes, cpu - req.cpu, mem - req.memory, after, devices, model) -
        expectedFragmentation(classes, cpu, mem, before, devices, model);
      return (1 - fgdTieBreakWeight) / (1 + Math.exp(delta / gpuMilliPerDevice)) + tie;
    },
  });
}
