/**
 * metrics - utilization gauges from committed state (scheduler/pipeline/utilization.ts). A cluster index with a
 * GPU node and a plain node gets placements from the real planner; the per-node and cluster ratios the memory
 * sink then holds are checked against the allocations computed by hand, and a node leaving the ready set drops
 * out of the cluster figures.
 */
import { describe, expect, it } from 'vitest';
import { ClusterIndex, planBatch } from '../../placement/index.js';
import { ratio, recordUtilization } from '../../scheduler/pipeline/utilization.js';
import { MemoryMetrics, trellisMetrics } from '../../src/lib/metrics.js';

const nodes = [
  {
    id: 'g1',
    capacity: { cpu: 8_000, memory: 16_384, disk: 100_000 },
    gpu: { model: 'a100', count: 2 },
    labels: {},
    state: 'ready' as const,
  },
  { id: 'c1', capacity: { cpu: 4_000, memory: 8_192, disk: 50_000 }, labels: {}, state: 'ready' as const },
];

describe('metrics - utilization', () => {
  it('metrics - recordUtilization sets per-node and cluster ratios from the allocations', () => {
    const plan = planBatch(ClusterIndex.of(nodes), [
      { id: 's1', tenant: 't', resources: { cpu: 2_000, memory: 4_096, disk: 10_000 }, gpu: { count: 1 } },
      { id: 's2', tenant: 't', resources: { cpu: 1_000, memory: 1_024, disk: 5_000 } },
    ]);
    expect(plan.rejections).toEqual([]);
    const sink = new MemoryMetrics();
    recordUtilization(plan.index, trellisMetrics(sink));
    const node = (n: string, resource: string) =>
      sink.value('trellis_node_utilization_ratio', { node: n, resource });
    const cluster = (resource: string) => sink.value('trellis_cluster_utilization_ratio', { resource });
    const views = [...plan.index.nodes()];
    for (const v of views) {
      expect(node(v.id, 'cpu')).toBe(v.allocated.cpu / v.spec.capacity.cpu);
      expect(node(v.id, 'memory')).toBe(v.allocated.memory / v.spec.capacity.memory);
    }
    expect(node('g1', 'gpu')).toBe(0.5);
    expect(node('c1', 'gpu')).toBeUndefined();
    expect(cluster('cpu')).toBe(3_000 / 12_000);
    expect(cluster('memory')).toBe(5_120 / 24_576);
    expect(cluster('disk')).toBe(15_000 / 150_000);
    expect(cluster('gpu')).toBe(0.5);
  });

  it('metrics - ratio reads 0 for a resource of no capacity and stays within 0..1', () => {
    expect(ratio(5, 0)).toBe(0);
    expect(ratio(3, 4)).toBe(0.75);
    expect(ratio(9, 4)).toBe(1);
  });
});
