import { describe, expect, it } from 'vitest';
import { ClusterIndex, fragmentation } from '../../placement/index.js';

describe('placement/fragmentation', () => {
  it('placement/fragmentation - counts the free capacity no copy of the shape can use', () => {
    // Two ready nodes and a down one. Shape 1000m/1024MiB: node a hosts 2 copies and strands 500m and 0 MiB;
    // node b has the cpu but only 512 MiB, so it hosts none and strands all its free capacity.
    const index = ClusterIndex.of([
      { id: 'a', capacity: { cpu: 2500, memory: 2048, disk: 10 }, labels: {}, state: 'ready' },
      { id: 'b', capacity: { cpu: 4000, memory: 512, disk: 10 }, labels: {}, state: 'ready' },
      { id: 'c', capacity: { cpu: 9000, memory: 9000, disk: 10 }, labels: {}, state: 'down' },
    ]);
    const f = fragmentation(index, { resources: { cpu: 1000, memory: 1024, disk: 0 } });
    expect(f.hostable).toBe(2);
    expect(f.free).toEqual({ cpu: 6500, memory: 2560, disk: 20 });
    expect(f.stranded).toEqual({ cpu: 4500, memory: 512, disk: 20 });
    expect(f.strandedFraction).toBeCloseTo((4500 / 6500 + 512 / 2560 + 1) / 3, 12);
  });
});
