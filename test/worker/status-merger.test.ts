import { describe, expect, it } from 'vitest';
import type { StatusItem } from '../../scheduler/api.js';
import { VirtualTimers } from '../../src/lib/timers.js';
import { StatusMerger } from '../../src/worker/status-merger.js';

const item = (node: string, i: number): StatusItem => ({
  sandboxId: `s-${node}-${i}`,
  state: 'running',
  nodeId: node,
});

describe('status merger', () => {
  it('status merger - the batches of many nodes within a window go out as one call, each told its outcome', async () => {
    const timers = new VirtualTimers();
    const calls: StatusItem[][] = [];
    let fail = false;
    const m = new StatusMerger({
      timers,
      windowMs: 5,
      itemsMax: 10,
      send: async (items) => {
        calls.push(items);
        if (fail) throw new Error('no leader');
      },
    });
    const a = m.add([item('n1', 1), item('n1', 2)]);
    const b = m.add([item('n2', 1)]);
    expect(calls.length).toBe(0);
    await timers.advance(5);
    await Promise.all([a, b]);
    expect(calls).toEqual([[item('n1', 1), item('n1', 2), item('n2', 1)]]);
    // A batch that would overflow the call's bound sends the open merge first; nothing is split or lost.
    const c = m.add(Array.from({ length: 6 }, (_, i) => item('n3', i)));
    const d = m.add(Array.from({ length: 6 }, (_, i) => item('n4', i)));
    await c;
    expect(calls.length).toBe(2);
    fail = true;
    const refused = expect(d).rejects.toThrow('no leader');
    await timers.advance(5);
    await refused;
    expect(calls.map((x) => x.length)).toEqual([3, 6, 6]);
    expect(m.counters).toEqual({ calls: 3, batches: 4 });
  });
});
