/**
 * The dedup table keeps its entries in columns (scheduler/core/dedup-table.ts): a seeded model run checks every
 * version it publishes against a plain Map of entry objects, under forks, dropped drafts, overwrites in place,
 * removals, evictions from the front, and (with the key map's tuning lowered) growth, compaction and renumber.
 */
import { describe, expect, it } from 'vitest';
import { type DedupEntry, emptyDedupTable } from '../../scheduler/core/dedup-table.js';
import { type SlotTable, slotPageSize, slotTableCounts } from '../../scheduler/core/slot-table.js';
import type { CommandResult } from '../../scheduler/core/state.js';
import { createRng } from '../../src/lib/prng.js';
import { withSmallKeyMaps } from '../helpers/key-maps.js';

type Rng = ReturnType<typeof createRng>;

interface Held {
  readonly table: SlotTable<DedupEntry>;
  readonly model: ReadonlyMap<string, DedupEntry>;
}

const digests = ['d-a', 'd-b', 'd-c'];
const results: CommandResult[] = [
  { ok: true },
  { ok: false, error: { code: 'UNKNOWN_SANDBOX', message: 'no such sandbox' } } as CommandResult,
];

/** A random entry for `key`: a create with its own id (most), a create with another id, or another command. */
function entryFor(rng: Rng, key: string): DedupEntry {
  // Times as the leader stamps them (not small integers: a boxed double each in an object field).
  const atMs = 1_764_000_000_000 + rng.int(0, 1_000_000) + rng.next();
  const specDigest = rng.pick(digests);
  const roll = rng.next();
  if (roll < 0.6) return { sandboxId: key, specDigest, atMs };
  if (roll < 0.75) return { sandboxId: `sb-${rng.int(0, 1000)}`, specDigest, atMs };
  if (roll < 0.95) return { sandboxId: '', specDigest, atMs, result: rng.pick(results) };
  return { sandboxId: '', specDigest, atMs };
}

function expectSame(h: Held, context: string): void {
  expect(h.table.size, context).toBe(h.model.size);
  // Compared as one string: toEqual over thousands of pairs for every version is slow.
  expect(JSON.stringify([...h.table.entries()]), context).toBe(JSON.stringify([...h.model.entries()]));
  expect(h.table.firstKey(), context).toBe(h.model.keys().next().value);
}

/** How often each path ran (the test checks each did). */
const paths = { overwritten: 0, evicted: 0, removed: 0, taken: 0, addedIfAbsent: 0, foundPresent: 0 };

function modelRun(seed: number): void {
  const rng = createRng(seed);
  const ctx = `seed ${seed} (SEED=${seed} replays it)`;
  let newest: Held = { table: emptyDedupTable(), model: new Map() };
  const held: Held[] = [newest];
  let fresh = 0;
  for (let step = 0; step < 120; step++) {
    const fork = rng.next() < 0.2;
    const base = fork ? (held[rng.int(0, held.length)] as Held) : newest;
    const draft = base.table.edit();
    const model = new Map(base.model);
    const ops = rng.int(1, slotPageSize);
    for (let i = 0; i < ops; i++) {
      const r = rng.next();
      const at = `${ctx}, step ${step}, op ${i}`;
      if (r < 0.45) {
        const key = `r${fresh++}`;
        const e = entryFor(rng, key);
        if (rng.next() < 0.8) draft.set(key, { ...e });
        else {
          expect(draft.addIfAbsent(key, e), at).toBeUndefined();
          paths.addedIfAbsent++;
        }
        model.set(key, e);
      } else if (r < 0.6 && model.size > 0) {
        // An existing key: overwritten in place (its page's values copied, its keys shared).
        const key = `r${rng.int(Math.max(0, fresh - 600), fresh)}`;
        const e = entryFor(rng, key);
        if (rng.next() < 0.8) {
          draft.set(key, e);
          if (model.has(key)) paths.overwritten++;
          model.set(key, e);
        } else {
          expect(draft.addIfAbsent(key, e), at).toEqual(model.get(key));
          if (model.has(key)) paths.foundPresent++;
          else model.set(key, e);
        }
      } else if (r < 0.7) {
        const key = `r${rng.int(Math.max(0, fresh - 600), fresh + 1)}`;
        if (rng.next() < 0.5) {
          expect(draft.remove(key), at).toBe(model.has(key));
          if (model.delete(key)) paths.removed++;
        } else {
          expect(draft.take(key), at).toEqual(model.get(key));
          if (model.delete(key)) paths.taken++;
        }
      } else {
        // Eviction from the front, as evictDedup does.
        const first = model.keys().next().value;
        expect(draft.firstKey(), at).toBe(first);
        if (first !== undefined) {
          expect(draft.get(first), at).toEqual(model.get(first));
          draft.remove(first);
          model.delete(first);
          paths.evicted++;
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
      const probe = `r${rng.int(0, fresh + 1)}`;
      expect(old.table.get(probe), `${ctx}, step ${step}, ${probe}`).toEqual(old.model.get(probe));
      expect(old.table.has(probe), `${ctx}, step ${step}, ${probe}`).toBe(old.model.has(probe));
    }
  }
  for (const [i, h] of held.entries()) expectSame(h, `${ctx}, version ${i} at the end`);
}

describe('scheduler/dedup-table', () => {
  it('dedup table - every version reads as its model of entry objects under forks, overwrites and evictions', () => {
    const before = { ...slotTableCounts };
    const seeds = process.env.SEED === undefined ? [31, 32, 33, 34, 35, 36] : [Number(process.env.SEED)];
    withSmallKeyMaps(() => {
      for (const seed of seeds) modelRun(seed);
    });
    for (const [path, n] of Object.entries(paths)) expect(n, path).toBeGreaterThan(0);
    expect(slotTableCounts.growths).toBeGreaterThan(before.growths);
    expect(slotTableCounts.compactionsDone).toBeGreaterThan(before.compactionsDone);
    expect(slotTableCounts.renumbers).toBeGreaterThan(before.renumbers);
  });

  it('dedup table - neither the object given to set nor a view from get is the stored entry', () => {
    const d = emptyDedupTable().edit();
    const given = { sandboxId: 'sb-1', specDigest: 'd-a', atMs: 5, result: { ok: true } as CommandResult };
    d.set('r1', given);
    const t = d.publish();
    (given as { atMs: number }).atMs = 6;
    (given as { sandboxId: string }).sandboxId = 'sb-2';
    const view = t.get('r1') as DedupEntry;
    expect(view).toEqual({ sandboxId: 'sb-1', specDigest: 'd-a', atMs: 5, result: { ok: true } });
    (view as { specDigest: string }).specDigest = 'changed';
    expect(t.get('r1')?.specDigest).toBe('d-a');
    // The first outcome is kept as given: a duplicate gets that very object back.
    expect(t.get('r1')?.result).toBe(given.result);
  });

  it('dedup table - a create whose sandbox took its request id gives that id back, other ids as stored', () => {
    const d = emptyDedupTable().edit();
    d.set('r1', { sandboxId: 'r1', specDigest: 'd', atMs: 1 });
    d.set('r2', { sandboxId: 'other', specDigest: 'd', atMs: 2 });
    d.set('r3', { sandboxId: '', specDigest: 'e', atMs: 3, result: { ok: true } });
    // Overwritten with its own id again: the stored other id must not survive.
    d.set('r2', { sandboxId: 'r2', specDigest: 'd', atMs: 4 });
    const t = d.publish();
    expect(t.get('r1')).toEqual({ sandboxId: 'r1', specDigest: 'd', atMs: 1 });
    expect(t.get('r2')).toEqual({ sandboxId: 'r2', specDigest: 'd', atMs: 4 });
    expect(t.get('r3')).toEqual({ sandboxId: '', specDigest: 'e', atMs: 3, result: { ok: true } });
    expect(t.get('r4')).toBeUndefined();
  });
});
