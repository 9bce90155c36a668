/**
 * Utilization gauges from committed state: the share of each node's capacity, and of the ready cluster's,
 * that placements hold, by resource. The leader sets them once per tick (not per apply: at 1,000 nodes a
 * pass costs a few thousand array reads, and a dashboard samples every few seconds anyway).
 *
 * Only the leader writes them, so the series of a replica that stopped leading keep their last values:
 * select on `trellis_raft_is_leader == 1` to see the current ones.
 */
import { type ClusterIndex, gpuMilliPerDevice } from '../../placement/index.js';
import { nodeSeriesMax, type TrellisMetrics } from '../../src/lib/metrics.js';

/** `used / capacity` in 0..1; a resource of capacity 0 reads 0 (nothing is held of nothing). */
export function ratio(used: number, capacity: number): number {
  return capacity <= 0 ? 0 : Math.min(1, Math.max(0, used / capacity));
}

/** Sets the per-node (up to `nodeSeriesMax` nodes) and cluster utilization gauges from `index`. */
export function recordUtilization(index: ClusterIndex, metrics: TrellisMetrics): void {
  const cap = index.readyCapacity;
  const used = index.readyAllocated;
  const cluster = metrics.clusterUtilization;
  cluster.set(ratio(used.cpu, cap.cpu), { resource: 'cpu' });
  cluster.set(ratio(used.memory, cap.memory), { resource: 'memory' });
  cluster.set(ratio(used.disk, cap.disk), { resource: 'disk' });
  let gpuCapMilli = 0;
  let gpuFreeMilli = 0;
  let series = 0;
  for (const slot of index.slots()) {
    const gpus = index.gpuCount(slot);
    let free = 0;
    for (let dev = 0; dev < gpus; dev++) free += index.gpuFree(slot, dev);
    if (index.isReady(slot)) {
      gpuCapMilli += gpus * gpuMilliPerDevice;
      gpuFreeMilli += free;
    }
    if (series >= nodeSeriesMax) continue;
    series++;
    const node = index.nodeId(slot);
    const g = metrics.nodeUtilization;
    g.set(ratio(index.capCpu(slot) - index.freeCpu(slot), index.capCpu(slot)), { node, resource: 'cpu' });
    g.set(ratio(index.capMem(slot) - index.freeMem(slot), index.capMem(slot)), { node, resource: 'memory' });
    g.set(ratio(index.capDisk(slot) - index.freeDisk(slot), index.capDisk(slot)), { node, resource: 'disk' });
    if (gpus > 0)
      g.set(ratio(gpus * gpuMilliPerDevice - free, gpus * gpuMilliPerDevice), { node, resource: 'gpu' });
  }
  cluster.set(ratio(gpuCapMilli - gpuFreeMilli, gpuCapMilli), { resource: 'gpu' });
}
