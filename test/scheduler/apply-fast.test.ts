import { OrderedMap } from 'immutable';
import { describe, expect, it } from 'vitest';
import { ClusterIndex, type NodeSpec, OverCommitError, ReleaseMismatchError } from '../../placement/index.js';
import { SlotTable } from '../../scheduler/core/slot-table.js';
import { oweCleanupIn, withCleanup } from '../../scheduler/core/state.js';
import { createRng } from '../../src/lib/prng.js';

describe('scheduler state - fast apply paths keep the rules of the slow ones', () => {
  it('scheduler state - cleanups in a slot table keep exactly what the OrderedMap rule keeps', () => {
    // The state keeps its cleanups in a SlotTable (O(1) eviction of the oldest); the kept debts and their
    // order must be those of withCleanup, the OrderedMap rule older replicas and snapshots followed.
    for (const seed of [1, 2, 3]) {
      const rng = createRng(seed);
      const max = 16;
      let model = OrderedMap<string, string>();
      let table = SlotTable.empty<string>();
      for (let step = 0; step < 300; step++) {
        const draft = table.edit();
        for (let i = rng.int(1, 6); i > 0; i--) {
          const id = `s${rng.int(0, 60)}`;
          const node = `n${rng.int(0, 4)}`;
          model = withCleanup(model, id, node, max);
          oweCleanupIn(draft, id, node, max);
        }
        table = draft.publish();
        expect(JSON.stringify([...table]), `seed ${seed}, step ${step}`).toBe(JSON.stringify([...model]));
      }
    }
  });

  it('scheduler state - allocating and releasing by slot refuse what allocate and release refuse, changing nothing', () => {
    // The apply path writes the index by slot (one id lookup per item); the refusals must be the same.
    const spec: NodeSpec = {
      id: 'n1',
      capacity: { cpu: 1000, memory: 1000, disk: 1000 },
      labels: {},
      state: 'ready',
      gpu: { model: 'a100', count: 1 },
    };
    const b = ClusterIndex.of([spec]).edit();
    const slot = b.slotOf('n1') as number;
    b.allocateAt(slot, {
      resources: { cpu: 500, memory: 500, disk: 0 },
      gpuDevices: [{ device: 0, milli: 300 }],
    });
    const before = JSON.stringify(b.view(slot));
    expect(() => b.allocateAt(slot, { resources: { cpu: 501, memory: 1, disk: 1 } })).toThrow(
      OverCommitError,
    );
    expect(() =>
      b.allocateAt(slot, {
        resources: { cpu: 1, memory: 1, disk: 1 },
        gpuDevices: [{ device: 0, milli: 701 }],
      }),
    ).toThrow(OverCommitError);
    expect(() => b.releaseAt(slot, { resources: { cpu: 501, memory: 1, disk: 0 } })).toThrow(
      ReleaseMismatchError,
    );
    expect(() =>
      b.releaseAt(slot, {
        resources: { cpu: 1, memory: 1, disk: 0 },
        gpuDevices: [{ device: 0, milli: 301 }],
      }),
    ).toThrow(ReleaseMismatchError);
    expect(JSON.stringify(b.view(slot))).toBe(before);
    b.releaseAt(slot, {
      resources: { cpu: 500, memory: 500, disk: 0 },
      gpuDevices: [{ device: 0, milli: 300 }],
    });
    expect(b.view(slot).allocated).toEqual({ cpu: 0, memory: 0, disk: 0 });
    expect(b.view(slot).gpuFree).toEqual([1000]);
  });

  it('scheduler state - a slot table used as a queue keeps its key map within a constant factor of its size', () => {
    // Evicted from the front for many times its size (the dedup and cleanup tables' life): the key -> slot map
    // is renumbered too, not only the pages, so lookups stay in a map about the size of the live keys.
    let t = SlotTable.empty<number>();
    for (let round = 0; round < 200; round++) {
      const d = t.edit();
      for (let i = 0; i < 1000; i++) d.set(`r${round}-${i}`, i);
      while (d.size > 2000) d.remove(d.firstKey() as string);
      t = d.publish();
    }
    expect(t.size).toBe(2000);
    expect(t.get('r199-999')).toBe(999);
    expect(t.get('r197-999')).toBeUndefined();
    // 200,000 keys went through it; the map holds the live ones plus at most the slack before a renumber.
    expect(t.keyMapSize).toBeLessThanOrEqual(2000 + Math.max(2000, 4096) + 1000);
  });

  it('scheduler state - a big slot table used as a queue (the 1M dedup table) keeps its key map bounded too', () => {
    // Past 65,536 live keys a renumber is rare (it is O(size) in one apply), but a table evicted from the front
    // for many times its size must still not keep every key it ever held: the map stays within ~5x its size.
    const live = 70_000;
    let t = SlotTable.empty<number>();
    let n = 0;
    let mapMax = 0;
    for (let round = 0; round < 100; round++) {
      const d = t.edit();
      for (let i = 0; i < 10_000; i++) d.set(`k${n++}`, n);
      while (d.size > live) d.remove(d.firstKey() as string);
      t = d.publish();
      mapMax = Math.max(mapMax, t.keyMapSize);
    }
    expect(t.size).toBe(live);
    expect(t.get(`k${n - 1}`)).toBe(n);
    expect(t.get(`k${n - live - 1}`)).toBeUndefined();
    expect(t.get(`k${n - live}`)).toBe(n - live + 1);
    // 1,000,000 keys went through it (14x its size): without the bound the map held all of them; with it, at
    // most the live keys, 4x as many front holes, and one round's slack.
    expect(mapMax).toBeLessThanOrEqual(live * 5 + 2 * 10_000);
    expect(t.keyMapSize).toBeLessThan(n / 2);
  });

  it('scheduler state - a slot table past 131,072 keys (its key map split in shards) keeps every version', () => {
    // The key map splits into shards at 2^17 keys; versions before and after the split, and a fork from the
    // older one, must each still read exactly their own contents.
    const n = 140_000;
    const d = SlotTable.empty<number>().edit();
    for (let i = 0; i < n - 10_000; i++) d.set(`k${i}`, i);
    const before = d.publish();
    const d2 = before.edit();
    for (let i = n - 10_000; i < n; i++) d2.set(`k${i}`, i);
    for (let i = 0; i < n; i += 7) d2.remove(`k${i}`);
    const after = d2.publish();
    const fork = before.edit();
    fork.set('k-new', -1);
    fork.remove('k1');
    const forked = fork.publish();
    expect(after.keyMapSize).toBeGreaterThanOrEqual(n);
    for (let i = 0; i < n; i++) {
      const k = `k${i}`;
      expect(before.get(k)).toBe(i < n - 10_000 ? i : undefined);
      expect(after.get(k)).toBe(i % 7 === 0 ? undefined : i);
      expect(forked.get(k)).toBe(i < n - 10_000 && i !== 1 ? i : undefined);
    }
    expect(forked.get('k-new')).toBe(-1);
    expect(before.get('k-new')).toBeUndefined();
    expect(after.get('k-new')).toBeUndefined();
    expect(after.size).toBe(n - Math.ceil(n / 7));
  });
});
