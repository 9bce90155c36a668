/**
 * SlotTable: an immutable map from string keys to values, laid out as dense slots. A key's slot comes from a
 * key map (an open-addressing hash table over typed arrays, `KeyMap`) shared by a line of versions; the keys,
 * values and a liveness bitmap live in paged columns indexed by slot, copied page by page on write (as the
 * ClusterIndex's columns are), so publishing a version copies only the page table and the pages a draft
 * touched, and a reader holding an older version keeps seeing exactly that version.
 *
 * Why one key map can be shared by every version, forks and dropped drafts included: the map stores no keys,
 * only (hash, slot) pairs, and never deletes one. A version finds a key by probing the entries with the key's
 * hash and taking the first whose slot this version holds live with that very key in its own key column
 * (`holds`). A version's live keys are distinct, so any entry that passes names the right slot, and an entry
 * added by another line (a fork writing the same slot numbers, a dropped draft, an older slot of a key that
 * was removed and added back) fails the check and is skipped. So every draft simply adds its new keys' entries
 * to the map it reads; what others added is at worst a probe step. A key that was removed and set again gets a
 * new slot at the end and a second entry.
 *
 * Slot order is insertion order, so `keys()` lists the oldest live key first (the dedup table evicts from
 * there). A removal only clears the slot's bit in its page's liveness bitmap (a 32-byte copy, not the 4 KiB of
 * key and value pages): the key and value stay in the shared page until a draft copies that page for a write
 * (the copy drops dead slots), the head moves past it, or a renumber; so what a version retains beyond its
 * live entries is bounded by its holes, which the renumber below bounds by the live count. A value changed in
 * place copies the values page alone (and the bitmap); the keys page stays shared.
 *
 * Holes stay until a draft renumbers densely (keeping the order), once holes outnumber live keys. Front holes
 * (a queue's evictions) drop their pages as the head passes; their stale key-map entries are dropped by a
 * renumber in one publish while the table is small, and past `renumberAtOnceMax` live keys by a compaction:
 * a new key map filled a bounded slice per insert from the old one (slots unchanged), which the line switches
 * to once complete. A key map grows the same way (a table twice the size filled a slice per insert while the
 * old one stays the one read), so no single call rehashes millions of keys. Still O(size) in one publish: a
 * renumber for holes in the middle (more than the live keys) and the one at 2^29 slots.
 *
 * A restore appends keys it knows are new with `appendUnindexed`: slot columns only, the key map filled in one
 * pass sorted by cell before the draft's next lookup, write or publish (`KeyMap.insertSorted`).
 *
 * Values are an array per page by default. A table may instead hold them in columns (`ValuePages`: typed arrays
 * and shared strings per page, see dedup-table.ts), so a million entries are not a million small objects for
 * the GC to mark; such a table copies a value's fields in on `set` and `get` returns a short-lived view. Pages
 * of columns are copied on write exactly as arrays are, so versions stay immutable for readers.
 */
import { assert } from '../../src/lib/assert.js';

const pageBits = 8;
/** Slots per page: a draft copies whole pages of keys and values on first write. */
export const slotPageSize = 1 << pageBits;
const pageMask = slotPageSize - 1;
/** 32-bit words in a page's liveness bitmap. */
const liveWords = slotPageSize >>> 5;
/** Slot numbers are stored as slot + 1 in an `Int32Array`; a table renumbers before it reaches this. */
const slotMax = 2 ** 30;

/**
 * Tuning of the key map, read when a map is made or grows; tests lower them to reach growth, compaction and
 * reads mid-move with few keys.
 * - `initialCells`: cells of a new empty map (a power of two).
 * - `holesSlackMin`: holes (and stale key-map entries) kept before a renumber or compaction, at least.
 * - `renumberAtOnceMax`: live keys up to which a renumber (O(size), in one publish) is cheap enough to do for
 *   front holes too; a bigger table compacts its key map instead.
 * - `moveSpread`: a growth finishes within 1/`moveSpread` of the inserts the old table still has room for (a
 *   compaction within 1/`moveSpread` of the slack); higher finishes sooner, moving more cells per insert.
 */
export const keyMapTuning = {
  initialCells: 64,
  holesSlackMin: 4096,
  moveSpread: 2,
  renumberAtOnceMax: 65_536,
};

/** @internal How often each path ran (tests check that they reached it). */
export const slotTableCounts = {
  growths: 0,
  compactions: 0,
  compactionsDone: 0,
  renumbers: 0,
  /** Renumbers that built the new key map from the old one's cells, or by hashing the keys (see `#renumber`). */
  renumbersByCells: 0,
  renumbersByKeys: 0,
  /** Keys appended unindexed put into the key map sorted by cell, or one by one (see `#indexAppended`). */
  sortedInserts: 0,
  unindexedOneByOne: 0,
};

/** `insertSorted` sorts by this many top bits of the home cell (a 256 KiB count table at most). */
const sortedInsertBucketBits = 16;

/** A map's entries stay at most this share of its cells (linear probing stays short)... */
const loadMax = 0.5;
/** ...and it starts a growth at this share, so the old table has room for the inserts made while it moves. */
const growAt = 0.375;

function cellsFor(keys: number): number {
  let cells = keyMapTuning.initialCells;
  while (cells * growAt < keys) cells *= 2;
  assert(cells <= 2 ** 29, 'a key map stays within a typed array', { keys, cells });
  return cells;
}

/** FNV-1a of a key's characters, then murmur3's finaliser so the low bits (the cell index) are mixed. */
function hashOf(key: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193);
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return h ^ (h >>> 16);
}

/** Puts (slot + 1, hash) into the first empty cell of its probe sequence; returns that cell. */
function put(table: Int32Array, h: number, slotPlus1: number): number {
  const mask = (table.length >>> 1) - 1;
  let c = h & mask;
  while (table[2 * c] !== 0) c = (c + 1) & mask;
  table[2 * c] = slotPlus1;
  table[2 * c + 1] = h;
  return c;
}

/**
 * (slot, hash) pairs in open addressing, one cell = two int32s side by side (slot + 1, 0 for empty; the key's
 * hash, so a probe compares strings only on a hash match). Entries are never removed.
 *
 * Growth: at `growAt` of its cells the map allocates a table twice the size and copies the old cells into it
 * in order, a slice per insert; the old table stays the one read (it holds everything) and takes the inserts
 * meanwhile, an insert landing in a cell already copied is put in the new table too; once all are copied the
 * new table replaces it. Copying in order touches the new table's memory in order: a fresh table is zero pages
 * the kernel maps on first touch, and inserts scattered over a 100 MiB table cost a page fault each (measured:
 * ~30 ms of faults in one 1,000-create batch at 2M keys when new keys went straight to the new table).
 */
class KeyMap {
  cells: Int32Array;
  /** The table being filled during a growth (never read until it replaces `cells`). */
  #next: Int32Array | undefined;
  #cursor = 0;
  #cellsPerInsert = 0;
  /** Entries added (all lines, duplicates included). */
  count = 0;
  /** `count` when this map became a line's map by a compaction: what a further compaction could not drop. */
  floor = 0;

  constructor(keys: number) {
    this.cells = new Int32Array(2 * cellsFor(keys));
  }

  insert(h: number, slot: number): void {
    if (this.#next !== undefined) {
      if (this.count + 1 > (this.cells.length >>> 1) * loadMax) this.#move(Number.POSITIVE_INFINITY);
      else this.#move(this.#cellsPerInsert);
    }
    if (this.#next === undefined && this.count + 1 > (this.cells.length >>> 1) * growAt) {
      this.#grow(cellsFor(this.count + 1));
    }
    const c = put(this.cells, h, slot + 1);
    if (this.#next !== undefined && c < this.#cursor) put(this.#next, h, slot + 1);
    this.count++;
  }

  /** True when `keys` more entries fit without a growth and none is in flight (`insertSorted` may run). */
  fitsAtOnce(keys: number): boolean {
    return this.#next === undefined && this.count + keys <= (this.cells.length >>> 1) * growAt;
  }

  /**
   * Adds `n` entries (slot `firstSlot + i`, hash `hashes[i]`) in the order of their home cells rather than
   * their slots: a restore's million keys inserted one by one probed and wrote a random cell of a 32 MiB table
   * each (a cache and TLB miss per key on top of the table's first-touch page faults: 28% of a restore with
   * the lookups before them); in cell order the writes sweep the table once (the faults remain, docs/
   * benchmarks.md). Each probe compares equal hashes with `same(slot, newSlot)` (true: the key is already
   * there, a caller error). The caller checked `fitsAtOnce(n)`.
   */
  insertSorted(
    hashes: Int32Array,
    n: number,
    firstSlot: number,
    same: (slot: number, newSlot: number) => boolean,
  ): void {
    assert(this.fitsAtOnce(n), 'a sorted insert fits the map as it is', { n, count: this.count });
    const table = this.cells;
    const mask = (table.length >>> 1) - 1;
    // A counting sort by the home cell's top bits: cells of one bucket lie within a few cache lines.
    const shift = Math.max(0, 31 - Math.clz32(mask + 1) - sortedInsertBucketBits);
    const starts = new Int32Array(((mask + 1) >>> shift) + 1);
    for (let i = 0; i < n; i++) {
      const b = (((hashes[i] as number) & mask) >>> shift) + 1;
      starts[b] = (starts[b] as number) + 1;
    }
    for (let b = 1; b < starts.length; b++) starts[b] = (starts[b] as number) + (starts[b - 1] as number);
    const order = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      const b = ((hashes[i] as number) & mask) >>> shift;
      const at = starts[b] as number;
      order[at] = i;
      starts[b] = at + 1;
    }
    for (let k = 0; k < n; k++) {
      const i = order[k] as number;
      const h = hashes[i] as number;
      let c = h & mask;
      for (let v = table[2 * c] as number; v !== 0; v = table[2 * c] as number) {
        if (table[2 * c + 1] === h && same(v - 1, firstSlot + i)) {
          assert(false, 'a key appended unindexed was not in the table', { slot: firstSlot + i, at: v - 1 });
        }
        c = (c + 1) & mask;
      }
      table[2 * c] = firstSlot + i + 1;
      table[2 * c + 1] = h;
    }
    this.count += n;
  }

  /** Makes room for `keys` entries in all: at once while empty, else by a growth moved a slice per insert. */
  reserve(keys: number): void {
    if (keys <= (this.cells.length >>> 1) * growAt) return;
    if (this.#next !== undefined) this.#move(Number.POSITIVE_INFINITY);
    if (this.count === 0) this.cells = new Int32Array(2 * cellsFor(keys));
    else this.#grow(cellsFor(keys));
  }

  #grow(cells: number): void {
    slotTableCounts.growths++;
    const old = this.cells.length >>> 1;
    this.#next = new Int32Array(2 * cells);
    this.#cursor = 0;
    const headroom = old * loadMax - this.count;
    this.#cellsPerInsert = Math.ceil(old / Math.max(1, headroom / keyMapTuning.moveSpread));
  }

  /** Copies up to `cells` more cells into the new table; it replaces the old one once all are copied. */
  #move(cells: number): void {
    const from = this.cells;
    const to = this.#next as Int32Array;
    const stop = Math.min(from.length >>> 1, this.#cursor + cells);
    for (let c = this.#cursor; c < stop; c++) {
      const v = from[2 * c] as number;
      if (v !== 0) put(to, from[2 * c + 1] as number, v);
    }
    this.#cursor = stop;
    if (stop === from.length >>> 1) {
      this.cells = to;
      this.#next = undefined;
    }
  }
}

/**
 * A key map being rebuilt without the entries of slots before `minSlot` (front holes), in two phases, each a
 * bounded slice per insert. First its new table is touched in order (written, so every memory page of it is
 * mapped) while the line keeps reading and adding to the old map alone: a fresh table is zero pages the
 * kernel maps on first write, and keys written straight into it at hashed positions took a page fault each
 * (~16 µs on the benchmark's VM; a 1,000-key batch faulted ~1,000 pages). Then `next` takes every key added
 * meanwhile and the old map's entries at or past `minSlot` are copied into it. Shared by the versions of the
 * line that started it (all have head ≥ `minSlot`); whichever draft moves the last cell switches to `next`.
 * While copying, a lookup reads `next`, then the old map.
 */
class Compaction {
  readonly next: KeyMap;
  readonly #old: KeyMap;
  /** The old map's table as it stood when the copy began (complete: a growth in flight fills its old one). */
  #from: Int32Array | undefined;
  readonly #minSlot: number;
  readonly #touchPerInsert: number;
  readonly #copyPerInsert: number;
  #touched = 0;
  #cursor = 0;

  constructor(from: KeyMap, minSlot: number, liveSpan: number, inserts: number) {
    this.next = new KeyMap(liveSpan + inserts);
    slotTableCounts.compactions++;
    this.#old = from;
    this.#minSlot = minSlot;
    // Each phase gets half the inserts; the copy's rate allows for the old table to grow during the touch.
    const half = Math.max(1, Math.floor(inserts / 2));
    this.#touchPerInsert = Math.ceil(this.next.cells.length / half);
    this.#copyPerInsert = Math.ceil((2 * (from.cells.length >>> 1)) / half);
  }

  /** True once `next` is wholly touched and takes the line's new keys (lookups read it first). */
  get copying(): boolean {
    return this.#from !== undefined;
  }

  get done(): boolean {
    return this.#from !== undefined && this.#cursor === this.#from.length >>> 1;
  }

  /** Adds a key of the line: to the old map while `next` is being touched, then to `next`; moves a slice. */
  insert(h: number, slot: number): void {
    if (this.#from === undefined) {
      this.#old.insert(h, slot);
      this.#touch();
    } else {
      this.next.insert(h, slot);
      this.#copy();
    }
  }

  /** Writes the next slice of `next`'s table in order (its cells are all zero: the values do not change). */
  #touch(): void {
    const t = this.next.cells;
    const stop = Math.min(t.length, this.#touched + this.#touchPerInsert);
    // One write per 4 KiB memory page (1,024 int32s) maps it; the fill keeps V8 from skipping a no-op.
    t.fill(0, this.#touched, stop);
    this.#touched = stop;
    if (stop === t.length) this.#from = this.#old.cells;
  }

  /** Copies the next slice of the old map's entries at or past `minSlot` into `next`. */
  #copy(): void {
    const t = this.#from as Int32Array;
    const stop = Math.min(t.length >>> 1, this.#cursor + this.#copyPerInsert);
    for (let c = this.#cursor; c < stop; c++) {
      const v = t[2 * c] as number;
      if (v > this.#minSlot) this.next.insert(t[2 * c + 1] as number, v - 1);
    }
    this.#cursor = stop;
  }
}

type Page<T> = (T | undefined)[];

/** No keys waiting for the key map (`appendUnindexed`); the first such key makes a buffer of this many. */
const noHashes = new Int32Array(0);
const unindexedHashesMin = 1024;

/**
 * How a table holds its values in a page of `slotPageSize` slots when not as an array (see the header): `write`
 * copies the value's fields into the page's columns, `read` builds a view of them (the slot's key is given, so
 * a column may leave out a field that equals it). A page is written only by the draft that made or copied it.
 */
export interface ValuePages<V> {
  /** A page of empty slots. */
  create(): object;
  /** A copy the draft may write; `clear` then runs for each of its dead slots. */
  copy(page: object): object;
  read(page: object, slot: number, key: string): V;
  write(page: object, slot: number, value: V, key: string): void;
  /** Copies slot `fromSlot` of `from` (key `key`) into slot `toSlot` of `to` (a renumber), without a view. */
  move(from: object, fromSlot: number, to: object, toSlot: number, key: string): void;
  /** Drops what a dead slot references, so the GC can take it with the shared page's copy. */
  clear(page: object, slot: number): void;
}

/**
 * One version's columns (a draft holds a mutable one). Page `p` (slots p·256…) sits at index p − `pageBase` of
 * `keys`, `vals` and `live`: the pages before the head are trimmed off the front when a draft starts.
 */
interface Cols<V> {
  map: KeyMap;
  comp: Compaction | undefined;
  keys: (Page<string> | undefined)[];
  /** Arrays of values, or pages of `vp`'s columns when the table has them. */
  vals: (Page<V> | object | undefined)[];
  live: (Uint32Array | undefined)[];
  /** The table's value columns; undefined: an array per page. */
  vp: ValuePages<V> | undefined;
  pageBase: number;
  /** One past the last slot ever given in this line since its last renumber. */
  end: number;
  /** Every slot below this is a hole (the table is a queue at the front: eviction). */
  head: number;
  size: number;
}

type Parts<V> = Readonly<Cols<V>>;

function isLive<V>(c: Parts<V>, s: number): boolean {
  const w = c.live[(s >>> pageBits) - c.pageBase];
  return w !== undefined && (((w[(s >>> 5) & (liveWords - 1)] as number) >>> (s & 31)) & 1) === 1;
}

/** True when this version holds `key` live at slot `s`. */
function holds<V>(c: Parts<V>, s: number, key: string): boolean {
  if (s < c.head || s >= c.end || !isLive(c, s)) return false;
  return (c.keys[(s >>> pageBits) - c.pageBase] as Page<string>)[s & pageMask] === key;
}

function probe<V>(c: Parts<V>, table: Int32Array, key: string, h: number): number {
  const mask = (table.length >>> 1) - 1;
  for (let i = h & mask; ; i = (i + 1) & mask) {
    const v = table[2 * i] as number;
    if (v === 0) return -1;
    if (table[2 * i + 1] === h && holds(c, v - 1, key)) return v - 1;
  }
}

/** The slot where this version holds `key` live, else -1. */
function find<V>(c: Parts<V>, key: string, h: number): number {
  if (c.comp?.copying) {
    const s = probe(c, c.comp.next.cells, key, h);
    if (s >= 0) return s;
  }
  return probe(c, c.map.cells, key, h);
}

function valueAt<V>(c: Parts<V>, s: number): V {
  const page = c.vals[(s >>> pageBits) - c.pageBase];
  if (c.vp === undefined) return (page as Page<V>)[s & pageMask] as V;
  return c.vp.read(page as object, s & pageMask, keyAt(c, s));
}

/** A new empty values page. */
function newValPage<V>(c: Parts<V>): Page<V> | object {
  return c.vp === undefined ? new Array(slotPageSize) : c.vp.create();
}

/** A copy of a values page a draft may write. */
function copyValPage<V>(c: Parts<V>, page: Page<V> | object): Page<V> | object {
  return c.vp === undefined ? (page as Page<V>).slice() : c.vp.copy(page);
}

function writeVal<V>(c: Parts<V>, page: Page<V> | object, i: number, value: V, key: string): void {
  if (c.vp === undefined) (page as Page<V>)[i] = value;
  else c.vp.write(page, i, value, key);
}

function clearVal<V>(c: Parts<V>, page: Page<V> | object, i: number): void {
  if (c.vp === undefined) (page as Page<V>)[i] = undefined;
  else c.vp.clear(page, i);
}

function keyAt<V>(c: Parts<V>, s: number): string {
  return (c.keys[(s >>> pageBits) - c.pageBase] as Page<string>)[s & pageMask] as string;
}

/** The live slots, in order. */
function* slotsOf<V>(c: Parts<V>): Generator<number> {
  for (let s = c.head; s < c.end; ) {
    const w = c.live[(s >>> pageBits) - c.pageBase];
    if (w === undefined) {
      s = (s | pageMask) + 1; // An empty page: skip it.
      continue;
    }
    const word = w[(s >>> 5) & (liveWords - 1)] as number;
    if (word === 0) {
      s = (s | 31) + 1;
      continue;
    }
    if (((word >>> (s & 31)) & 1) === 1) yield s;
    s++;
  }
}

function keyMapSizeOf<V>(c: Parts<V>): number {
  return c.map.count + (c.comp?.copying ? c.comp.next.count : 0);
}

/** One immutable version. */
export class SlotTable<V> {
  readonly #p: Parts<V>;
  private constructor(p: Parts<V>) {
    this.#p = p;
  }

  /**
   * An empty table; `capacityHint` keys fit its key map without a growth (a restore knows its counts). With
   * `values`, its values are held in those columns (see `ValuePages`), else in arrays.
   */
  static empty<V>(capacityHint = 0, values?: ValuePages<V>): SlotTable<V> {
    return new SlotTable<V>({
      map: new KeyMap(capacityHint),
      comp: undefined,
      keys: [],
      vals: [],
      live: [],
      vp: values,
      pageBase: 0,
      end: 0,
      head: 0,
      size: 0,
    });
  }

  /** @internal */
  static of<V>(p: Parts<V>): SlotTable<V> {
    return new SlotTable(p);
  }

  get size(): number {
    return this.#p.size;
  }
  /** @internal Entries in the key map(s) this version reads (its line's and others', so at least `size`). */
  get keyMapSize(): number {
    return keyMapSizeOf(this.#p);
  }
  get(key: string): V | undefined {
    const s = find(this.#p, key, hashOf(key));
    return s < 0 ? undefined : valueAt(this.#p, s);
  }
  has(key: string): boolean {
    return find(this.#p, key, hashOf(key)) >= 0;
  }
  /** The oldest live key (first inserted), or undefined when empty. */
  firstKey(): string | undefined {
    for (const s of slotsOf(this.#p)) return keyAt(this.#p, s);
    return undefined;
  }
  *keys(): IterableIterator<string> {
    for (const s of slotsOf(this.#p)) yield keyAt(this.#p, s);
  }
  *values(): IterableIterator<V> {
    for (const s of slotsOf(this.#p)) yield valueAt(this.#p, s);
  }
  *entries(): IterableIterator<[string, V]> {
    const p = this.#p;
    for (const s of slotsOf(p)) yield [keyAt(p, s), valueAt(p, s)];
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

/** A mutable working copy; `publish()` returns the next version (the draft is done with then). */
export class SlotTableDraft<V> {
  readonly #c: Cols<V>;
  /** Pages (by page number) whose keys, values and bitmap this draft copied or made, so writes in place. */
  readonly #ownedPages = new Set<number>();
  /** Pages whose liveness bitmap alone this draft copied (a removal). */
  readonly #ownedLive = new Set<number>();
  /** Pages whose values (and bitmap) alone this draft copied (a value changed in place: the keys stay shared). */
  readonly #ownedVals = new Set<number>();

  constructor(base: Parts<V>) {
    // Pages wholly before the head are never read again by this line: trim them off the page table.
    const drop = Math.max(0, (base.head >>> pageBits) - base.pageBase);
    this.#c = {
      map: base.map,
      comp: base.comp,
      keys: base.keys.slice(drop),
      vals: base.vals.slice(drop),
      live: base.live.slice(drop),
      vp: base.vp,
      pageBase: base.pageBase + drop,
      end: base.end,
      head: base.head,
      size: base.size,
    };
    this.#finishCompaction();
  }

  get size(): number {
    return this.#c.size;
  }
  get(key: string): V | undefined {
    if (this.#unindexedFrom >= 0) this.#indexAppended();
    const s = find(this.#c, key, hashOf(key));
    return s < 0 ? undefined : valueAt(this.#c, s);
  }
  has(key: string): boolean {
    if (this.#unindexedFrom >= 0) this.#indexAppended();
    return find(this.#c, key, hashOf(key)) >= 0;
  }
  firstKey(): string | undefined {
    for (const s of slotsOf(this.#c)) return keyAt(this.#c, s);
    return undefined;
  }
  /** The live entries as this draft stands, oldest first (do not write while iterating). */
  *entries(): IterableIterator<[string, V]> {
    for (const s of slotsOf(this.#c)) yield [keyAt(this.#c, s), valueAt(this.#c, s)];
  }

  /** Makes room for `keys` more keys in the key map, so adding them never grows it (a restore's counts). */
  reserve(keys: number): void {
    assert(Number.isSafeInteger(keys) && keys >= 0, 'a reservation is a count of keys', { keys });
    if (this.#unindexedFrom >= 0) this.#indexAppended();
    const m = this.#c.comp?.copying ? this.#c.comp.next : this.#c.map;
    m.reserve(m.count + Math.min(keys, slotMax));
  }

  /** Sets `key` to `value`: in place when present, else in a new slot at the end. */
  set(key: string, value: V): void {
    assert(value !== undefined, 'a slot table holds no undefined values', { key });
    if (this.#unindexedFrom >= 0) this.#indexAppended();
    const c = this.#c;
    const h = hashOf(key);
    const live = find(c, key, h);
    if (live >= 0) {
      writeVal(c, c.vals[this.#ownVals(live >>> pageBits)] as object, live & pageMask, value, key);
      return;
    }
    this.#append(key, h, value);
  }

  /**
   * Adds `key` with `value` when absent and returns undefined; when present, returns its value and changes
   * nothing (one lookup for what `has` then `set` would do in two).
   */
  addIfAbsent(key: string, value: V): V | undefined {
    assert(value !== undefined, 'a slot table holds no undefined values', { key });
    if (this.#unindexedFrom >= 0) this.#indexAppended();
    const c = this.#c;
    const h = hashOf(key);
    const live = find(c, key, h);
    if (live >= 0) return valueAt(c, live);
    this.#append(key, h, value);
    return undefined;
  }

  /** Puts an absent key (hash `h`) in a new slot at the end. */
  #append(key: string, h: number, value: V): void {
    this.#insertKey(h, this.#appendSlot(key, value));
  }

  /** Writes an absent key and its value into a new slot at the end (columns only); returns the slot. */
  #appendSlot(key: string, value: V): number {
    const c = this.#c;
    assert(c.end < slotMax, 'a slot table renumbers before its slots overflow', { end: c.end });
    const slot = c.end++;
    const at = this.#ownPage(slot >>> pageBits);
    (c.keys[at] as Page<string>)[slot & pageMask] = key;
    writeVal(c, c.vals[at] as object, slot & pageMask, value, key);
    const w = c.live[at] as Uint32Array;
    w[(slot >>> 5) & (liveWords - 1)] = (w[(slot >>> 5) & (liveWords - 1)] as number) | (1 << (slot & 31));
    c.size++;
    return slot;
  }

  /** Adds slot `slot`'s key (hash `h`) to the line's key map, or to its compaction. */
  #insertKey(h: number, slot: number): void {
    const c = this.#c;
    if (c.comp === undefined) c.map.insert(h, slot);
    else {
      c.comp.insert(h, slot);
      this.#finishCompaction();
    }
  }

  /**
   * Appends `key`, which the caller knows is absent (a restore's records), without touching the key map: its
   * hash is kept, and the keys appended so go into the map together, sorted by cell (`KeyMap.insertSorted`),
   * before this draft's next lookup, write or publish. A key that was present after all fails an assertion
   * then (the draft is not to be used after that). Iteration, `size` and `firstKey` read the slots alone.
   */
  appendUnindexed(key: string, value: V): void {
    assert(value !== undefined, 'a slot table holds no undefined values', { key });
    if (this.#unindexedFrom < 0) this.#unindexedFrom = this.#c.end;
    const i = this.#c.end - this.#unindexedFrom;
    if (i === this.#unindexedHashes.length) {
      const grown = new Int32Array(Math.max(unindexedHashesMin, 2 * i));
      grown.set(this.#unindexedHashes);
      this.#unindexedHashes = grown;
    }
    this.#unindexedHashes[i] = hashOf(key);
    this.#appendSlot(key, value);
  }

  /** Slots from here to the end were appended by `appendUnindexed` and are not in the key map yet (-1: none). */
  #unindexedFrom = -1;
  /** Their hashes, by slot − `#unindexedFrom`. */
  #unindexedHashes = noHashes;

  /** Puts the keys `appendUnindexed` left out into the key map: in one sorted pass when the map has room. */
  #indexAppended(): void {
    const c = this.#c;
    const from = this.#unindexedFrom;
    const n = c.end - from;
    const hashes = this.#unindexedHashes;
    this.#unindexedFrom = -1;
    this.#unindexedHashes = noHashes;
    if (c.comp === undefined && c.map.count === 0) c.map.reserve(n);
    if (c.comp === undefined && c.map.fitsAtOnce(n)) {
      slotTableCounts.sortedInserts++;
      c.map.insertSorted(hashes, n, from, (slot, newSlot) => holds(c, slot, keyAt(c, newSlot)));
      return;
    }
    // A growth or compaction in flight, or no room: one by one, as `set` adds them.
    slotTableCounts.unindexedOneByOne++;
    for (let i = 0; i < n; i++) {
      const key = keyAt(c, from + i);
      assert(find(c, key, hashes[i] as number) < 0, 'a key appended unindexed was not in the table', { key });
      this.#insertKey(hashes[i] as number, from + i);
    }
  }

  /** Removes `key`; false when it was absent. */
  remove(key: string): boolean {
    if (this.#unindexedFrom >= 0) this.#indexAppended();
    const s = find(this.#c, key, hashOf(key));
    if (s < 0) return false;
    this.#removeAt(s);
    return true;
  }

  /**
   * Removes the `n` oldest live keys (all of them when fewer): what `remove(firstKey())` done `n` times does,
   * without hashing each key and probing the key map for it (a cold string and a cold cell each: the cleanups
   * table drops 2,048 at a time, ~2% of a 1M-event simulation when it went key by key).
   */
  dropOldest(n: number): void {
    assert(Number.isSafeInteger(n) && n >= 0, 'a count of keys to drop', { n });
    if (this.#unindexedFrom >= 0) this.#indexAppended();
    const c = this.#c;
    for (let i = 0; i < n && c.size > 0; i++) {
      // `head` is the oldest live slot whenever the table holds a key: a removal there moves it past the holes.
      assert(isLive(c, c.head), 'the head of a non-empty table is live', { head: c.head, size: c.size });
      this.#removeAt(c.head);
    }
  }

  /** Removes `key` and returns the value it had, or undefined when absent (`get` and `remove` in one lookup). */
  take(key: string): V | undefined {
    if (this.#unindexedFrom >= 0) this.#indexAppended();
    const s = find(this.#c, key, hashOf(key));
    if (s < 0) return undefined;
    const value = valueAt(this.#c, s);
    this.#removeAt(s);
    return value;
  }

  #removeAt(s: number): void {
    const c = this.#c;
    const pg = s >>> pageBits;
    const at = this.#ownLive(pg);
    const w = c.live[at] as Uint32Array;
    w[(s >>> 5) & (liveWords - 1)] = (w[(s >>> 5) & (liveWords - 1)] as number) & ~(1 << (s & 31));
    // On a page of this draft's own the entry can go now; on a shared one it waits for a copy (see above).
    if (this.#ownedPages.has(pg)) (c.keys[at] as Page<string>)[s & pageMask] = undefined;
    if (this.#ownedPages.has(pg) || this.#ownedVals.has(pg)) clearVal(c, c.vals[at] as object, s & pageMask);
    c.size--;
    if (s === c.head) this.#advanceHead();
  }

  publish(): SlotTable<V> {
    if (this.#unindexedFrom >= 0) this.#indexAppended();
    const c = this.#c;
    const slack = Math.max(c.size, keyMapTuning.holesSlackMin);
    // Holes before `head` count too while the table is small enough to renumber within one apply: their
    // pages are gone, but their entries stay in the key map until a renumber (or a compaction, for a big
    // table), so a table used as a queue would otherwise grow its key map by every key it ever held.
    const small = c.size <= keyMapTuning.renumberAtOnceMax;
    const holes = c.end - c.head - c.size + (small ? c.head : 0);
    // Entries for no slot of this line's span: front holes' keys, other lines' keys, re-added keys' old slots.
    const stale = keyMapSizeOf(c) - (c.end - c.head);
    if (holes > slack || c.end >= slotMax / 2 || (small && stale > slack)) this.#renumber();
    else if (c.comp === undefined && stale > slack && c.map.count - c.map.floor > slack) {
      // (The floor: entries of other lines a compaction copies along are not worth compacting again for.)
      c.comp = new Compaction(c.map, c.head, c.end - c.head, Math.ceil(slack / keyMapTuning.moveSpread));
    }
    return SlotTable.of({ ...c });
  }

  /** Once the compaction has moved its last cell, this line reads (and adds to) its new map alone. */
  #finishCompaction(): void {
    const comp = this.#c.comp;
    if (comp === undefined || !comp.done) return;
    slotTableCounts.compactionsDone++;
    comp.next.floor = comp.next.count;
    this.#c.map = comp.next;
    this.#c.comp = undefined;
  }

  /** Moves `head` past the holes at the front, dropping the pages it leaves behind. */
  #advanceHead(): void {
    const c = this.#c;
    while (c.head < c.end && !isLive(c, c.head)) {
      c.head++;
      // A page wholly before head is never read again by this line of versions.
      if ((c.head & pageMask) === 0) {
        const pg = (c.head >>> pageBits) - 1;
        const at = pg - c.pageBase;
        c.keys[at] = undefined;
        c.vals[at] = undefined;
        c.live[at] = undefined;
        this.#ownedPages.delete(pg);
        this.#ownedLive.delete(pg);
        this.#ownedVals.delete(pg);
      }
    }
  }

  /** Packs the live keys into slots 0..size-1, in order, under a new key map sized for them. */
  #renumber(): void {
    const c = this.#c;
    const keys: Page<string>[] = [];
    const vals: (Page<V> | object)[] = [];
    const live: Uint32Array[] = [];
    // Room for the keys added until the next renumber (holes past the live count), so a small table does not
    // grow its map again right away (a 1M simulation spent 2.3% moving cells of maps renumbered too tight); a
    // big one grows incrementally instead of holding twice its size from the start.
    const small = c.size <= keyMapTuning.renumberAtOnceMax;
    const map = new KeyMap(c.size + (small ? Math.max(c.size, keyMapTuning.holesSlackMin) : 0));
    slotTableCounts.renumbers++;
    // The new key map is filled from the old one's cells, which hold each key's hash: hashing the keys again
    // read every key string, cold by then (a third of a renumber's time), and inserting by slot wrote the new
    // table at random where a sweep of the old cells writes it nearly in order. Old slot s is new slot
    // `renumbered[s - head]` (-1: a hole). Not while a compaction is in flight (the entries are in two maps).
    const from = c.comp === undefined ? c.map.cells : undefined;
    const renumbered = from === undefined ? undefined : new Int32Array(c.end - c.head).fill(-1);
    if (from === undefined) slotTableCounts.renumbersByKeys++;
    else slotTableCounts.renumbersByCells++;
    let n = 0;
    for (const s of slotsOf(c)) {
      const pg = n >>> pageBits;
      if ((n & pageMask) === 0) {
        keys.push(new Array(slotPageSize));
        vals.push(newValPage(c));
        live.push(new Uint32Array(liveWords));
      }
      const k = keyAt(c, s);
      (keys[pg] as Page<string>)[n & pageMask] = k;
      const from = c.vals[(s >>> pageBits) - c.pageBase] as Page<V> | object;
      if (c.vp === undefined) (vals[pg] as Page<V>)[n & pageMask] = (from as Page<V>)[s & pageMask];
      else c.vp.move(from, s & pageMask, vals[pg] as object, n & pageMask, k);
      const w = live[pg] as Uint32Array;
      w[(n >>> 5) & (liveWords - 1)] = (w[(n >>> 5) & (liveWords - 1)] as number) | (1 << (n & 31));
      if (renumbered === undefined) map.insert(hashOf(k), n);
      else renumbered[s - c.head] = n;
      n++;
    }
    assert(n === c.size, 'a renumbered table keeps every live key', { n, size: c.size });
    if (from !== undefined && renumbered !== undefined) {
      // Every live key of this line has its entry here (its hash at its slot). An entry another line added
      // for a slot that is live here is carried along to the new slot: harmless, as before (a lookup checks
      // the key at the slot), and gone once that slot's key is removed. Entries for holes are dropped.
      for (let i = 0; i < from.length; i += 2) {
        const v = from[i] as number;
        if (v === 0 || v <= c.head || v > c.end) continue;
        const to = renumbered[v - 1 - c.head] as number;
        if (to >= 0) map.insert(from[i + 1] as number, to);
      }
    }
    Object.assign(c, { map, comp: undefined, keys, vals, live, pageBase: 0, end: n, head: 0 });
    this.#ownedPages.clear();
    this.#ownedLive.clear();
    this.#ownedVals.clear();
    for (let i = 0; i < keys.length; i++) this.#ownedPages.add(i);
  }

  /** Makes page `pg`'s bitmap this draft's own; returns the page's index in the columns. */
  #ownLive(pg: number): number {
    const c = this.#c;
    const at = pg - c.pageBase;
    if (this.#ownedPages.has(pg) || this.#ownedLive.has(pg) || this.#ownedVals.has(pg)) return at;
    c.live[at] = (c.live[at] as Uint32Array).slice();
    this.#ownedLive.add(pg);
    return at;
  }

  /**
   * Makes page `pg`'s values (and its bitmap) this draft's own, leaving its keys shared: a value changed in
   * place copies one 2 KiB page, not two. The copy leaves out the dead slots' values.
   */
  #ownVals(pg: number): number {
    const c = this.#c;
    const at = pg - c.pageBase;
    if (this.#ownedPages.has(pg) || this.#ownedVals.has(pg)) return at;
    const vals = copyValPage(c, c.vals[at] as object);
    const w = this.#ownedLive.has(pg) ? (c.live[at] as Uint32Array) : (c.live[at] as Uint32Array).slice();
    dropDead(c, undefined, vals, w);
    c.vals[at] = vals;
    c.live[at] = w;
    this.#ownedVals.add(pg);
    return at;
  }

  /**
   * Makes page `pg` this draft's own (a copy, or a new page), so it can be written in place; returns its index
   * in the columns. A copy leaves out the dead slots' keys and values, so they are released with it.
   */
  #ownPage(pg: number): number {
    const c = this.#c;
    const at = pg - c.pageBase;
    if (this.#ownedPages.has(pg)) return at;
    assert(at >= 0, 'a draft writes at or after its head page', { pg, pageBase: c.pageBase });
    const k = c.keys[at];
    if (k === undefined) {
      c.keys[at] = new Array(slotPageSize);
      c.vals[at] = newValPage(c);
      c.live[at] = new Uint32Array(liveWords);
    } else {
      const keys = k.slice();
      const ownsVals = this.#ownedVals.has(pg);
      const vals = ownsVals ? (c.vals[at] as object) : copyValPage(c, c.vals[at] as object);
      const w =
        this.#ownedLive.has(pg) || ownsVals
          ? (c.live[at] as Uint32Array)
          : (c.live[at] as Uint32Array).slice();
      dropDead(c, keys, vals, w);
      c.keys[at] = keys;
      c.vals[at] = vals;
      c.live[at] = w;
    }
    this.#ownedPages.add(pg);
    return at;
  }
}

/** Clears the values (and keys, when given) of a page's dead slots, given back to the GC with the shared page. */
function dropDead<V>(
  c: Parts<V>,
  keys: Page<string> | undefined,
  vals: Page<V> | object,
  live: Uint32Array,
): void {
  for (let i = 0; i < liveWords; i++) {
    const word = live[i] as number;
    if (word === 0xffffffff) continue;
    for (let b = 0; b < 32; b++) {
      const slot = (i << 5) | b;
      if (((word >>> b) & 1) === 0) {
        if (keys !== undefined) keys[slot] = undefined;
        clearVal(c, vals, slot);
      }
    }
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
  const draft = SlotTable.empty<V>(m.size).edit();
  for (const [k, v] of m) draft.set(k, v);
  return draft.publish();
}
