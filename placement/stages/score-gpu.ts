/**
 * Stage 2a′ — resource-complete bin-pack scorers. The scorers of score-binpack.ts rank nodes by cpu, memory
 * and disk only; a GPU request is filtered by devices but never ranked by them, so a GPU node is chosen for
 * its CPU fit and fragments its GPUs. These scorers weigh every resource the request asks for, GPU devices
 * and fractional shares included, each as a share of the node's capacity:
 *
 * - `gpu-bestfit`: best fit over the requested resources — one minus the mean share left free after
 *   placing, over the resources the request asks for (cpu, memory, disk when asked, GPU when asked), so the
 *   node the request fills most tightly in every dimension wins. On a GPU node a CPU-only request also counts
 *   the GPUs it would leave stranded as "left free", which keeps GPU nodes for GPU work.
 * - `gpu-dot`: alignment (Tetris) over the same dimensions, GPU included: the cosine between the request's
 *   demand and the node's free capacity, both as fractions of the node's capacity.
 *
 * A scorer here is an object (`NodeScorer`) rather than a name, so a policy that needs the workload (FGD,
 * fgd.ts) can carry it; PlanOptions.binpackScorer takes either. Scores are in [0, 1], higher is better.
 */
import type { IndexReader } from '../cluster-index.js';
import { gpuMilliPerDevice } from '../validate.js';
import type { CompiledRequest } from './request.js';

export interface NodeScorer {
  /** For reports and errors. */
  readonly name: string;
  /** The node's score for the request, in [0, 1]; called only for feasible nodes. */
  score(index: IndexReader, req: CompiledRequest, slot: number): number;
}

export function isNodeScorer(v: unknown): v is NodeScorer {
  return typeof v === 'object' && v !== null && typeof (v as NodeScorer).score === 'function';
}

/** The GPU milli a request takes: whole devices × 1000, or its share of one. */
export function gpuAskedMilli(req: CompiledRequest): number {
  const g = req.gpu;
  return g === undefined ? 0 : (g.count ?? 0) * gpuMilliPerDevice + (g.milli ?? 0);
}

/** Free GPU milli on a node, over all its devices. */
export function gpuFreeMilli(index: IndexReader, slot: number): number {
  let free = 0;
  for (let d = 0; d < index.gpuCount(slot); d++) free += index.gpuFree(slot, d);
  return free;
}

export const gpuBestFit: NodeScorer = Object.freeze({
  name: 'gpu-bestfit',
  score(index: IndexReader, req: CompiledRequest, slot: number): number {
    let leftover = 0;
    let n = 0;
    const add = (free: number, asked: number, cap: number): void => {
      leftover += cap <= 0 ? 0 : (free - asked) / cap;
      n += 1;
    };
    add(index.freeCpu(slot), req.cpu, index.capCpu(slot));
    add(index.freeMem(slot), req.memory, index.capMem(slot));
    if (req.disk > 0) add(index.freeDisk(slot), req.disk, index.capDisk(slot));
    const gpuCap = index.gpuCount(slot) * gpuMilliPerDevice;
    if (gpuCap > 0) add(gpuFreeMilli(index, slot), gpuAskedMilli(req), gpuCap);
    return n === 0 ? 0 : 1 - leftover / n;
  },
});

export const gpuDot: NodeScorer = Object.freeze({
  name: 'gpu-dot',
  score(index: IndexReader, req: CompiledRequest, slot: number): number {
    let dot = 0;
    let dd = 0;
    let ff = 0;
    const add = (asked: number, free: number, cap: number): void => {
      if (cap <= 0) return;
      const d = asked / cap;
      const f = free / cap;
      dot += d * f;
      dd += d * d;
      ff += f * f;
    };
    add(req.cpu, index.freeCpu(slot), index.capCpu(slot));
    add(req.memory, index.freeMem(slot), index.capMem(slot));
    add(req.disk, index.freeDisk(slot), index.capDisk(slot));
    add(gpuAskedMilli(req), gpuFreeMilli(index, slot), index.gpuCount(slot) * gpuMilliPerDevice);
    const norm = Math.sqrt(dd) * Math.sqrt(ff);
    return norm === 0 ? 0 : dot / norm;
  },
});
