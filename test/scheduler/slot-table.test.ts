import { describe, expect, it } from 'vitest';
import {
  keySharding,
  SlotTable,
  type SlotTableDraft,
  slotPageSize,
} from '../../scheduler/core/slot-table.js';
import { createRng } from '../../src/lib/prng.js';

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

  it('slot-table - a key map split into shards reads as one, across versions, forks and renumbers', () => {
    // Past keySharding.fromKeys keys a generation's keys are spread over many `Map`s; every version (the
    // line's and forks') must still read exactly as its model, and a renumber rebuilds the shards. The split is
    // lowered here (the production setting is 2^17 keys) so the sharded path is reached with few keys.
    const production = { ...keySharding };
    keySharding.fromKeys = 1 << 12;
    keySharding.shards = 1024;
    try {
      shardedModelRun();
    } finally {
      Object.assign(keySharding, production);
    }
  });

  function shardedModelRun(): void {
    const shardFromKeys = keySharding.fromKeys;
    const rng = createRng(11);
    const keySpace = 3 * shardFromKeys;
    let newest: Held = { table: SlotTable.empty<number>(), model: new Map() };
    const held: Held[] = [newest];
    for (let step = 0; step < 60; step++) {
      const draft = newest.table.edit();
      const model = new Map(newest.model);
      for (let i = 0; i < shardFromKeys / 8; i++) {
        const key = `k${rng.int(0, keySpace)}`;
        if (rng.next() < 0.7) {
          const v = rng.int(0, 1_000_000);
          draft.set(key, v);
          model.set(key, v);
        } else expect(draft.remove(key)).toBe(model.delete(key));
      }
      newest = { table: draft.publish(), model };
      held.push(newest);
      // A fork from an older version: its keys go to its own side map, not into the shared shards.
      const old = held[rng.int(0, held.length)] as Held;
      const { draft: fork, model: forkModel } = randomDraft(old, rng, keySpace);
      held.push({ table: fork.publish(), model: forkModel });
    }
    expect(newest.table.keyMapSize).toBeGreaterThan(shardFromKeys);
    for (const [i, h] of held.entries()) {
      expectSame(h, `version ${i}`);
      for (let k = 0; k < 200; k++) {
        const probe = `k${rng.int(0, keySpace)}`;
        expect(h.table.get(probe), `version ${i}, ${probe}`).toBe(h.model.get(probe));
      }
    }
  }

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
