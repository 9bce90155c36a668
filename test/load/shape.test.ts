import { describe, expect, it } from 'vitest';
import { nodeShapeFor, sandboxResources, simBootsConcurrentFor } from '../../src/load/run.js';
import { bootsConcurrentLimit } from '../../src/worker/node-worker.js';

describe('load shape', () => {
  it('load shape - a simulated node boots as many sandboxes at once as it has room for', () => {
    // Bin-packing sends the run's in-flight creates to the fullest nodes: with 2 boots a node their queues
    // set the pace (96/s at 100,000). Each node must boot what it holds.
    for (const [sandboxes, nodes] of [
      [100_000, 1_000],
      [30_000, 1_000],
      [10_000, 1_000],
      [2_000, 20],
    ] as const) {
      const shape = nodeShapeFor(sandboxes, nodes);
      const holds = Math.floor(shape.cpu / sandboxResources.cpu);
      expect(holds * nodes).toBeGreaterThanOrEqual(sandboxes);
      expect(simBootsConcurrentFor(shape)).toBe(holds);
    }
    expect(simBootsConcurrentFor({ cpu: 1, memory: 1, disk: 1 })).toBe(2);
    // 100,000 sandboxes on 4 nodes (the SIGINT test): within what `trellis worker` accepts.
    expect(simBootsConcurrentFor(nodeShapeFor(100_000, 4))).toBe(bootsConcurrentLimit);
  });
});
