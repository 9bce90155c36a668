/**
 * Fragmentation: capacity that is free but cannot be used by a given reference shape. On each ready node, as
 * many copies of the shape as fit are packed; whatever is left over is stranded for that shape. A node that
 * cannot host even one copy strands all of its free capacity. Capacity simulation reports this, and the
 * bench compares bin-pack scorers by it.
 */
import type { IndexReader } from './cluster-index.js';
import type { GpuRequest, Resources } from './types.js';
import { gpuMilliPerDevice } from './validate.js';

export interface ReferenceShape {
  readonly resources: Resources;
  readonly gpu?: GpuRequest;
}

export interface Fragmentation {
  /** Free capacity over ready nodes. */
  readonly free: Resources;
  /** The part of `free` no copy of the shape can use. */
  readonly stranded: Resources;
  /** Stranded share of free capacity, averaged over the resources that have any free capacity; in [0, 1]. */
  readonly strandedFraction: number;
  /** How many more copies of the shape the cluster could host. */
  readonly hostable: number;
}

function copiesOn(index: IndexReader, slot: number, shape: ReferenceShape): number {
  const r = shape.resources;
  let k = Number.POSITIVE_INFINITY;
  if (r.cpu > 0) k = Math.min(k, Math.floor(index.freeCpu(slot) / r.cpu));
  if (r.memory > 0) k = Math.min(k, Math.floor(index.freeMem(slot) / r.memory));
  if (r.disk > 0) k = Math.min(k, Math.floor(index.freeDisk(slot) / r.disk));
  if (shape.gpu !== undefined) {
    let g = 0;
    for (let d = 0; d < index.gpuCount(slot); d++) {
      const f = index.gpuFree(slot, d);
      g +=
        shape.gpu.count !== undefined
          ? f === gpuMilliPerDevice
            ? 1
            : 0
          : Math.floor(f / (shape.gpu.milli ?? 1));
    }
    k = Math.min(k, shape.gpu.count !== undefined ? Math.floor(g / shape.gpu.count) : g);
  }
  return k === Number.POSITIVE_INFINITY ? 0 : k;
}

export function fragmentation(index: IndexReader, shape: ReferenceShape): Fragmentation {
  // Sums in locals, not object fields: a sum past the small-integer range (disk over 5,000 nodes) made a heap
  // number per addition to a field, 6% of a 200,000-event simulation's allocation.
  let freeCpu = 0;
  let freeMem = 0;
  let freeDisk = 0;
  let strandedCpu = 0;
  let strandedMem = 0;
  let strandedDisk = 0;
  let hostable = 0;
  const { cpu, memory, disk } = shape.resources;
  // An index loop, not the `slots()` generator: an iterator result per node was 14% of that allocation (the
  // simulator samples every node 200 times a run). `isLive` first: a free slot has no state.
  const slotCount = index.slotCount;
  for (let slot = 0; slot < slotCount; slot++) {
    if (!index.isLive(slot) || !index.isReady(slot)) continue;
    const k = copiesOn(index, slot, shape);
    hostable += k;
    const fc = index.freeCpu(slot);
    const fm = index.freeMem(slot);
    const fd = index.freeDisk(slot);
    freeCpu += fc;
    freeMem += fm;
    freeDisk += fd;
    strandedCpu += fc - k * cpu;
    strandedMem += fm - k * memory;
    strandedDisk += fd - k * disk;
  }
  const free = { cpu: freeCpu, memory: freeMem, disk: freeDisk };
  const stranded = { cpu: strandedCpu, memory: strandedMem, disk: strandedDisk };
  let sum = 0;
  let n = 0;
  for (const r of ['cpu', 'memory', 'disk'] as const) {
    if (free[r] > 0) {
      sum += stranded[r] / free[r];
      n++;
    }
  }
  return { free, stranded, strandedFraction: n === 0 ? 0 : sum / n, hostable };
}
