/**
 * SlotTable: an immutable map from string keys to values, laid out as dense slots. A key's slot comes from
 * one plain `Map` (the generation) shared by a line of versions; the keys and values live in paged columns
 * indexed by slot, copied page by page on write (as the ClusterIndex's columns are), so publishing a version
 * copies only the page table and the pages a draft touched, and a reader holding an older version keeps
 * seeing exactly that version.
 *
 * Why it is safe to share one `Map` between versions: within a generation a key's slot never changes once
 * set, and slots are never given to another key. A version reads `slots.get(key)`, then checks that its own
 * key column holds that key at that slot; a slot past its end, emptied, or written by a later version's key
 * reads as absent. Only one line of versions may add keys to a generation: the generation remembers its
 * writer (the last version published from it, or the draft adding to it). A draft whose base is not the
 * writer (a second draft from one version, or one after a draft that was dropped), or that adds back a
 * removed key (which needs a new slot), records those keys in `extra`, a small persistent map of its own
 * line, read when the generation's slot does not hold the key; once `extra` grows past a share of the
 * table, a draft builds a generation of its own from its columns. So a fork costs what it adds, not the
 * table's size.
 *
 * Slot order is insertion order, so `keys()` lists the oldest live key first (the dedup table evicts from
 * there). Removed slots stay as holes; a draft renumbers densely (keeping the order) once holes outnumber
 * live keys, so the columns and the generation stay within a constant factor of the live size.
 */
import { Map as IMap } from 'immutable';
import { assert } from '../../src/lib/assert.js';

const pageBits = 8;
/** Slots per page: a draft copies whole pages of keys and values on first write. */
export const slotPageSize = 1 << pageBits;
const pageMask = slotPageSize - 1;
/** Holes are kept until they outnumber live keys by this much (and the live count). */
const holesSlackMin = 4096;
/** Live keys up to which a renumber (O(size), in one publish) is cheap enough to do for front holes too. */
const renumberAtOnceMax = 65_536;
/**
 * A bigger table is renumbered for its front holes only once they outnumber its live keys this many times: its
 * key map then holds at most ~(1 + this) × size keys, so a 1M dedup table used as a queue stays bounded (~5M
 * keys) and pays one O(size) renumber per ~4M evictions (1.1 s at 1M on the idle machine), instead of growing by
 * every key it ever held.
 */
const bigQueueHolesFactor = 4;

type Page<T> = (T | undefined)[];

/**
 * When a generation's one `Map` is split, and into how many: at `fromKeys` keys (a one-time move of that many)
 * into `shards` maps. V8 grows a `Map` by rehashing every key into a table twice the size at once, ~0.5-1 µs a
 * key on this machine (35 ms at 65,537 keys, 0.5-0.7 s at 2^20, 1.8-1.9 s at 2^21), so a big table must not be
 * one `Map`. 32 shards from 2^17 keys, measured idle against 1,024 from 4,096 (docs/benchmarks.md, "Idle runs at
 * the end of the fifth session"): the longest apply while a snapshot streams was 186 / 138 ms against 218 / 219
 * (1,024 shards removed the shard rehashes but not that batch), and 1,024 small maps made every lookup of a
 * 4k-130k key table dearer: the 1M simulation 14.7-15.2 s against 17.6-18.0, restore 5.3-6.8 s against
 * 6.4-8.7. Tests lower `fromKeys` to reach the sharded path with few keys; it is read when a generation splits.
 */
export const keySharding = { fromKeys: 1 << 17, shards: 32 };

const shardTables = new Map<number, Uint16Array>();
/**
 * Which shard takes a key, by the top 16 bits of its hash: shard i gets a share of keys proportional to
 * 2^(i/shards), so the shards' sizes are spread evenly over one octave and each crosses its next power of two
 * (where V8 rehashes a `Map` into one twice the size) at a different table size: one shard's rehash at a time,
 * never every key of the table in one apply (with one `Map`: 0.7-3.4 s stalls at 2^21 keys, no GC inside them).
 */
function shardTableOf(shards: number): Uint16Array {
  const known = shardTables.get(shards);
  if (known !== undefined) return known;
  const weights = Array.from({ length: shards }, (_, i) => 2 ** (i / shards));
  const total = weights.reduce((a, w) => a + w, 0);
  const out = new Uint16Array(1 << 16);
  let shard = 0;
  let upTo = (weights[0] as number) / total;
  for (let b = 0; b < out.length; b++) {
    while ((b + 0.5) / out.length > upTo && shard < shards - 1) upTo += (weights[++shard] as number) / total;
    out[b] = shard;
  }
  shardTables.set(shards, out);
  return out;
}

/** FNV-1a of a key's characters, reduced to its shard by `table`. Only big generations pay for it. */
function shardOf(key: string, table: Uint16Array): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193);
  return table[h >>> 16] as number;
}

/** The key → slot map of one line of versions, and who may add to it. */
class Generation {
  /** One `Map` while small; `keySharding.shards` maps once it reaches `keySharding.fromKeys` keys. */
  #one: Map<string, number> | undefined = new Map<string, number>();
  #shards: Map<string, number>[] | undefined;
  #shardTable: Uint16Array | undefined;
  /** The version (or open draft) allowed to add keys; anyone else starts a new generation. */
  writer: object;
  constructor(writer: object) {
    this.writer = writer;
  }
  get size(): number {
    if (this.#one !== undefined) return this.#one.size;
    let n = 0;
    for (const m of this.#shards as Map<string, number>[]) n += m.size;
    return n;
  }
  /** The map that holds (or would hold) `key`: compute it once when a key is both read and added. */
  mapOf(key: string): Map<string, number> {
    return (
      this.#one ??
      ((this.#shards as Map<string, number>[])[shardOf(key, this.#shardTable as Uint16Array)] as Map<
        string,
        number
      >)
    );
  }
  get(key: string): number | undefined {
    return this.mapOf(key).get(key);
  }
  has(key: string): boolean {
    return this.get(key) !== undefined;
  }
  set(key: string, slot: number): void {
    this.mapOf(key).set(key, slot);
    this.added();
  }
  /** After a key went into `mapOf(key)`: splits the one map into shards when it has grown to that. */
  added(): void {
    const one = this.#one;
    if (one === undefined || one.size < keySharding.fromKeys) return;
    const table = shardTableOf(keySharding.shards);
    const shards = Array.from({ length: keySharding.shards }, () => new Map<string, number>());
    for (const [k, v] of one) (shards[shardOf(k, table)] as Map<string, number>).set(k, v);
    this.#shardTable = table;
    this.#shards = shards;
    this.#one = undefined;
  }
}

interface Parts<V> {
  readonly gen: Generation;
  /** Keys this line added that the generation could not take (see above); usually empty. */
  readonly extra: IMap<string, number>;
  readonly keys: readonly Page<string>[];
  readonly vals: readonly Page<V>[];
  /** One past the last slot ever given in this version. */
  readonly end: number;
  /** Every slot below this is a hole (the table is a queue at the front: eviction). */
  readonly head: number;
  readonly size: number;
  /** This version's identity, compared with the generation's writer. */
  readonly stamp: object;
}

function lookup<V>(p: Parts<V>, key: string): number {
  const s = holds(p, p.gen.get(key), key);
  return s >= 0 || p.extra.size === 0 ? s : holds(p, p.extra.get(key), key);
}

/** `slot` when this version holds `key` there, else -1. */
function holds<V>(p: Parts<V>, slot: number | undefined, key: string): number {
  if (slot === undefined || slot >= p.end || slot < p.head) return -1;
  return p.keys[slot >>> pageBits]?.[slot & pageMask] === key ? slot : -1;
}

/** Extra keys are folded into a new generation once they pass this share of the live keys (and a floor). */
const extraShareMax = 0.25;

function* slotsOf<V>(p: Parts<V>): Generator<number> {
  for (let s = p.head; s < p.end; s++) {
    const page = p.keys[s >>> pageBits];
    if (page === undefined) {
      s |= pageMask; // An empty page: skip to its last slot.
      continue;
    }
    if (page[s & pageMask] !== undefined) yield s;
  }
}

/** One immutable version. */
export class SlotTable<V> {
  readonly #p: Parts<V>;
  private constructor(p: Parts<V>) {
    this.#p = p;
  }

  static empty<V>(): SlotTable<V> {
    const stamp = {};
    return new SlotTable<V>({
      gen: new Generation(stamp),
      extra: IMap(),
      keys: [],
      vals: [],
      end: 0,
      head: 0,
      size: 0,
      stamp,
    });
  }

  /** @internal */
  static of<V>(p: Parts<V>): SlotTable<V> {
    return new SlotTable(p);
  }

  get size(): number {
    return this.#p.size;
  }
  /** @internal Keys in the key -> slot map this version reads (its line's, so at least `size`): for tests. */
  get keyMapSize(): number {
    return this.#p.gen.size + this.#p.extra.size;
  }
  get(key: string): V | undefined {
    const s = lookup(this.#p, key);
    return s < 0 ? undefined : (this.#p.vals[s >>> pageBits] as Page<V>)[s & pageMask];
  }
  has(key: string): boolean {
    return lookup(this.#p, key) >= 0;
  }
  /** The oldest live key (first inserted), or undefined when empty. */
  firstKey(): string | undefined {
    for (const s of slotsOf(this.#p)) return this.#p.keys[s >>> pageBits]?.[s & pageMask];
    return undefined;
  }
  *keys(): IterableIterator<string> {
    for (const s of slotsOf(this.#p))
      yield (this.#p.keys[s >>> pageBits] as Page<string>)[s & pageMask] as string;
  }
  *values(): IterableIterator<V> {
    for (const s of slotsOf(this.#p)) yield (this.#p.vals[s >>> pageBits] as Page<V>)[s & pageMask] as V;
  }
  *entries(): IterableIterator<[string, V]> {
    const p = this.#p;
    for (const s of slotsOf(p)) {
      const i = s & pageMask;
      yield [
        (p.keys[s >>> pageBits] as Page<string>)[i] as string,
        (p.vals[s >>> pageBits] as Page<V>)[i] as V,
      ];
    }
  }
  [Symbol.iterator](): IterableIterator<[string, V]> {
    return this.entries();
  }
  /** Same keys with structurally equal values (plain data: objects, arrays, primitives). */
  equals(other: SlotTable<V>): boolean {
    if (other.size !== this.size) return false;
    for (const [k, v] of this.entries()) {
      if (!other.has(k) || !deepEqual(v, other.get(k))) return false;
    }
    return true;
  }
  /** A draft of the next version; this one never changes. */
  edit(): SlotTableDraft<V> {
    return new SlotTableDraft(this.#p);
  }
}

/** A mutable working copy; `publish()` returns the next version. */
export class SlotTableDraft<V> {
  readonly #base: Parts<V>;
  #gen: Generation;
  #extra: IMap<string, number>;
  #keys: Page<string>[];
  #vals: Page<V>[];
  #end: number;
  #head: number;
  #size: number;
  /** Pages this draft copied (or made) and so may write in place. */
  readonly #owned = new Set<number>();
  /** Set once this draft may add keys to `#gen`. */
  #token: object | undefined;

  constructor(base: Parts<V>) {
    this.#base = base;
    this.#gen = base.gen;
    this.#extra = base.extra;
    this.#keys = base.keys.slice();
    this.#vals = base.vals.slice();
    this.#end = base.end;
    this.#head = base.head;
    this.#size = base.size;
  }

  #parts(): Parts<V> {
    return {
      gen: this.#gen,
      extra: this.#extra,
      keys: this.#keys,
      vals: this.#vals,
      end: this.#end,
      head: this.#head,
      size: this.#size,
      stamp: this.#base.stamp,
    };
  }

  get size(): number {
    return this.#size;
  }
  get(key: string): V | undefined {
    const s = this.#lookup(key);
    return s < 0 ? undefined : (this.#vals[s >>> pageBits] as Page<V>)[s & pageMask];
  }
  has(key: string): boolean {
    return this.#lookup(key) >= 0;
  }
  #lookup(key: string): number {
    const s = this.#holds(this.#gen.get(key), key);
    return s >= 0 || this.#extra.size === 0 ? s : this.#holds(this.#extra.get(key), key);
  }
  #holds(slot: number | undefined, key: string): number {
    if (slot === undefined || slot >= this.#end || slot < this.#head) return -1;
    return this.#keys[slot >>> pageBits]?.[slot & pageMask] === key ? slot : -1;
  }
  firstKey(): string | undefined {
    for (const s of slotsOf(this.#parts())) return this.#keys[s >>> pageBits]?.[s & pageMask];
    return undefined;
  }
  /** The live entries as this draft stands, oldest first (do not write while iterating). */
  *entries(): IterableIterator<[string, V]> {
    for (const s of slotsOf(this.#parts())) {
      const i = s & pageMask;
      yield [
        (this.#keys[s >>> pageBits] as Page<string>)[i] as string,
        (this.#vals[s >>> pageBits] as Page<V>)[i] as V,
      ];
    }
  }

  /** Sets `key` to `value`: in place when present, else in a new slot at the end. */
  set(key: string, value: V): void {
    assert(value !== undefined, 'a slot table holds no undefined values', { key });
    // One read of the key map (one shard hash): the slot it gives both finds a live key and tells whether
    // the generation ever gave the key a slot (#mayAdd).
    const map = this.#gen.mapOf(key);
    const genSlot = map.get(key);
    let live = this.#holds(genSlot, key);
    if (live < 0 && this.#extra.size > 0) live = this.#holds(this.#extra.get(key), key);
    if (live >= 0) {
      this.#page(live >>> pageBits);
      (this.#vals[live >>> pageBits] as Page<V>)[live & pageMask] = value;
      return;
    }
    const slot = this.#end++;
    if (this.#mayAdd(genSlot !== undefined)) {
      map.set(key, slot);
      this.#gen.added();
    } else this.#extra = this.#extra.set(key, slot);
    this.#page(slot >>> pageBits);
    (this.#keys[slot >>> pageBits] as Page<string>)[slot & pageMask] = key;
    (this.#vals[slot >>> pageBits] as Page<V>)[slot & pageMask] = value;
    this.#size++;
  }

  /** Removes `key`; false when it was absent. */
  remove(key: string): boolean {
    const s = this.#lookup(key);
    if (s < 0) return false;
    const pg = s >>> pageBits;
    this.#page(pg);
    (this.#keys[pg] as Page<string>)[s & pageMask] = undefined;
    (this.#vals[pg] as Page<V>)[s & pageMask] = undefined;
    this.#size--;
    if (s === this.#head) this.#advanceHead();
    return true;
  }

  publish(): SlotTable<V> {
    // Holes before `head` count too, for a table small enough to renumber within one apply: their pages are
    // dropped, but their keys stay in the generation's `Map` until a renumber, so a table used as a queue
    // would otherwise grow that `Map` by every key it ever held (500,000 keys for the 16,384-entry cleanups of
    // bench:simulate, and each lookup then misses the cache). A big queue (the dedup table, up to 1,000,000)
    // is renumbered for them only once they outnumber its keys `bigQueueHolesFactor` times: a renumber is
    // O(size) in one apply (a 1-4 s stall at 1M under load, measured), so it is rare, but the `Map` stays
    // bounded; an incremental renumber would remove the stall too (docs/benchmarks.md).
    const frontHoles =
      this.#size <= renumberAtOnceMax || this.#head > this.#size * bigQueueHolesFactor ? this.#head : 0;
    if (this.#end - this.#head - this.#size + frontHoles > Math.max(this.#size, holesSlackMin))
      this.#renumber();
    else if (this.#extra.size > Math.max(this.#size * extraShareMax, holesSlackMin)) this.#ownGeneration();
    const stamp = {};
    // The line continues from the new version, unless another draft took the generation meanwhile.
    if (this.#gen.writer === this.#base.stamp || this.#gen.writer === this.#token) this.#gen.writer = stamp;
    this.#token = undefined;
    return SlotTable.of({ ...this.#parts(), stamp });
  }

  /** Moves `head` past the holes at the front, dropping the pages it leaves behind. */
  #advanceHead(): void {
    while (
      this.#head < this.#end &&
      this.#keys[this.#head >>> pageBits]?.[this.#head & pageMask] === undefined
    ) {
      this.#head++;
      // A page wholly before head is never read again by this line of versions.
      if ((this.#head & pageMask) === 0) {
        const pg = (this.#head >>> pageBits) - 1;
        this.#keys[pg] = undefined as unknown as Page<string>;
        this.#vals[pg] = undefined as unknown as Page<V>;
        this.#owned.delete(pg);
      }
    }
  }

  /**
   * True when `key` may go into the shared generation: this draft is (or now becomes) its writer, and the
   * key never held a slot there. Otherwise it goes into `extra`.
   */
  #mayAdd(hadSlot: boolean): boolean {
    const gen = this.#gen;
    const mine = this.#token !== undefined && gen.writer === this.#token;
    if (!mine) {
      if (gen.writer !== this.#base.stamp) return false;
      this.#token = {};
      gen.writer = this.#token;
    }
    return !hadSlot;
  }

  /** A generation of this draft's own, from its live keys; `extra` is folded into it. */
  #ownGeneration(): void {
    this.#token = {};
    const next = new Generation(this.#token);
    for (const s of slotsOf(this.#parts()))
      next.set((this.#keys[s >>> pageBits] as Page<string>)[s & pageMask] as string, s);
    this.#gen = next;
    this.#extra = IMap();
  }

  /** Packs the live keys into slots 0..size-1, in order, under a new generation. */
  #renumber(): void {
    const keys: Page<string>[] = [];
    const vals: Page<V>[] = [];
    this.#token = {};
    const gen = new Generation(this.#token);
    let n = 0;
    for (const s of slotsOf(this.#parts())) {
      const pg = n >>> pageBits;
      if ((n & pageMask) === 0) {
        keys.push(new Array(slotPageSize));
        vals.push(new Array(slotPageSize));
      }
      const k = (this.#keys[s >>> pageBits] as Page<string>)[s & pageMask] as string;
      (keys[pg] as Page<string>)[n & pageMask] = k;
      (vals[pg] as Page<V>)[n & pageMask] = (this.#vals[s >>> pageBits] as Page<V>)[s & pageMask];
      gen.set(k, n);
      n++;
    }
    assert(n === this.#size, 'a renumbered table keeps every live key', { n, size: this.#size });
    this.#keys = keys;
    this.#vals = vals;
    this.#gen = gen;
    this.#extra = IMap();
    this.#end = n;
    this.#head = 0;
    this.#owned.clear();
    for (let i = 0; i < keys.length; i++) this.#owned.add(i);
  }

  /** Makes page `pg` this draft's own (a copy, or a new page), so it can be written in place. */
  #page(pg: number): void {
    if (this.#owned.has(pg)) return;
    const k = this.#keys[pg];
    const v = this.#vals[pg];
    this.#keys[pg] = k === undefined ? new Array(slotPageSize) : k.slice();
    this.#vals[pg] = v === undefined ? new Array(slotPageSize) : v.slice();
    this.#owned.add(pg);
  }
}

function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Object.keys(a).filter((k) => (a as Record<string, unknown>)[k] !== undefined);
  const kb = Object.keys(b).filter((k) => (b as Record<string, unknown>)[k] !== undefined);
  if (ka.length !== kb.length) return false;
  for (const k of ka) {
    if (!deepEqual((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k])) return false;
  }
  return true;
}

/** A table of a plain map's entries, in its order. */
export function slotTableOf<V>(m: ReadonlyMap<string, V>): SlotTable<V> {
  const draft = SlotTable.empty<V>().edit();
  for (const [k, v] of m) draft.set(k, v);
  return draft.publish();
}
