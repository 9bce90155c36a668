/**
 * Stage 2b — spread scoring (least loaded): the mean fraction of the node's capacity left free after placing,
 * in [0, 1]; the emptiest node wins.
 */
import type { IndexReader } from '../cluster-index.js';
import type { CompiledRequest } from './request.js';

export function leastLoaded(index: IndexReader, req: CompiledRequest, slot: number): number {
  let sum = 0;
  let n = 0;
  const capCpu = index.capCpu(slot);
  const capMem = index.capMem(slot);
  const capDisk = index.capDisk(slot);
  if (capCpu > 0) {
    sum += (index.freeCpu(slot) - req.cpu) / capCpu;
    n++;
  }
  if (capMem > 0) {
    sum += (index.freeMem(slot) - req.memory) / capMem;
    n++;
  }
  if (capDisk > 0) {
    sum += (index.freeDisk(slot) - req.disk) / capDisk;
    n++;
  }
  return n === 0 ? 0 : sum / n;
}
