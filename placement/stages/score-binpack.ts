/**
 * Stage 2a — bin-pack scoring (best fit). Two scorers, both in [0, 1], higher is better:
 *
 * - `dominant`: dominant-resource best fit. After placing, each resource leaves a fraction of the node's
 *   capacity free; the score is one minus the largest of those fractions, so the node the request fills most
 *   evenly and most completely wins.
 * - `dot`: alignment (Tetris, Grandl et al. 2014): the cosine between the request's demand and the node's free
 *   capacity, both as fractions of the node's capacity, so requests go where the free shape matches their own.
 *
 * `bench/placement.ts` compares them by the fragmentation measure; `dominant` left less stranded capacity
 * and is the default (docs/benchmarks.md).
 */
import type { IndexReader } from '../cluster-index.js';
import type { CompiledRequest } from './request.js';

export type BinpackScorer = 'dominant' | 'dot';

export function binpackDominant(index: IndexReader, req: CompiledRequest, slot: number): number {
  let worst = 0;
  const capCpu = index.capCpu(slot);
  const capMem = index.capMem(slot);
  const capDisk = index.capDisk(slot);
  if (capCpu > 0) worst = Math.max(worst, (index.freeCpu(slot) - req.cpu) / capCpu);
  if (capMem > 0) worst = Math.max(worst, (index.freeMem(slot) - req.memory) / capMem);
  if (capDisk > 0) worst = Math.max(worst, (index.freeDisk(slot) - req.disk) / capDisk);
  return 1 - worst;
}

export function binpackDot(index: IndexReader, req: CompiledRequest, slot: number): number {
  const capCpu = index.capCpu(slot) || 1;
  const capMem = index.capMem(slot) || 1;
  const capDisk = index.capDisk(slot) || 1;
  const dc = req.cpu / capCpu;
  const dm = req.memory / capMem;
  const dd = req.disk / capDisk;
  const fc = index.freeCpu(slot) / capCpu;
  const fm = index.freeMem(slot) / capMem;
  const fd = index.freeDisk(slot) / capDisk;
  const norm = Math.sqrt(dc * dc + dm * dm + dd * dd) * Math.sqrt(fc * fc + fm * fm + fd * fd);
  return norm === 0 ? 0 : (dc * fc + dm * fm + dd * fd) / norm;
}
