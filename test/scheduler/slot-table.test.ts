import { describe, expect, it } from 'vitest';
import {
  SlotTable,
  type SlotTableDraft,
  slotPageSize,
  slotTableCounts,
} from '../../scheduler/core/slot-table.js';
import { AssertionFailure } from '../../src/lib/assert.js';
import { createRng } from '../../src/lib/prng.js';
import { withSmallKeyMaps } from '../helpers/key-maps.js';

/** A version with the plain map it must equal (insertion order included). */
interface Held {
  readonly table: SlotTable<number>;
  readonly model: ReadonlyMap<string, number>;
}

function expectSame(h: Held, context: string): void {
  // Compared as one string: toEqual over thousands of pairs for every version is slow.
  expect(JSON.stringify([...h.table.entries()]), context).toBe(JSON.stringify([...h.model.entries()]));
  expect(h.table.size, context).toBe(h.model.size);
  expect(h.table.firstKey(), context).toBe(h.model.keys().next().value);
}

/**
 * One random draft on `base`: sets (new and existing keys, and keys removed earlier), removals (at random
 * and from the front, as eviction does), checked against a plain Map as it goes.
 */
function randomDraft(
  base: Held,
  rng: ReturnType<typeof createRng>,
  keySpace: number,
): { draft: SlotTableDraft<number>; model: Map<string, number> } {
  const draft = base.table.edit();
  const model = new Map(base.model);
  const ops = rng.int(1, slotPageSize);
  for (let i = 0; i < ops; i++) {
    const r = rng.next();
    const key = `k${rng.int(0, keySpace)}`;
    if (r < 0.5) {
      const v = rng.int(0, 1_000_000);
      draft.set(key, v);
      // A plain Map keeps a key's first position on overwrite; a removed key comes back at the end.
      model.set(key, v);
    } else if (r < 0.8) {
      expect(draft.remove(key)).toBe(model.delete(key));
    } else {
      const first = model.keys().next().value;
      if (first !== undefined) {
        expect(draft.firstKey()).toBe(first);
        draft.remove(first);
        model.delete(first);
      }
    }
    if (i % 97 === 0) {
      const probe = `k${rng.int(0, keySpace)}`;
      expect(draft.get(probe)).toBe(model.get(probe));
      expect(draft.size).toBe(model.size);
    }
  }
  return { draft, model };
}

describe('scheduler/slot-table', () => {
  it('slot-table - every version keeps its contents while later versions, forks and dropped drafts write', () => {
    // Versions are published from random earlier versions (forks), some drafts are dropped half-written,
    // keys come back after removal; every version ever published must still read exactly as its model.
    for (const seed of [1, 2, 3, 4, 5]) {
      const rng = createRng(seed);
      const held: Held[] = [{ table: SlotTable.empty<number>(), model: new Map() }];
      for (let step = 0; step < 40; step++) {
        // Mostly extend the newest version (the apply path); sometimes an older one.
        const base = rng.next() < 0.75 ? (held.at(-1) as Held) : (held[rng.int(0, held.length)] as Held);
        const { draft, model } = randomDraft(base, rng, 2 * slotPageSize);
        if (rng.next() < 0.15) continue; // Dropped: never published.
        held.push({ table: draft.publish(), model });
        expectSame(held.at(-1) as Held, `seed ${seed}, step ${step}, newest`);
      }
      for (const [i, h] of held.entries()) expectSame(h, `seed ${seed}, version ${i} at the end`);
    }
  });

  it('slot-table - every version reads as its model while key maps grow, compact and renumber under forks', () => {
    // The key map is lowered here (16 cells, slack 32, moves spread over almost all of a new table's room,
    // compaction instead of renumber past 64 live keys) so growth, reads mid-move, compaction and renumber are
    // all reached with few keys, under forks, dropped drafts, random removals, evictions and re-adds.
    const before = { ...slotTableCounts };
    const seeds = process.env.SEED === undefined ? [21, 22, 23, 24, 25, 26] : [Number(process.env.SEED)];
    withSmallKeyMaps(() => {
      for (const seed of seeds) modelRun(seed);
    });
    expect(slotTableCounts.growths).toBeGreaterThan(before.growths);
    expect(slotTableCounts.compactions).toBeGreaterThan(before.compactions);
    // A compaction touches its new table before it takes keys; it must get through both phases.
    expect(slotTableCounts.compactionsDone).toBeGreaterThan(before.compactionsDone);
    expect(paths.addedIfAbsent).toBeGreaterThan(0);
    expect(paths.foundPresent).toBeGreaterThan(0);
    expect(paths.taken).toBeGreaterThan(0);
    // Keys appended unindexed reach the key map both ways: sorted into a map with room, one by one otherwise.
    expect(paths.appendedUnindexed).toBeGreaterThan(0);
    expect(slotTableCounts.sortedInserts).toBeGreaterThan(before.sortedInserts);
    expect(slotTableCounts.unindexedOneByOne).toBeGreaterThan(before.unindexedOneByOne);
    expect(slotTableCounts.renumbers).toBeGreaterThan(before.renumbers);
  });

  /**
   * One seeded run: each step drafts on the newest version (mostly) or an older one (a fork), with a random
   * mix of sets, re-adds of removed keys, random removals and evictions from the front, and drops some drafts
   * after writing them (their keys went into the shared key map). Every version is checked when published and
   * again at the end, and random keys are read from random older versions as the line moves on.
   */
  /** How often the model run took each path of `addIfAbsent` and `take` (the test checks each ran). */
  const paths = { addedIfAbsent: 0, foundPresent: 0, taken: 0, appendedUnindexed: 0 };

  function modelRun(seed: number): void {
    const rng = createRng(seed);
    const ctx = `seed ${seed} (SEED=${seed} replays it)`;
    const keySpace = 400;
    let newest: Held = { table: SlotTable.empty<number>(), model: new Map() };
    const held: Held[] = [newest];
    let fresh = 0;
    for (let step = 0; step < 120; step++) {
      const fork = rng.next() < 0.2;
      const base = fork ? (held[rng.int(0, held.length)] as Held) : newest;
      const draft = base.table.edit();
      const model = new Map(base.model);
      const ops = rng.int(1, 64);
      for (let i = 0; i < ops; i++) {
        const r = rng.next();
        if (r < 0.35) {
          // A key never seen (a queue's new request id): the map grows.
          const how = rng.next();
          if (how < 0.8) {
            const key = `n${fresh++}`;
            if (how < 0.4) draft.set(key, i);
            else {
              expect(draft.addIfAbsent(key, i), `${ctx}, step ${step}, ${key}`).toBeUndefined();
              paths.addedIfAbsent++;
            }
            model.set(key, i);
          } else {
            // A run of them appended as a restore does, indexed at the draft's next lookup or publish; the
            // slots (size, first key) read right meanwhile.
            for (let k = rng.int(1, 24); k > 0; k--) {
              const key = `n${fresh++}`;
              draft.appendUnindexed(key, i);
              model.set(key, i);
              paths.appendedUnindexed++;
            }
            expect(draft.size, `${ctx}, step ${step}`).toBe(model.size);
            expect(draft.firstKey(), `${ctx}, step ${step}`).toBe(model.keys().next().value);
          }
        } else if (r < 0.55) {
          const key = `k${rng.int(0, keySpace)}`;
          const v = rng.int(0, 1_000_000);
          if (rng.next() < 0.7) {
            draft.set(key, v);
            model.set(key, v);
          } else {
            // Present: its value is returned and stays; absent: it is added.
            expect(draft.addIfAbsent(key, v), `${ctx}, step ${step}, ${key}`).toBe(model.get(key));
            if (model.has(key)) paths.foundPresent++;
            else model.set(key, v);
          }
        } else if (r < 0.7) {
          const key = `k${rng.int(0, keySpace)}`;
          if (rng.next() < 0.5) expect(draft.remove(key), `${ctx}, step ${step}`).toBe(model.delete(key));
          else {
            expect(draft.take(key), `${ctx}, step ${step}, take ${key}`).toBe(model.get(key));
            if (model.delete(key)) paths.taken++;
          }
        } else {
          const first = model.keys().next().value;
          expect(draft.firstKey(), `${ctx}, step ${step}`).toBe(first);
          if (first !== undefined) {
            draft.remove(first);
            model.delete(first);
          }
        }
      }
      expect(draft.size, `${ctx}, step ${step}`).toBe(model.size);
      if (rng.next() < 0.15) continue; // Dropped after writing.
      const h = { table: draft.publish(), model };
      expectSame(h, `${ctx}, step ${step}, published`);
      held.push(h);
      if (!fork) newest = h;
      for (let k = 0; k < 20; k++) {
        const old = held[rng.int(0, held.length)] as Held;
        const probe = rng.next() < 0.5 ? `k${rng.int(0, keySpace)}` : `n${rng.int(0, fresh + 1)}`;
        expect(old.table.get(probe), `${ctx}, step ${step}, ${probe}`).toBe(old.model.get(probe));
        expect(old.table.has(probe), `${ctx}, step ${step}, ${probe}`).toBe(old.model.has(probe));
      }
    }
    for (const [i, h] of held.entries()) expectSame(h, `${ctx}, version ${i} at the end`);
  }

  it('slot-table - a reserved table takes its keys without growing its key map', () => {
    const before = slotTableCounts.growths;
    const n = 50_000;
    const d = SlotTable.empty<number>(n).edit();
    for (let i = 0; i < n; i++) d.set(`id-${i}`, i);
    const d2 = SlotTable.empty<number>().edit();
    d2.reserve(n);
    for (let i = 0; i < n; i++) d2.set(`id-${i}`, i);
    expect(slotTableCounts.growths).toBe(before);
    const [a, b] = [d.publish(), d2.publish()];
    expect(a.get('id-49999')).toBe(49_999);
    expect(b.get('id-0')).toBe(0);
    expect(a.equals(b)).toBe(true);
    expect(() => d2.reserve(-1)).toThrow(/a reservation is a count of keys/);
  });

  it('slot-table - a table emptied from the front and refilled stays as small as its live keys', () => {
    // The dedup table's life: append at the end, evict from the front, for many times its size.
    let t = SlotTable.empty<number>();
    for (let round = 0; round < 50; round++) {
      const d = t.edit();
      for (let i = 0; i < 1000; i++) d.set(`r${round}-${i}`, i);
      while (d.size > 2000) d.remove(d.firstKey() as string);
      t = d.publish();
    }
    expect(t.size).toBe(2000);
    expect(t.firstKey()).toBe('r48-0');
    expect(t.get('r49-999')).toBe(999);
    expect(t.get('r47-999')).toBeUndefined();
  });

  it('slot-table - keys appended unindexed read as set ones, and a key appended twice is refused', () => {
    // A restore's path at a size where the sorted insert runs into a reserved map and wraps around its end.
    const n = 20_000;
    const before = { ...slotTableCounts };
    const d = SlotTable.empty<number>().edit();
    d.reserve(n);
    for (let i = 0; i < n; i++) d.appendUnindexed(`id-${(i * 7919) % n}`, i);
    const t = d.publish();
    expect(slotTableCounts.sortedInserts).toBe(before.sortedInserts + 1);
    expect(slotTableCounts.growths).toBe(before.growths);
    // Counted as entries, so the map grows on time afterwards.
    expect(t.keyMapSize).toBe(n);
    const want = SlotTable.empty<number>().edit();
    for (let i = 0; i < n; i++) want.set(`id-${(i * 7919) % n}`, i);
    expect(t.equals(want.publish())).toBe(true);
    expect([...t.keys()].slice(0, 3)).toEqual(['id-0', 'id-7919', 'id-15838']);
    for (let i = 0; i < n; i += 997) expect(t.get(`id-${(i * 7919) % n}`)).toBe(i);
    expect(t.has('id-20000')).toBe(false);
    // Twice among the unindexed ones, or a key the table held already: the next lookup or publish refuses it.
    const twice = SlotTable.empty<number>().edit();
    for (const k of ['a', 'b', 'c', 'b']) twice.appendUnindexed(k, 1);
    expect(() => twice.publish()).toThrow(AssertionFailure);
    const held = t.edit();
    held.appendUnindexed('new', 1);
    held.appendUnindexed('id-5', 2);
    expect(() => held.get('new')).toThrow(AssertionFailure);
  });

  it('slot-table - equals compares keys and values by content', () => {
    const a = SlotTable.empty<{ x: number[] }>().edit();
    const b = SlotTable.empty<{ x: number[] }>().edit();
    a.set('p', { x: [1, 2] });
    b.set('p', { x: [1, 2] });
    expect(a.publish().equals(b.publish())).toBe(true);
    b.set('p', { x: [1, 3] });
    expect(a.publish().equals(b.publish())).toBe(false);
  });
});
