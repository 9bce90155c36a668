import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { capacityKey } from '../../placement/cluster-index.js';
import {
  bucketCount,
  bucketOf,
  ClusterIndex,
  DuplicateNodeError,
  type IndexBuilder,
  NodeBusyError,
  type NodeSpec,
  OverCommitError,
  pageSize,
  ReleaseMismatchError,
  UnknownNodeError,
} from '../../placement/index.js';
import { ValidationError } from '../../src/lib/errors.js';
import { createRng, smallCluster } from './fixtures.js';

function views(index: ClusterIndex | IndexBuilder): unknown {
  return {
    nodes: [...index.nodes()],
    n: index.nodeCount,
    cap: index.readyCapacity,
    alloc: index.readyAllocated,
  };
}

/** Every bucket's slots, in scan order. */
function bucketMembers(index: ClusterIndex): number[][] {
  return Array.from({ length: bucketCount }, (_, b) => {
    const slots: number[] = [];
    index.scanBucket(b, 0, (slot) => {
      slots.push(slot);
      return false;
    });
    return slots;
  });
}

/** Every ready node sits in exactly the bucket its free capacity calls for, and nothing else is in any bucket. */
function checkBuckets(index: ClusterIndex): void {
  const seen = new Map<number, number>();
  for (let b = 0; b < bucketCount; b++) {
    index.scanBucket(b, 0, (slot) => {
      expect(seen.has(slot), `slot ${slot} in two buckets`).toBe(false);
      seen.set(slot, b);
      return false;
    });
  }
  for (const slot of index.slots()) {
    const want = index.isReady(slot)
      ? bucketOf(capacityKey(index.freeCpu(slot), index.freeMem(slot), index.freeDisk(slot)))
      : undefined;
    expect(seen.get(slot), `slot ${slot} (${index.nodeId(slot)})`).toBe(want);
    seen.delete(slot);
  }
  expect([...seen.keys()]).toEqual([]);
}

/** The ready totals kept incrementally equal a recomputation over the ready nodes. */
function checkTotals(index: ClusterIndex): void {
  const cap = { cpu: 0, memory: 0, disk: 0 };
  const alloc = { cpu: 0, memory: 0, disk: 0 };
  let gpu = 0;
  for (const v of index.nodes()) {
    if (v.state !== 'ready') continue;
    for (const r of ['cpu', 'memory', 'disk'] as const) {
      cap[r] += v.spec.capacity[r];
      alloc[r] += v.allocated[r];
    }
    gpu += v.gpuFree.length * 1000;
  }
  expect(index.readyCapacity).toEqual(cap);
  expect(index.readyAllocated).toEqual(alloc);
  expect(index.readyGpuMilli).toBe(gpu);
}

describe('placement/cluster-index', () => {
  it('placement/cluster-index - a published version never changes and buckets stay exact under random writes', () => {
    // Applies random registers, updates, state changes, allocations, releases and removals; after each
    // publish the previous version must read exactly as before, and the bucket index must match the columns.
    fc.assert(
      fc.property(fc.integer(), (seed) => {
        const rng = createRng(seed);
        const specs = smallCluster(rng, rng.int(1, 700));
        let index = ClusterIndex.of(specs.slice(0, Math.ceil(specs.length / 2)));
        const live = new Map<string, NodeSpec>(
          specs.slice(0, Math.ceil(specs.length / 2)).map((s) => [s.id, s]),
        );
        let pending = specs.slice(Math.ceil(specs.length / 2));
        const allocated: { node: string; cpu: number; memory: number }[] = [];
        for (let round = 0; round < 5; round++) {
          const before = views(index);
          const b = index.edit();
          for (let op = 0; op < 60; op++) {
            const ids = [...live.keys()];
            const roll = rng.int(0, 6);
            if (roll === 0 && pending.length > 0) {
              const s = pending[0] as NodeSpec;
              pending = pending.slice(1);
              b.registerNode(s);
              live.set(s.id, s);
            } else if (roll === 1 && ids.length > 0) {
              const id = rng.pick(ids);
              b.setState(id, rng.pick(['ready', 'draining', 'cordoned', 'down'] as const));
            } else if (roll <= 3 && ids.length > 0) {
              const id = rng.pick(ids);
              const shape = { resources: { cpu: rng.int(0, 3000), memory: rng.int(0, 3000), disk: 0 } };
              const view = b.get(id);
              if (
                view !== undefined &&
                view.free.cpu >= shape.resources.cpu &&
                view.free.memory >= shape.resources.memory
              ) {
                b.allocate(id, shape);
                allocated.push({ node: id, cpu: shape.resources.cpu, memory: shape.resources.memory });
              } else {
                expect(() => b.allocate(id, shape)).toThrow(OverCommitError);
              }
            } else if (roll === 4 && allocated.length > 0) {
              const a = allocated.splice(rng.int(0, allocated.length), 1)[0];
              if (a !== undefined)
                b.release(a.node, { resources: { cpu: a.cpu, memory: a.memory, disk: 0 } });
            } else if (roll === 5 && ids.length > 0) {
              const id = rng.pick(ids);
              if (allocated.some((a) => a.node === id && (a.cpu > 0 || a.memory > 0))) {
                expect(() => b.removeNode(id)).toThrow(NodeBusyError);
              } else {
                allocated.splice(0, allocated.length, ...allocated.filter((a) => a.node !== id));
                b.removeNode(id);
                live.delete(id);
              }
            }
          }
          const next = b.publish();
          expect(views(index)).toEqual(before);
          checkBuckets(next);
          checkTotals(next);
          expect(next.version).toBe(index.version + 1);
          index = next;
        }
      }),
      { numRuns: 30 },
    );
  });

  it('placement/cluster-index - refuses bad writes with typed errors and leaves the builder as it was', () => {
    // Each bad write throws its own error class; the builder's view is deep-equal before and after.
    const spec: NodeSpec = {
      id: 'n1',
      capacity: { cpu: 1000, memory: 1000, disk: 1000 },
      labels: {},
      state: 'ready',
    };
    const b = ClusterIndex.of([spec]).edit();
    b.allocate('n1', { resources: { cpu: 500, memory: 500, disk: 0 } });
    const before = views(b);
    const cases: [() => unknown, new (...args: never[]) => Error][] = [
      [() => b.registerNode(spec), DuplicateNodeError],
      [() => b.registerNode({ ...spec, id: 'bad id' }), ValidationError],
      [
        () => b.registerNode({ ...spec, id: 'n2', capacity: { cpu: -1, memory: 1, disk: 1 } }),
        ValidationError,
      ],
      [() => b.allocate('nope', { resources: { cpu: 1, memory: 1, disk: 1 } }), UnknownNodeError],
      [() => b.allocate('n1', { resources: { cpu: 501, memory: 1, disk: 1 } }), OverCommitError],
      [() => b.release('n1', { resources: { cpu: 501, memory: 1, disk: 0 } }), ReleaseMismatchError],
      [() => b.updateNode({ ...spec, capacity: { cpu: 100, memory: 1000, disk: 1000 } }), OverCommitError],
      [() => b.removeNode('n1'), NodeBusyError],
      [() => b.setState('nope', 'down'), UnknownNodeError],
    ];
    for (const [write, kind] of cases) {
      expect(write).toThrow(kind);
      expect(views(b)).toEqual(before);
    }
  });

  it('placement/cluster-index - a new version shares the pages it did not touch', () => {
    // Allocating on one node of a 2,000-node index copies one page: every other node's page is shared.
    const rng = createRng(5);
    const index = ClusterIndex.of(smallCluster(rng, 2000).map((s) => ({ ...s, state: 'ready' as const })));
    const next = index
      .edit()
      .allocate('n1500', { resources: { cpu: 1, memory: 1, disk: 1 } })
      .publish();
    expect(next.sharedPages(index)).toEqual({ shared: index.pageCount - 1, total: index.pageCount });
    expect(index.pageCount).toBe(Math.ceil(2000 / pageSize));
    expect(next.get('n0')).toEqual(index.get('n0'));
    expect(next.get('n1500')?.allocated.cpu).toBe((index.get('n1500')?.allocated.cpu ?? 0) + 1);
    expect(index.get('n1500')?.allocated.cpu).toBe(0);
  });

  it('placement/cluster-index - a write copies only the parts of a page it changes, and the old version keeps every part', () => {
    // Four pages: a plain allocation on page 0 (hot columns and bucket bits only), a GPU allocation on page 1
    // (and its GPU shares), a spec change on page 2 (and its fixed columns), nothing on page 3. Each takes the
    // node's whole free capacity, so its bucket moves and a shared bucket bitset would show in the old version.
    fc.assert(
      fc.property(fc.integer(), (seed) => {
        const rng = createRng(seed);
        const specs = smallCluster(rng, 4 * pageSize).map((s) => ({ ...s, state: 'ready' as const }));
        const onPage = (page: number, gpu: boolean): NodeSpec | undefined =>
          specs.slice(page * pageSize, (page + 1) * pageSize).find((s) => (s.gpu !== undefined) === gpu);
        const plain = onPage(0, false);
        const gpuNode = onPage(1, true);
        const changed = onPage(2, false);
        if (plain === undefined || gpuNode === undefined || changed === undefined) return;
        const index = ClusterIndex.of(specs);
        const before = views(index);
        const bucketsBefore = bucketMembers(index);
        const b = index.edit();
        b.allocate(plain.id, { resources: plain.capacity });
        b.allocate(gpuNode.id, { resources: gpuNode.capacity, gpuDevices: [{ device: 0, milli: 250 }] });
        b.updateNode({ ...changed, state: 'draining', capacity: { ...changed.capacity, cpu: 64_000 } });
        const next = b.publish();
        expect(views(index)).toEqual(before);
        expect(bucketMembers(index)).toEqual(bucketsBefore);
        checkBuckets(index);
        checkBuckets(next);
        expect(next.sharedParts(index)).toEqual({ fix: 3, hot: 1, gpu: 3 });
        expect(next.sharedPages(index)).toEqual({ shared: 1, total: 4 });
        expect(next.get(plain.id)?.free).toEqual({ cpu: 0, memory: 0, disk: 0 });
        expect(next.get(gpuNode.id)?.gpuFree[0]).toBe(750);
        expect(next.get(changed.id)?.state).toBe('draining');
        expect(next.get(changed.id)?.free.cpu).toBe(64_000);
      }),
      { numRuns: 30 },
    );
  });
});

describe('placement/cluster-index - group counts written in place by a builder', () => {
  it('placement/cluster-index - group counts of every version stay as published while builders write theirs in place', () => {
    // A builder keeps its group counts in transient maps (written in place) and seals them at publish: the
    // version it was made from, a sibling builder of the same version and every published version must keep
    // their own counts, including counts that fall back to zero.
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            node: fc.integer({ min: 0, max: 5 }),
            group: fc.constantFrom('a', 'b', 'c'),
            spread: fc.boolean(),
            release: fc.boolean(),
          }),
          { minLength: 1, maxLength: 40 },
        ),
        fc.integer({ min: 1, max: 4 }),
        (writes, versions) => {
          const specs = Array.from({ length: 6 }, (_, i) => ({
            id: `n${i}`,
            capacity: { cpu: 100_000, memory: 100_000, disk: 100_000 },
            labels: { zone: `z${i % 3}` },
            state: 'ready' as const,
          }));
          const counts = (index: ClusterIndex | IndexBuilder): unknown =>
            ['a', 'b', 'c'].map((g) => [
              index.antiAffinityCounts(g).toJS(),
              index.spreadCounts(g, 'zone').toJS(),
            ]);
          // The model: counts as plain objects, per published version.
          const model = {
            aa: new Map<string, Map<number, number>>(),
            sp: new Map<string, Map<string, number>>(),
          };
          const modelCounts = (): unknown =>
            ['a', 'b', 'c'].map((g) => [
              Object.fromEntries([...(model.aa.get(g) ?? new Map())].filter(([, n]) => n !== 0)),
              Object.fromEntries([...(model.sp.get(g) ?? new Map())].filter(([, n]) => n !== 0)),
            ]);
          const placedOn = new Map<string, number>();
          let index = ClusterIndex.of(specs);
          const published: [ClusterIndex, unknown][] = [[index, counts(index)]];
          for (let v = 0; v < versions; v++) {
            const builder = index.edit();
            const sibling = index.edit();
            for (const w of writes) {
              const slot = builder.slotOf(`n${w.node}`) as number;
              const shape = {
                resources: { cpu: 1, memory: 1, disk: 1 },
                ...(w.spread
                  ? { spread: { group: w.group, label: 'zone' } }
                  : { antiAffinityGroup: w.group }),
              };
              const zone = `z${w.node % 3}`;
              const held = w.spread
                ? (model.sp.get(w.group)?.get(zone) ?? 0)
                : (model.aa.get(w.group)?.get(slot) ?? 0);
              const mine = `${w.node}/${w.spread}/${w.group}`;
              const sign = w.release && (placedOn.get(mine) ?? 0) > 0 ? -1 : 1;
              placedOn.set(mine, (placedOn.get(mine) ?? 0) + sign);
              if (sign < 0) builder.release(`n${w.node}`, shape);
              else builder.allocate(`n${w.node}`, shape);
              if (w.spread) {
                const m = model.sp.get(w.group) ?? new Map<string, number>();
                m.set(zone, held + sign);
                model.sp.set(w.group, m);
              } else {
                const m = model.aa.get(w.group) ?? new Map<number, number>();
                m.set(slot, held + sign);
                model.aa.set(w.group, m);
              }
              expect(counts(builder)).toEqual(modelCounts());
            }
            expect(counts(sibling)).toEqual(published[published.length - 1]?.[1]);
            index = builder.publish();
            // Sealed: writing a published version's counts makes a new map and leaves the version as it was.
            const seen = counts(index);
            for (const g of ['a', 'b', 'c']) {
              index.antiAffinityCounts(g).set(0, 99);
              index.spreadCounts(g, 'zone').set('z0', 99);
            }
            expect(counts(index)).toEqual(seen);
            published.push([index, counts(index)]);
            expect(published[published.length - 1]?.[1]).toEqual(modelCounts());
          }
          for (const [version, seen] of published) expect(counts(version)).toEqual(seen);
        },
      ),
      { numRuns: 100 },
    );
  });
});
