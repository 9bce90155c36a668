/**
 * Stage 2a — bin-pack scoring (best fit). Two scorers, both in [0, 1], higher is better:
 *
 * - `dominant`: dominant-resource best fit. The request's dominant resource on a node is the one it takes
 *   the largest share of; the score is one minus the fraction of that resource left free after placing, so
 *   the node the request fills most tightly where it matters most wins. (A first version scored the largest
 *   leftover over all resources; a resource nearly nobody asks for, such as disk, then masked the others.)
 * - `dot`: alignment (Tetris, Grandl et al. 2014): the cosine between the request's demand and the node's free
 *   capacity, both as fractions of the node's capacity, so requests go where the free shape matches their own.
 *
 * `bench/placement.ts` compares them (and `blend`, their mean) by the fragmentation measure: after 3,000,
 * 6,000, 9,000 and 12,000 sandboxes on 1,000 nodes, `dot` stranded the least free capacity at every fill
 * level (56.2% mean against 57.5% for `dominant`) and leaves room for the most large sandboxes, so it is the
 * default (docs/benchmarks.md). `dominant` remains available for operators who want strict tightest-fit.
 */
import type { IndexReader } from '../cluster-index.js';
import type { CompiledRequest } from './request.js';
import type { NodeScorer } from './score-gpu.js';

export const binpackScorers = ['dominant', 'dot', 'blend'] as const;
/** A scorer by name, or a resource-complete scorer object (score-gpu.ts, ../fgd.ts). */
export type BinpackScorer = (typeof binpackScorers)[number] | NodeScorer;

/**
 * A node's numbers as the named scorers read them: capacity and free amount per resource. The scorers are pure
 * functions of these and the request's demand, so a run of identical requests (stack.ts, placeRun) can score a
 * node as it will be after m more placements without writing them first.
 */
export interface NodeNumbers {
  capCpu: number;
  capMem: number;
  capDisk: number;
  freeCpu: number;
  freeMem: number;
  freeDisk: number;
}

/** Reads `slot`'s numbers into `out` (reused by the caller: no object per score). */
export function nodeNumbers(index: IndexReader, slot: number, out: NodeNumbers): NodeNumbers {
  out.capCpu = index.capCpu(slot);
  out.capMem = index.capMem(slot);
  out.capDisk = index.capDisk(slot);
  out.freeCpu = index.freeCpu(slot);
  out.freeMem = index.freeMem(slot);
  out.freeDisk = index.freeDisk(slot);
  return out;
}

const scratch: NodeNumbers = { capCpu: 0, capMem: 0, capDisk: 0, freeCpu: 0, freeMem: 0, freeDisk: 0 };

export function binpackDominant(index: IndexReader, req: CompiledRequest, slot: number): number {
  return dominantOf(req, nodeNumbers(index, slot, scratch));
}

export function binpackDot(index: IndexReader, req: CompiledRequest, slot: number): number {
  return dotOf(req, nodeNumbers(index, slot, scratch));
}

/**
 * The named scorers' values written to `to[toAt]` rather than returned: a double returned through a call V8 does
 * not inline is boxed, and the placer scores every candidate (see normalize.ts, strategyScoreInto).
 */
export function binpackInto(
  name: (typeof binpackScorers)[number],
  index: IndexReader,
  req: CompiledRequest,
  slot: number,
  to: Float64Array,
  toAt: number,
): void {
  const n = nodeNumbers(index, slot, scratch);
  if (name === 'dot') to[toAt] = dotOf(req, n);
  else if (name === 'dominant') to[toAt] = dominantOf(req, n);
  else to[toAt] = 0.5 * dominantOf(req, n) + 0.5 * dotOf(req, n);
}

/** The mean of the two: fit tightly where the request is dominant, and go where the free shape matches. */
export function binpackBlend(index: IndexReader, req: CompiledRequest, slot: number): number {
  const n = nodeNumbers(index, slot, scratch);
  return 0.5 * dominantOf(req, n) + 0.5 * dotOf(req, n);
}

/** A named scorer's value for a node with numbers `n`. */
export function binpackOf(name: (typeof binpackScorers)[number], req: Demand, n: NodeNumbers): number {
  if (name === 'dominant') return dominantOf(req, n);
  if (name === 'dot') return dotOf(req, n);
  return 0.5 * dominantOf(req, n) + 0.5 * dotOf(req, n);
}

/** What the scorers read of a request. */
export interface Demand {
  readonly cpu: number;
  readonly memory: number;
  readonly disk: number;
}

function dominantOf(req: Demand, n: NodeNumbers): number {
  const capCpu = n.capCpu || 1;
  const capMem = n.capMem || 1;
  const capDisk = n.capDisk || 1;
  // Ties between resources go to cpu, then memory, so the choice is deterministic.
  let share = req.cpu / capCpu;
  let leftover = (n.freeCpu - req.cpu) / capCpu;
  if (req.memory / capMem > share) {
    share = req.memory / capMem;
    leftover = (n.freeMem - req.memory) / capMem;
  }
  if (req.disk / capDisk > share) leftover = (n.freeDisk - req.disk) / capDisk;
  return 1 - leftover;
}

function dotOf(req: Demand, n: NodeNumbers): number {
  const capCpu = n.capCpu || 1;
  const capMem = n.capMem || 1;
  const capDisk = n.capDisk || 1;
  const dc = req.cpu / capCpu;
  const dm = req.memory / capMem;
  const dd = req.disk / capDisk;
  const fc = n.freeCpu / capCpu;
  const fm = n.freeMem / capMem;
  const fd = n.freeDisk / capDisk;
  const norm = Math.sqrt(dc * dc + dm * dm + dd * dd) * Math.sqrt(fc * fc + fm * fm + fd * fd);
  return norm === 0 ? 0 : (dc * fc + dm * fm + dd * fd) / norm;
}
