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
  const free = { cpu: 0, memory: 0, disk: 0 };
  const stranded = { cpu: 0, memory: 0, disk: 0 };
  let hostable = 0;
  for (const slot of index.slots()) {
    if (!index.isReady(slot)) continue;
    const k = copiesOn(index, slot, shape);
    hostable += k;
    const fc = index.freeCpu(slot);
    const fm = index.freeMem(slot);
    const fd = index.freeDisk(slot);
    free.cpu += fc;
    free.memory += fm;
    free.disk += fd;
    stranded.cpu += fc - k * shape.resources.cpu;
    stranded.memory += fm - k * shape.resources.memory;
    stranded.disk += fd - k * shape.resources.disk;
  }
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
