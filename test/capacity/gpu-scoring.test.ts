/**
 * Resource-complete scorers and FGD (placement/stages/score-gpu.ts, placement/fgd.ts), checked on clusters
 * small enough to know the right node by hand, through planBatch itself.
 */
import { describe, expect, it } from 'vitest';
import {
  ClusterIndex,
  fgdScorer,
  gpuBestFit,
  type NodeSpec,
  type PlacementRequest,
  planBatch,
} from '../../placement/index.js';
import { ValidationError } from '../../src/lib/errors.js';

const gpuNode = (id: string, cpu = 32_000, gpus = 4): NodeSpec => ({
  id,
  capacity: { cpu, memory: 131_072, disk: 100_000 },
  gpu: { model: 'T4', count: gpus },
  labels: {},
  state: 'ready',
});
const cpuNode = (id: string): NodeSpec => ({
  id,
  capacity: { cpu: 32_000, memory: 131_072, disk: 100_000 },
  labels: {},
  state: 'ready',
});
const req = (id: string, cpu: number, gpu?: PlacementRequest['gpu']): PlacementRequest => ({
  id,
  tenant: 't',
  resources: { cpu, memory: 4096, disk: 0 },
  ...(gpu === undefined ? {} : { gpu }),
});

describe('gpu scoring', () => {
  it('gpu scoring - gpu-bestfit puts a GPU share on the node whose device it fills most tightly; FGD avoids leaving a share no task of the mix can use', () => {
    // Node a has a device with 600 milli free (a 400 share placed first); node b is untouched.
    let index = ClusterIndex.of([gpuNode('a', 16_000), gpuNode('b', 32_000)]);
    index = planBatch(index, [{ ...req('first', 1000, { milli: 400 }), pinnedNode: 'a' }]).index;
    const share = req('share', 1000, { milli: 500 });
    expect(planBatch(index, [share], { binpackScorer: gpuBestFit }).placements[0]?.nodeId).toBe('a');
    // On a, the share would leave 100 milli on its device, which no 500-milli task of the mix can use (a
    // fragment); on b it leaves 500, which one can. FGD's expected fragmentation grows on a, not on b.
    const mix = [{ cpu: 1000, memory: 4096, gpu: { milli: 500 }, weight: 1 }];
    expect(planBatch(index, [share], { binpackScorer: fgdScorer(mix) }).placements[0]?.nodeId).toBe('b');
  });

  it('gpu scoring - FGD keeps CPU-only work off GPU nodes when the workload needs their GPUs', () => {
    const index = ClusterIndex.of([gpuNode('gpu-0', 16_000, 2), cpuNode('cpu-0')]);
    const mix = [
      { cpu: 12_000, memory: 4096, gpu: { count: 1 }, weight: 3 },
      { cpu: 8000, memory: 4096, weight: 1 },
    ];
    // A CPU task taking 8 of the GPU node's 16 cores would leave room for no 12-core GPU task: FGD sees its
    // GPUs turn into fragments and chooses the CPU node.
    expect(
      planBatch(index, [req('cpu-task', 8000)], { binpackScorer: fgdScorer(mix) }).placements[0]?.nodeId,
    ).toBe('cpu-0');
    expect(
      planBatch(index, [req('cpu-task', 8000)], { binpackScorer: 'dominant' }).placements[0]?.nodeId,
    ).toBe('gpu-0');
  });

  it('gpu scoring - an unknown scorer name is still refused, a scorer object is accepted', () => {
    const index = ClusterIndex.of([gpuNode('a')]);
    expect(() => planBatch(index, [req('x', 1)], { binpackScorer: 'bogus' as never })).toThrow(
      ValidationError,
    );
    expect(planBatch(index, [req('x', 1)], { binpackScorer: gpuBestFit }).placements).toHaveLength(1);
  });
});
