import { describe, expect, it } from 'vitest';
import { SimNetwork } from '../../raft/transport/memory.js';
import { createRng } from '../../src/lib/prng.js';

interface Msg {
  readonly from: string;
  readonly to: string;
  readonly n: number;
}

function setup(seed: number) {
  const net = new SimNetwork<Msg>(createRng(seed), (m) => m, {
    dropRate: 0.1,
    duplicateRate: 0.1,
    delayTicksMin: 0,
    delayTicksMax: 5,
  });
  const got = new Map<string, number[]>();
  const unreachable: string[] = [];
  const ends = Object.fromEntries(
    ['a', 'b', 'c'].map((p) => {
      const t = net.endpoint(p);
      t.onMessage((m) => got.set(p, [...(got.get(p) ?? []), m.n]));
      t.onUnreachable((peer) => unreachable.push(`${p}>${peer}`));
      return [p, t];
    }),
  );
  return { net, got, unreachable, ends };
}

describe('raft/transport/memory', () => {
  it('raft/transport/memory - the same seed replays the same deliveries; faults really happen', () => {
    // Sends 500 messages a→b with drops, duplicates and delays; two runs from one seed deliver identically.
    const run = (seed: number): number[] => {
      const { net, got, ends } = setup(seed);
      for (let n = 0; n < 500; n++) ends.a?.send([{ from: 'a', to: 'b', n }]);
      for (let t = 0; t < 10; t++) net.tick();
      expect(net.stats.dropped).toBeGreaterThan(0);
      expect(net.stats.duplicated).toBeGreaterThan(0);
      return got.get('b') ?? [];
    };
    const first = run(42);
    expect(run(42)).toEqual(first);
    expect(run(43)).not.toEqual(first);
    // Delays reorder: the delivery order is not the send order.
    expect(first).not.toEqual([...first].sort((x, y) => x - y));
  });

  it('raft/transport/memory - partitions and cut links stop traffic and report the peer unreachable', () => {
    // a|bc partition: nothing crosses, both directions report; cut(b, c) is one-way; heal restores.
    const { net, got, unreachable, ends } = setup(1);
    net.setDefaults({ dropRate: 0, duplicateRate: 0, delayTicksMin: 0, delayTicksMax: 0 });
    net.partition([['a'], ['b', 'c']]);
    net.cut('b', 'c');
    ends.a?.send([{ from: 'a', to: 'b', n: 1 }]);
    ends.b?.send([{ from: 'b', to: 'c', n: 2 }]);
    ends.c?.send([{ from: 'c', to: 'b', n: 3 }]);
    net.tick();
    expect(got.get('b')).toEqual([3]);
    expect(got.get('c')).toBeUndefined();
    expect(unreachable).toEqual(['a>b', 'b>c']);
    net.heal();
    ends.a?.send([{ from: 'a', to: 'b', n: 4 }]);
    net.tick();
    expect(got.get('b')).toEqual([3, 4]);
  });

  it('raft/transport/memory - a clogged link holds messages until it clears', () => {
    // clog(a, b, 5): a message sent now arrives at tick 5, not before.
    const { net, got, ends } = setup(2);
    net.setDefaults({ dropRate: 0, duplicateRate: 0, delayTicksMin: 0, delayTicksMax: 0 });
    net.clog('a', 'b', 5);
    ends.a?.send([{ from: 'a', to: 'b', n: 9 }]);
    for (let t = 1; t < 5; t++) {
      net.tick();
      expect(got.get('b')).toBeUndefined();
    }
    net.tick();
    expect(got.get('b')).toEqual([9]);
  });
});
