/**
 * The copy-on-write cluster index.
 *
 * Layout (chosen over an all-`immutable` index after measuring both; see docs/benchmarks.md):
 * - Hot numeric state lives in typed-array **pages** of `pageSize` nodes, one page per group of columns that
 *   change together: capacity, state, class and GPU count (`fix`, written by spec changes only); allocation,
 *   node version and free-capacity bucket (`hot`, written by every allocation, copied with the bucket bitsets
 *   `bits`); per-device free GPU shares (`gpu`). A version is a set of arrays of page references. A builder
 *   copies a page the first time it writes to it and shares every other page with the version it started
 *   from, so a published version never changes, taking a snapshot is O(1) (keep the reference), and a new
 *   version costs O(pages touched) — an allocation copies its page's `hot` and `bits` parts only (~7 of
 *   ~17 KiB), the columns it changes.
 * - Structural state that changes rarely or sparsely (id → slot, classes, anti-affinity and spread counts,
 *   image → nodes) lives in `immutable` persistent maps, which share structure the same way.
 *
 * Indexes that make placement fast:
 * - free CPU in log-scale buckets (two per power of two): a bitset per bucket and page, plus a per-bucket
 *   summary of non-empty pages, so best-fit walks the tightest buckets first and never scans full nodes;
 * - feasibility classes: nodes with identical state, labels and GPU model share one class id, so a request's
 *   label constraints are evaluated once per class, not once per node;
 * - image → nodes, for locality.
 *
 * Only `ready` nodes are in the buckets: nothing else may receive a placement.
 */
import { Map as IMap, Set as ISet, Stack as IStack } from 'immutable';
import { assert } from '../src/lib/assert.js';
import {
  DuplicateNodeError,
  NodeBusyError,
  OverCommitError,
  ReleaseMismatchError,
  UnknownNodeError,
} from './errors.js';
import type { NodeSpec, NodeState, Resources } from './types.js';
import { nodeStates } from './types.js';
import {
  gpuDevicesPerNodeMax,
  gpuMilliPerDevice,
  labelValue,
  normalizeAllocationShape,
  normalizeNodeSpec,
} from './validate.js';

export const pageShift = 8;
/**
 * Nodes per page: small enough that a sparse batch copies little, large enough to keep page arrays short and
 * page copies few. A copy's cost is mostly fixed (a new ArrayBuffer: ~0.7 µs on the benchmark's VM, plus
 * ~0.1 ns a byte), and a dense simulation window touches every page of 5,000 nodes twice. 512 nodes a page
 * took 1–2% off a 1M-event simulation but cost 100-request batches on 100,000 nodes +14% p50 in
 * bench:placement-tail, and 1,024 cost +19% p50 and +45% p99 there: placement latency is the scheduler's hot
 * path, so pages stay at 256 (docs/benchmarks.md, tenth session).
 */
export const pageSize = 1 << pageShift;
const pageMask = pageSize - 1;
/** Free-capacity buckets: two per power of two of the capacity key (see capacityKey). */
export const bucketCount = 64;
const wordsPerPage = pageSize >>> 5;
/** Nodes one index may hold. */
export const nodesMax = 1 << 20;
/** Feasibility classes one index may hold. */
export const classesMax = 1 << 16;

// Numeric columns, column-major inside a page of Int32. The `fix` page holds what only a spec change writes
// (read with `fixCol`), the `hot` page what an allocation writes (read with `hotCol`): two small accessors, not
// one that picks the page, so the placer's per-candidate reads stay small enough to inline.
const cCapCpu = 0;
const cCapMem = 1;
const cCapDisk = 2;
const cState = 3;
const cClass = 4;
const cGpuCount = 5;
const fixColCount = 6;
const cAllocCpu = 0;
const cAllocMem = 1;
const cAllocDisk = 2;
const cVersion = 3;
const cBucket = 4;
const hotColCount = 5;

/** State codes in the `cState` column; `empty` marks a slot with no node. */
const stateCodes: Readonly<Record<NodeState, number>> = { ready: 0, draining: 1, cordoned: 2, down: 3 };
const stateEmpty = 4;
const stateReady = 0;

assert(wordsPerPage * 32 === pageSize, 'page size must be a multiple of 32', { pageSize });
assert(nodeStates.length === 4, 'state codes cover every node state');

/**
 * The reference unit of the free-capacity key: one unit is 1/16 of (1 core, 2 GiB memory, 8 GiB disk). A
 * node's key is the smallest of its free resources counted in these units, i.e. how many reference units it
 * could still host in every dimension at once. Bucketing on one resource alone failed in measurement: nodes
 * out of memory but with CPU to spare piled up in the buckets a CPU-keyed walk visits first.
 */
export const keyRefCpu = 1000;
export const keyRefMemory = 2048;
export const keyRefDisk = 8192;
const keyUnitsPerRef = 16;

/** The capacity key of a free (or requested) vector: min over resources of the amount in reference units. */
export function capacityKey(cpu: number, memory: number, disk: number): number {
  return Math.min(
    Math.floor((cpu * keyUnitsPerRef) / keyRefCpu),
    Math.floor((memory * keyUnitsPerRef) / keyRefMemory),
    Math.floor((disk * keyUnitsPerRef) / keyRefDisk),
  );
}

/**
 * The bucket of a capacity key: monotone, two buckets per power of two. A node that can host a request has,
 * in every resource, at least what the request asks, so its key — and bucket — is at least the request's:
 * a walk may skip every bucket below `bucketOf(capacityKey(request))` without missing a feasible node.
 */
export function bucketOf(key: number): number {
  if (key <= 0) return 0;
  const k = Math.min(key, 0x7fffffff);
  const bits = 32 - Math.clz32(k);
  const half = bits >= 2 ? (k >>> (bits - 2)) & 1 : 0;
  return Math.min(bucketCount - 1, bits * 2 - 1 + half);
}

/** 32-bit words of a slot bitset per page (a mask's `words` hold this many per page, page after page). */
export const maskWordsPerPage = wordsPerPage;

/**
 * A set of slots as a bitset, one bit per slot, `maskWordsPerPage` words per page (IndexReader.scanBucketMasked).
 * `fill(page)` makes the page's words valid; a mask may compute them on first use.
 */
export interface SlotMask {
  readonly words: Uint32Array;
  fill(page: number): void;
}

/** Facts shared by every node of one feasibility class. */
export interface ClassInfo {
  readonly id: number;
  readonly state: NodeState;
  readonly labels: Readonly<Record<string, string>>;
  readonly gpuModel: string;
}

/** Nodes listing more images than this get a Set for `hasImage`; shorter lists are searched in place. */
export const imagesInlineMax = 16;

/** Per-slot facts that are not numbers. Replaced whole when the node is updated. */
export interface NodeMeta {
  readonly spec: NodeSpec;
  /** The spec's images as a Set, only when there are more than `imagesInlineMax` (heap: most nodes list few). */
  readonly imageSet: ReadonlySet<string> | undefined;
}

/** A node as a caller sees it: spec, allocation and what is free. */
export interface NodeView {
  readonly id: string;
  readonly spec: NodeSpec;
  readonly state: NodeState;
  readonly allocated: Resources;
  readonly free: Resources;
  /** Free milli-GPU per device, by device index. */
  readonly gpuFree: readonly number[];
  /** Bumped on every change of this node. */
  readonly version: number;
}

/** What one placement takes from a node, and the groups it counts in. Release takes the same shape back. */
export interface AllocationShape {
  readonly resources: Resources;
  readonly gpuDevices?: readonly { readonly device: number; readonly milli: number }[];
  readonly antiAffinityGroup?: string;
  /** Spread counter key (group and label) and the node's value of that label is looked up on write. */
  readonly spread?: { readonly group: string; readonly label: string };
}

interface IndexData {
  readonly version: number;
  readonly slotCount: number;
  readonly nodeCount: number;
  /** Per page: the fixed columns (capacity, state, class, GPU count). */
  readonly fix: readonly Int32Array[];
  /** Per page: the hot columns (allocation, version, bucket). */
  readonly hot: readonly Int32Array[];
  readonly gpu: readonly Int16Array[];
  readonly bits: readonly Uint32Array[];
  /** Per bucket: one bit per page that holds at least one node of the bucket. */
  readonly summary: readonly Uint32Array[];
  readonly meta: readonly (readonly (NodeMeta | undefined)[])[];
  readonly idToSlot: IMap<string, number>;
  readonly freeSlots: IStack<number>;
  readonly classIds: IMap<string, number>;
  readonly classes: readonly ClassInfo[];
  readonly antiAffinity: IMap<string, IMap<number, number>>;
  readonly spread: IMap<string, IMap<string, number>>;
  readonly images: IMap<string, ISet<number>>;
  /** Feasibility class → its live slots; lets a very selective request visit only the classes it passes. */
  readonly classSlots: IMap<number, ISet<number>>;
  /** Sums over `ready` nodes, for dominant shares and utilisation. */
  readonly readyCapacity: Resources;
  readonly readyAllocated: Resources;
  /** milli-GPU over the devices of ready nodes. */
  readonly readyGpuMilli: number;
}

/** The builder's working copy: the same shape, writable. */
type MutableIndexData = {
  -readonly [K in keyof IndexData]: IndexData[K];
} & {
  fix: Int32Array[];
  hot: Int32Array[];
  gpu: Int16Array[];
  bits: Uint32Array[];
  summary: Uint32Array[];
  meta: (NodeMeta | undefined)[][];
  classes: ClassInfo[];
  readyCapacity: { cpu: number; memory: number; disk: number };
  readyAllocated: { cpu: number; memory: number; disk: number };
};

const zero: Resources = Object.freeze({ cpu: 0, memory: 0, disk: 0 });
const noEntries: readonly number[] = Object.freeze([]);

/**
 * The feasibility class of a spec: JSON of its state, GPU model and sorted labels. Labels may hold any
 * character, so the key is an unambiguous encoding, never a join on a separator a label could contain.
 */
function classKey(spec: NodeSpec): string {
  const keys = Object.keys(spec.labels).sort();
  return JSON.stringify([spec.state, spec.gpu?.model ?? null, keys, keys.map((k) => spec.labels[k])]);
}

/** Spread counters are keyed by group and label together; the group's length makes the pair unambiguous. */
export function spreadKey(group: string, label: string): string {
  return `${group.length}:${group}\u0000${label}`;
}

/**
 * Read access shared by published versions and builders. Slots are dense integers; a slot whose state is
 * empty holds no node. Hot accessors are plain methods so the placer's loops stay monomorphic.
 */
abstract class IndexReader {
  protected abstract data(): IndexData;

  get version(): number {
    return this.data().version;
  }
  /** Number of live nodes. */
  get nodeCount(): number {
    return this.data().nodeCount;
  }
  /** One past the highest slot ever used. */
  get slotCount(): number {
    return this.data().slotCount;
  }
  get classes(): readonly ClassInfo[] {
    return this.data().classes;
  }
  /** milli-GPU over the devices of ready nodes. */
  get readyGpuMilli(): number {
    return this.data().readyGpuMilli;
  }
  get readyCapacity(): Resources {
    return this.data().readyCapacity;
  }
  get readyAllocated(): Resources {
    return this.data().readyAllocated;
  }

  protected fixCol(slot: number, c: number): number {
    return (this.data().fix[slot >>> pageShift] as Int32Array)[c * pageSize + (slot & pageMask)] as number;
  }
  protected hotCol(slot: number, c: number): number {
    return (this.data().hot[slot >>> pageShift] as Int32Array)[c * pageSize + (slot & pageMask)] as number;
  }
  slotOf(nodeId: string): number | undefined {
    return slotIn(this.data().idToSlot, nodeId);
  }
  isLive(slot: number): boolean {
    return slot < this.data().slotCount && this.fixCol(slot, cState) !== stateEmpty;
  }
  isReady(slot: number): boolean {
    return this.fixCol(slot, cState) === stateReady;
  }
  stateOf(slot: number): NodeState {
    const code = this.fixCol(slot, cState);
    if (code === stateEmpty) assert(false, 'slot holds no node', { slot });
    return nodeStates[code] as NodeState;
  }
  /** The free-capacity bucket the node sits in, or -1 when it is in none (not ready). */
  bucketOfSlot(slot: number): number {
    return this.hotCol(slot, cBucket);
  }
  classOf(slot: number): number {
    return this.fixCol(slot, cClass);
  }
  meta(slot: number): NodeMeta {
    const m = this.data().meta[slot >>> pageShift]?.[slot & pageMask];
    // The values object only on failure: meta() is read per candidate (spread, preferences, locality).
    if (m === undefined) assert(false, 'slot holds no node', { slot });
    return m;
  }
  nodeId(slot: number): string {
    return this.meta(slot).spec.id;
  }
  capCpu(slot: number): number {
    return this.fixCol(slot, cCapCpu);
  }
  capMem(slot: number): number {
    return this.fixCol(slot, cCapMem);
  }
  capDisk(slot: number): number {
    return this.fixCol(slot, cCapDisk);
  }
  freeCpu(slot: number): number {
    return this.fixCol(slot, cCapCpu) - this.hotCol(slot, cAllocCpu);
  }
  freeMem(slot: number): number {
    return this.fixCol(slot, cCapMem) - this.hotCol(slot, cAllocMem);
  }
  freeDisk(slot: number): number {
    return this.fixCol(slot, cCapDisk) - this.hotCol(slot, cAllocDisk);
  }
  /** The node's version: bumped by every write to it (allocation, release, spec or state). */
  versionOf(slot: number): number {
    return this.hotCol(slot, cVersion);
  }
  gpuCount(slot: number): number {
    return this.fixCol(slot, cGpuCount);
  }
  /** Free milli-GPU of one device. */
  gpuFree(slot: number, device: number): number {
    return (this.data().gpu[slot >>> pageShift] as Int16Array)[
      (slot & pageMask) * gpuDevicesPerNodeMax + device
    ] as number;
  }
  antiAffinityCount(group: string, slot: number): number {
    return this.data().antiAffinity.get(group)?.get(slot) ?? 0;
  }
  /** Sandboxes of an anti-affinity group per slot. */
  antiAffinityCounts(group: string): IMap<number, number> {
    return this.data().antiAffinity.get(group) ?? IMap<number, number>();
  }
  /** Sandboxes of a spread group per value of the spread label. */
  spreadCounts(group: string, label: string): IMap<string, number> {
    return this.data().spread.get(spreadKey(group, label)) ?? IMap<string, number>();
  }
  /** An object that stays the same exactly as long as feasibility classes and their members do. */
  get classMembership(): object {
    return this.data().classSlots;
  }
  /** Live slots of one feasibility class. */
  slotsOfClass(classId: number): ISet<number> {
    return this.data().classSlots.get(classId) ?? ISet<number>();
  }
  hasImage(slot: number, image: string): boolean {
    const m = this.meta(slot);
    return m.imageSet !== undefined ? m.imageSet.has(image) : (m.spec.images?.includes(image) ?? false);
  }
  /** An object that stays the same exactly as long as which nodes hold which images does. */
  get imageMembership(): object {
    return this.data().images;
  }
  /** Slots of nodes that hold `image`. */
  nodesWithImage(image: string): ISet<number> {
    return this.data().images.get(image) ?? ISet<number>();
  }

  /**
   * Visits the slots of free-CPU bucket `bucket`, page by page starting at `startPage` and wrapping (unless
   * `wrap` is false), until `visit` returns true. Returns true when stopped by `visit`.
   */
  scanBucket(bucket: number, startPage: number, visit: (slot: number) => boolean, wrap = true): boolean {
    const d = this.data();
    const summary = d.summary[bucket] as Uint32Array;
    const pageCount = d.hot.length;
    if (pageCount === 0) return false;
    const base = bucket * wordsPerPage;
    // Pages [startPage, pageCount) then [0, startPage): jump between set summary bits, never page by page.
    for (let pass = 0; pass < (wrap ? 2 : 1); pass++) {
      const from = pass === 0 ? startPage : 0;
      const to = pass === 0 ? pageCount : startPage;
      for (let sw = from >>> 5; sw <= (to - 1) >>> 5 && from < to; sw++) {
        let word = summary[sw] as number;
        if (sw === from >>> 5) word &= ~0 << (from & 31);
        while (word !== 0) {
          const page = (sw << 5) | (31 - Math.clz32(word & -word));
          word &= word - 1;
          if (page >= to) break;
          const words = d.bits[page] as Uint32Array;
          for (let w = 0; w < wordsPerPage; w++) {
            let bits = words[base + w] as number;
            while (bits !== 0) {
              const bit = 31 - Math.clz32(bits & -bits);
              bits &= bits - 1;
              if (visit((page << pageShift) | (w << 5) | bit)) return true;
            }
          }
        }
      }
    }
    return false;
  }

  /**
   * Visits the slots of bucket `bucket` from slot `fromSlot` on, in slot order and without wrapping, until `visit`
   * returns true; returns the slot it stopped at, or -1 when the bucket holds no further slot. Class walks
   * (stages/class-walk.ts) resume a bucket where they left it, inside a page.
   */
  scanBucketFrom(bucket: number, fromSlot: number, visit: (slot: number) => boolean): number {
    const d = this.data();
    const summary = d.summary[bucket] as Uint32Array;
    const pageCount = d.hot.length;
    const fromPage = fromSlot >>> pageShift;
    if (fromPage >= pageCount) return -1;
    const base = bucket * wordsPerPage;
    for (let sw = fromPage >>> 5; sw <= (pageCount - 1) >>> 5; sw++) {
      let word = summary[sw] as number;
      if (sw === fromPage >>> 5) word &= ~0 << (fromPage & 31);
      while (word !== 0) {
        const page = (sw << 5) | (31 - Math.clz32(word & -word));
        word &= word - 1;
        if (page >= pageCount) break;
        const words = d.bits[page] as Uint32Array;
        // In the first page, the slots before `fromSlot` are masked off.
        const firstWord = page === fromPage ? (fromSlot & pageMask) >>> 5 : 0;
        for (let w = firstWord; w < wordsPerPage; w++) {
          let bits = words[base + w] as number;
          if (page === fromPage && w === firstWord) bits &= ~0 << (fromSlot & 31);
          while (bits !== 0) {
            const bit = 31 - Math.clz32(bits & -bits);
            bits &= bits - 1;
            const slot = (page << pageShift) | (w << 5) | bit;
            if (visit(slot)) return slot;
          }
        }
      }
    }
    return -1;
  }

  /**
   * scanBucketFrom over only the slots whose bit is set in `mask` (one bit per slot, `wordsPerPage` words per page):
   * the bucket's bits are ANDed with the mask word by word, so a slot outside it costs nothing, not a visit.
   * Constrained walks pass their signature's passing-class mask (stages/pass-mask.ts). `mask.fill(page)` is called
   * before a page's words are read.
   */
  scanBucketMasked(
    bucket: number,
    fromSlot: number,
    visit: (slot: number) => boolean,
    mask: SlotMask,
  ): number {
    const d = this.data();
    const summary = d.summary[bucket] as Uint32Array;
    const pageCount = d.hot.length;
    const fromPage = fromSlot >>> pageShift;
    if (fromPage >= pageCount) return -1;
    const base = bucket * wordsPerPage;
    for (let sw = fromPage >>> 5; sw <= (pageCount - 1) >>> 5; sw++) {
      let word = summary[sw] as number;
      if (sw === fromPage >>> 5) word &= ~0 << (fromPage & 31);
      while (word !== 0) {
        const page = (sw << 5) | (31 - Math.clz32(word & -word));
        word &= word - 1;
        if (page >= pageCount) break;
        const words = d.bits[page] as Uint32Array;
        mask.fill(page);
        const maskWords = mask.words;
        const maskBase = page * wordsPerPage;
        const firstWord = page === fromPage ? (fromSlot & pageMask) >>> 5 : 0;
        for (let w = firstWord; w < wordsPerPage; w++) {
          let bits = (words[base + w] as number) & (maskWords[maskBase + w] as number);
          if (page === fromPage && w === firstWord) bits &= ~0 << (fromSlot & 31);
          while (bits !== 0) {
            const bit = 31 - Math.clz32(bits & -bits);
            bits &= bits - 1;
            const slot = (page << pageShift) | (w << 5) | bit;
            if (visit(slot)) return slot;
          }
        }
      }
    }
    return -1;
  }

  /**
   * How many pages this version shares (by reference, every part of it: fixed and hot columns, GPU shares,
   * bucket bits) with `other`: the measure of copy-on-write at work, for tests and benchmarks.
   */
  sharedPages(other: IndexReader): { readonly shared: number; readonly total: number } {
    const mine = this.data();
    const theirs = other.data();
    let shared = 0;
    for (let p = 0; p < mine.hot.length; p++) {
      if (
        mine.hot[p] === theirs.hot[p] &&
        mine.fix[p] === theirs.fix[p] &&
        mine.gpu[p] === theirs.gpu[p] &&
        mine.bits[p] === theirs.bits[p]
      )
        shared++;
    }
    return { shared, total: mine.hot.length };
  }

  /**
   * How many pages this version shares with `other` per part: what an allocation copies (hot columns and bucket
   * bits) apart from what only spec changes copy (fixed columns, GPU shares). For tests and benchmarks.
   */
  sharedParts(other: IndexReader): { readonly fix: number; readonly hot: number; readonly gpu: number } {
    const mine = this.data();
    const theirs = other.data();
    let fix = 0;
    let hot = 0;
    let gpu = 0;
    for (let p = 0; p < mine.hot.length; p++) {
      if (mine.fix[p] === theirs.fix[p]) fix++;
      if (mine.hot[p] === theirs.hot[p] && mine.bits[p] === theirs.bits[p]) hot++;
      if (mine.gpu[p] === theirs.gpu[p]) gpu++;
    }
    return { fix, hot, gpu };
  }

  /**
   * Slots of the nodes that entered bucket `bucket` since this builder started, in order (empty for a published
   * version). A walk cursor that knows a prefix of the bucket holds nothing for it needs only these to stay
   * true: nodes leaving a bucket cannot add anything to it.
   */
  bucketEntries(_bucket: number): readonly number[] {
    return noEntries;
  }

  /** The number of pages; candidate walks rotate their start page over it. */
  get pageCount(): number {
    return this.data().hot.length;
  }

  /** A node's full view, or undefined for an unknown id. */
  get(nodeId: string): NodeView | undefined {
    const slot = this.slotOf(nodeId);
    return slot === undefined ? undefined : this.view(slot);
  }

  view(slot: number): NodeView {
    const m = this.meta(slot);
    const gpuFree: number[] = [];
    for (let dev = 0; dev < this.gpuCount(slot); dev++) gpuFree.push(this.gpuFree(slot, dev));
    return {
      id: m.spec.id,
      spec: m.spec,
      state: this.stateOf(slot),
      allocated: {
        cpu: this.hotCol(slot, cAllocCpu),
        memory: this.hotCol(slot, cAllocMem),
        disk: this.hotCol(slot, cAllocDisk),
      },
      free: { cpu: this.freeCpu(slot), memory: this.freeMem(slot), disk: this.freeDisk(slot) },
      gpuFree,
      version: this.hotCol(slot, cVersion),
    };
  }

  /** Every live node, in slot order. */
  *nodes(): IterableIterator<NodeView> {
    const n = this.slotCount;
    for (let slot = 0; slot < n; slot++) if (this.isLive(slot)) yield this.view(slot);
  }

  /** Live slots, in slot order. */
  *slots(): IterableIterator<number> {
    const n = this.slotCount;
    for (let slot = 0; slot < n; slot++) if (this.isLive(slot)) yield slot;
  }
}

/** A published, never-changing version of the cluster. */
export class ClusterIndex extends IndexReader {
  readonly #d: IndexData;
  private constructor(d: IndexData) {
    super();
    this.#d = d;
  }
  protected data(): IndexData {
    return this.#d;
  }

  /** The empty cluster at version 0. */
  static empty(): ClusterIndex {
    return new ClusterIndex({
      version: 0,
      slotCount: 0,
      nodeCount: 0,
      fix: [],
      hot: [],
      gpu: [],
      bits: [],
      summary: Array.from({ length: bucketCount }, () => new Uint32Array(0)),
      meta: [],
      idToSlot: IMap(),
      freeSlots: IStack(),
      classIds: IMap(),
      classes: [],
      antiAffinity: IMap(),
      spread: IMap(),
      images: IMap(),
      classSlots: IMap(),
      readyCapacity: zero,
      readyGpuMilli: 0,
      readyAllocated: zero,
    });
  }

  /** Convenience: a version holding `specs`. */
  static of(specs: Iterable<NodeSpec>): ClusterIndex {
    const b = ClusterIndex.empty().edit();
    for (const spec of specs) b.registerNode(spec);
    return b.publish();
  }

  /** Starts a new version; this one is untouched by anything the builder does. */
  edit(): IndexBuilder {
    return new IndexBuilder(this.#d, (d) => new ClusterIndex(d));
  }
}

/**
 * A transient writer over a version. It copies each page on first write and owns it thereafter; `publish`
 * seals it into a new ClusterIndex. A builder may not be used after `publish`.
 */
export class IndexBuilder extends IndexReader {
  /** The version being built. Pages and maps are replaced (never mutated) unless this builder owns them. */
  readonly #d: MutableIndexData;
  /** Page ownership: 1 when this builder made the page (or copied it) and may write it in place. */
  #ownFix: Uint8Array;
  #ownHot: Uint8Array;
  #ownGpu: Uint8Array;
  #ownMeta: Uint8Array;
  readonly #ownSummary: Uint8Array;
  #classesOwned = false;
  /** Per bucket: the slot of every node that entered it in this builder (see bucketEntries); each list made by its
   * first entry, as most builders (a window's releases, a plan) rebucket into a few of the 64 buckets. */
  readonly #entries: (number[] | undefined)[] = new Array(bucketCount);
  readonly #capacities = new Map<string, Resources>();
  /** Group count maps made transient by this builder (see #ownedCounts), by group and by spread key. */
  readonly #aaOwned = new Map<string, IMap<number, number>>();
  readonly #spreadOwned = new Map<string, IMap<string, number>>();
  #aaOuter: IMap<string, IMap<number, number>> | undefined;
  #spreadOuter: IMap<string, IMap<string, number>> | undefined;
  #sealed = false;
  readonly #seal: (d: IndexData) => ClusterIndex;

  constructor(base: IndexData, seal: (d: IndexData) => ClusterIndex) {
    super();
    this.#seal = seal;
    this.#d = {
      ...base,
      version: base.version + 1,
      fix: base.fix.slice(),
      hot: base.hot.slice(),
      gpu: base.gpu.slice(),
      bits: base.bits.slice(),
      summary: base.summary.slice(),
      meta: base.meta.slice() as (NodeMeta | undefined)[][],
      classes: base.classes as ClassInfo[],
      readyCapacity: { ...base.readyCapacity },
      readyAllocated: { ...base.readyAllocated },
    };
    this.#ownFix = new Uint8Array(Math.max(16, base.hot.length));
    this.#ownHot = new Uint8Array(Math.max(16, base.hot.length));
    this.#ownGpu = new Uint8Array(Math.max(16, base.hot.length));
    this.#ownMeta = new Uint8Array(Math.max(16, base.meta.length));
    this.#ownSummary = new Uint8Array(bucketCount);
  }

  protected data(): IndexData {
    return this.#d;
  }

  override bucketEntries(bucket: number): readonly number[] {
    return this.#entries[bucket] ?? noEntries;
  }

  // Hot-path read without the virtual data() call: the placer reads columns of the builder on every candidate.
  protected override fixCol(slot: number, c: number): number {
    return (this.#d.fix[slot >>> pageShift] as Int32Array)[c * pageSize + (slot & pageMask)] as number;
  }
  protected override hotCol(slot: number, c: number): number {
    return (this.#d.hot[slot >>> pageShift] as Int32Array)[c * pageSize + (slot & pageMask)] as number;
  }

  #touch(): void {
    assert(!this.#sealed, 'builder used after publish');
  }

  #ensurePages(slot: number): void {
    const page = slot >>> pageShift;
    while (this.#d.hot.length <= page) {
      const p = this.#d.hot.length;
      const fix = new Int32Array(fixColCount * pageSize);
      fix.fill(stateEmpty, cState * pageSize, (cState + 1) * pageSize);
      const hot = new Int32Array(hotColCount * pageSize);
      hot.fill(-1, cBucket * pageSize, (cBucket + 1) * pageSize);
      this.#d.fix.push(fix);
      this.#d.hot.push(hot);
      this.#d.gpu.push(new Int16Array(pageSize * gpuDevicesPerNodeMax));
      this.#d.bits.push(new Uint32Array(bucketCount * wordsPerPage));
      this.#d.meta.push(new Array<NodeMeta | undefined>(pageSize).fill(undefined));
      if (this.#ownHot.length <= p) {
        this.#ownFix = grow(this.#ownFix);
        this.#ownHot = grow(this.#ownHot);
        this.#ownGpu = grow(this.#ownGpu);
      }
      if (this.#ownMeta.length <= p) this.#ownMeta = grow(this.#ownMeta);
      this.#ownFix[p] = 1;
      this.#ownHot[p] = 1;
      this.#ownGpu[p] = 1;
      this.#ownMeta[p] = 1;
      const summaryWords = (p >>> 5) + 1;
      for (let b = 0; b < bucketCount; b++) {
        const s = this.#d.summary[b] as Uint32Array;
        if (s.length < summaryWords) {
          const bigger = new Uint32Array(summaryWords);
          bigger.set(s);
          this.#d.summary[b] = bigger;
          this.#ownSummary[b] = 1;
        }
      }
    }
  }

  /**
   * Makes the hot columns and bucket bits of `page` writable — what an allocation changes — by copying them
   * once, into one buffer: each array buffer costs a scavenge a sweep step. The fixed columns and GPU shares
   * stay shared until a spec change or a GPU allocation writes them (`#ownFixPage`, `#ownGpuPage`).
   */
  #ownHotPage(page: number): void {
    if (this.#ownHot[page] === 1) return;
    const hot = this.#d.hot[page] as Int32Array;
    const bits = this.#d.bits[page] as Uint32Array;
    const buffer = new ArrayBuffer(hot.byteLength + bits.byteLength);
    const hotCopy = new Int32Array(buffer, 0, hot.length);
    const bitsCopy = new Uint32Array(buffer, hot.byteLength, bits.length);
    hotCopy.set(hot);
    bitsCopy.set(bits);
    this.#d.hot[page] = hotCopy;
    this.#d.bits[page] = bitsCopy;
    this.#ownHot[page] = 1;
  }

  #ownFixPage(page: number): void {
    if (this.#ownFix[page] === 1) return;
    this.#d.fix[page] = (this.#d.fix[page] as Int32Array).slice();
    this.#ownFix[page] = 1;
  }

  /** The page's GPU shares, writable. */
  #gpuPage(page: number): Int16Array {
    if (this.#ownGpu[page] !== 1) {
      this.#d.gpu[page] = (this.#d.gpu[page] as Int16Array).slice();
      this.#ownGpu[page] = 1;
    }
    return this.#d.gpu[page] as Int16Array;
  }

  #setHot(slot: number, c: number, value: number): void {
    const page = slot >>> pageShift;
    this.#ownHotPage(page);
    (this.#d.hot[page] as Int32Array)[c * pageSize + (slot & pageMask)] = value;
  }

  #setFix(slot: number, c: number, value: number): void {
    const page = slot >>> pageShift;
    this.#ownFixPage(page);
    (this.#d.fix[page] as Int32Array)[c * pageSize + (slot & pageMask)] = value;
  }

  #setMeta(slot: number, meta: NodeMeta | undefined): void {
    const page = slot >>> pageShift;
    if (this.#ownMeta[page] !== 1) {
      this.#d.meta[page] = (this.#d.meta[page] as (NodeMeta | undefined)[]).slice();
      this.#ownMeta[page] = 1;
    }
    (this.#d.meta[page] as (NodeMeta | undefined)[])[slot & pageMask] = meta;
  }

  #setSummaryBit(bucket: number, page: number, on: boolean): void {
    if (this.#ownSummary[bucket] !== 1) {
      this.#d.summary[bucket] = (this.#d.summary[bucket] as Uint32Array).slice();
      this.#ownSummary[bucket] = 1;
    }
    const s = this.#d.summary[bucket] as Uint32Array;
    const w = page >>> 5;
    const mask = 1 << (page & 31);
    s[w] = on ? (s[w] as number) | mask : (s[w] as number) & ~mask;
  }

  /** Moves the node into the bucket its state and free CPU call for (or out of every bucket). */
  #rebucket(slot: number): void {
    const page = slot >>> pageShift;
    const old = this.hotCol(slot, cBucket);
    const want =
      this.fixCol(slot, cState) === stateReady
        ? bucketOf(capacityKey(this.freeCpu(slot), this.freeMem(slot), this.freeDisk(slot)))
        : -1;
    if (old === want) return;
    this.#ownHotPage(page);
    const bits = this.#d.bits[page] as Uint32Array;
    const off = slot & pageMask;
    if (old >= 0) {
      const w = old * wordsPerPage + (off >>> 5);
      bits[w] = (bits[w] as number) & ~(1 << (off & 31));
      let empty = true;
      for (let i = 0; i < wordsPerPage; i++) if (bits[old * wordsPerPage + i] !== 0) empty = false;
      if (empty) this.#setSummaryBit(old, page, false);
    }
    if (want >= 0) {
      const entries = this.#entries[want];
      if (entries === undefined) this.#entries[want] = [slot];
      else entries.push(slot);
      const w = want * wordsPerPage + (off >>> 5);
      bits[w] = (bits[w] as number) | (1 << (off & 31));
      this.#setSummaryBit(want, page, true);
    }
    (this.#d.hot[page] as Int32Array)[cBucket * pageSize + off] = want;
  }

  /** Adds or removes this node's capacity and allocation from the ready totals. */
  #readyTotals(slot: number, sign: 1 | -1): void {
    if (this.fixCol(slot, cState) !== stateReady) return;
    this.#d.readyCapacity.cpu += sign * this.capCpu(slot);
    this.#d.readyCapacity.memory += sign * this.capMem(slot);
    this.#d.readyCapacity.disk += sign * this.capDisk(slot);
    this.#d.readyGpuMilli += sign * this.gpuCount(slot) * gpuMilliPerDevice;
    this.#d.readyAllocated.cpu += sign * this.hotCol(slot, cAllocCpu);
    this.#d.readyAllocated.memory += sign * this.hotCol(slot, cAllocMem);
    this.#d.readyAllocated.disk += sign * this.hotCol(slot, cAllocDisk);
  }

  #classFor(spec: NodeSpec): number {
    const key = classKey(spec);
    const known = this.#d.classIds.get(key);
    if (known !== undefined) return known;
    const id = this.#d.classes.length;
    assert(id < classesMax, 'too many feasibility classes', { classesMax });
    if (!this.#classesOwned) {
      this.#d.classes = this.#d.classes.slice();
      this.#classesOwned = true;
    }
    this.#d.classes.push(
      Object.freeze({
        id,
        state: spec.state,
        labels: spec.labels,
        gpuModel: spec.gpu?.model ?? '',
      }),
    );
    this.#d.classIds = this.#d.classIds.set(key, id);
    return id;
  }

  #requireSlot(nodeId: string): number {
    const slot = this.#d.idToSlot.get(nodeId);
    if (slot === undefined) throw new UnknownNodeError(`unknown node ${JSON.stringify(nodeId)}`);
    return slot;
  }

  /** Nodes of one instance type share one frozen capacity object (heap, at 100,000 nodes). */
  #internCapacity(c: Resources): Resources {
    const key = `${c.cpu},${c.memory},${c.disk}`;
    let known = this.#capacities.get(key);
    if (known === undefined) {
      known = Object.isFrozen(c) ? c : Object.freeze({ cpu: c.cpu, memory: c.memory, disk: c.disk });
      this.#capacities.set(key, known);
    }
    return known;
  }

  #writeSpec(slot: number, given: NodeSpec, bumpFrom: number): void {
    const classId = this.#classFor(given);
    // Every node of a class has the same labels: they share the class's frozen labels object (heap).
    const classLabels = (this.#d.classes[classId] as ClassInfo).labels;
    const capacity = this.#internCapacity(given.capacity);
    const spec =
      given.labels === classLabels && given.capacity === capacity
        ? given
        : Object.freeze({ ...given, labels: classLabels, capacity });
    const images = new Set(spec.images ?? []);
    const old = this.fixCol(slot, cState) === stateEmpty ? undefined : this.meta(slot);
    const oldImages = new Set(old?.spec.images ?? []);
    for (const img of oldImages) {
      if (!images.has(img)) this.#d.images = this.#d.images.update(img, ISet(), (s) => s.remove(slot));
    }
    for (const img of images) {
      if (!oldImages.has(img)) this.#d.images = this.#d.images.update(img, ISet(), (s) => s.add(slot));
    }
    this.#setMeta(
      slot,
      Object.freeze({ spec, imageSet: images.size > imagesInlineMax ? images : undefined }),
    );
    this.#setFix(slot, cCapCpu, spec.capacity.cpu);
    this.#setFix(slot, cCapMem, spec.capacity.memory);
    this.#setFix(slot, cCapDisk, spec.capacity.disk);
    const oldClass = old === undefined ? -1 : this.fixCol(slot, cClass);
    if (oldClass !== classId) {
      if (oldClass >= 0)
        this.#d.classSlots = this.#d.classSlots.update(oldClass, ISet(), (c) => c.remove(slot));
      this.#d.classSlots = this.#d.classSlots.update(classId, ISet(), (c) => c.add(slot));
    }
    this.#setFix(slot, cState, stateCodes[spec.state]);
    this.#setFix(slot, cClass, classId);
    this.#setHot(slot, cVersion, bumpFrom + 1);
  }

  /**
   * Registers a new node. Throws ValidationError for a bad spec, DuplicateNodeError for a known id. The index
   * keeps a frozen copy of the spec, never the caller's object.
   */
  registerNode(input: NodeSpec): this {
    this.#touch();
    const spec = normalizeNodeSpec(input);
    if (this.#d.idToSlot.has(spec.id))
      throw new DuplicateNodeError(`node ${JSON.stringify(spec.id)} already exists`);
    let slot: number;
    const reuse = this.#d.freeSlots.first();
    if (reuse !== undefined) {
      slot = reuse;
      this.#d.freeSlots = this.#d.freeSlots.pop();
    } else {
      slot = this.#d.slotCount;
      assert(slot < nodesMax, 'index is full', { nodesMax });
      this.#d.slotCount = slot + 1;
      this.#ensurePages(slot);
    }
    this.#d.idToSlot = this.#d.idToSlot.set(spec.id, slot);
    this.#d.nodeCount += 1;
    this.#setHot(slot, cAllocCpu, 0);
    this.#setHot(slot, cAllocMem, 0);
    this.#setHot(slot, cAllocDisk, 0);
    const devices = spec.gpu?.count ?? 0;
    this.#setFix(slot, cGpuCount, devices);
    const gpu = this.#gpuPage(slot >>> pageShift);
    for (let dev = 0; dev < gpuDevicesPerNodeMax; dev++) {
      gpu[(slot & pageMask) * gpuDevicesPerNodeMax + dev] = dev < devices ? gpuMilliPerDevice : 0;
    }
    this.#writeSpec(slot, spec, 0);
    this.#readyTotals(slot, 1);
    this.#rebucket(slot);
    return this;
  }

  /**
   * Replaces a node's spec (capacity, labels, state, images). Refuses to shrink capacity below what is
   * allocated (OverCommitError) or to change its GPU devices while any share of them is allocated.
   */
  updateNode(input: NodeSpec): this {
    this.#touch();
    const spec = normalizeNodeSpec(input);
    const slot = this.#requireSlot(spec.id);
    const view = this.view(slot);
    for (const r of ['cpu', 'memory', 'disk'] as const) {
      if (spec.capacity[r] < view.allocated[r]) {
        throw new OverCommitError(
          `node ${spec.id}: new ${r} capacity ${spec.capacity[r]} is below allocated ${view.allocated[r]}`,
        );
      }
    }
    const oldGpu = view.spec.gpu;
    const gpuChanged = oldGpu?.model !== spec.gpu?.model || (oldGpu?.count ?? 0) !== (spec.gpu?.count ?? 0);
    if (gpuChanged && view.gpuFree.some((f) => f !== gpuMilliPerDevice)) {
      throw new OverCommitError(`node ${spec.id}: GPU devices change while shares of them are allocated`);
    }
    // Every check is done; from here on the write cannot fail. Out of the ready totals with the old capacity
    // and devices, back in with the new ones below.
    this.#readyTotals(slot, -1);
    if (gpuChanged) {
      const devices = spec.gpu?.count ?? 0;
      this.#setFix(slot, cGpuCount, devices);
      const gpu = this.#gpuPage(slot >>> pageShift);
      for (let dev = 0; dev < gpuDevicesPerNodeMax; dev++) {
        gpu[(slot & pageMask) * gpuDevicesPerNodeMax + dev] = dev < devices ? gpuMilliPerDevice : 0;
      }
    }
    this.#writeSpec(slot, spec, view.version);
    this.#readyTotals(slot, 1);
    this.#rebucket(slot);
    return this;
  }

  /** Sets a node's state (ready, draining, cordoned, down); only ready nodes receive placements. */
  setState(nodeId: string, state: NodeState): this {
    this.#touch();
    const slot = this.#requireSlot(nodeId);
    const spec = this.meta(slot).spec;
    if (spec.state === state) return this;
    return this.updateNode({ ...spec, state });
  }

  /** Removes a node that holds no allocation (NodeBusyError otherwise); its slot is reused later. */
  removeNode(nodeId: string): this {
    this.#touch();
    const slot = this.#requireSlot(nodeId);
    const v = this.view(slot);
    if (
      v.allocated.cpu > 0 ||
      v.allocated.memory > 0 ||
      v.allocated.disk > 0 ||
      v.gpuFree.some((f) => f !== gpuMilliPerDevice)
    ) {
      throw new NodeBusyError(`node ${nodeId} still holds allocations`);
    }
    this.#readyTotals(slot, -1);
    for (const img of new Set(this.meta(slot).spec.images ?? []))
      this.#d.images = this.#d.images.update(img, ISet(), (s) => s.remove(slot));
    const classId = this.fixCol(slot, cClass);
    this.#d.classSlots = this.#d.classSlots.update(classId, ISet(), (c) => c.remove(slot));
    this.#setFix(slot, cState, stateEmpty);
    this.#rebucket(slot);
    this.#setMeta(slot, undefined);
    this.#d.idToSlot = this.#d.idToSlot.remove(nodeId);
    this.#d.freeSlots = this.#d.freeSlots.push(slot);
    this.#d.nodeCount -= 1;
    return this;
  }

  /** True when `shape` fits on the node now (capacity and every named device share). */
  fitsSlot(slot: number, shape: AllocationShape): boolean {
    const r = shape.resources;
    if (r.cpu > this.freeCpu(slot) || r.memory > this.freeMem(slot) || r.disk > this.freeDisk(slot))
      return false;
    const devices = shape.gpuDevices;
    if (devices === undefined) return true;
    // An index loop: the for-of iterator here was ~45 B per placement in allocation profiles.
    for (let i = 0; i < devices.length; i++) {
      const g = devices[i] as { readonly device: number; readonly milli: number };
      if (g.device >= this.gpuCount(slot) || g.milli > this.gpuFree(slot, g.device)) return false;
    }
    return true;
  }

  /**
   * Takes `shape` from the node. Throws OverCommitError when it does not fit: committed state can never be
   * over-committed, whatever a planner proposed. (Node state is the planner's and verifier's concern: an
   * allocation already decided may still land on a node that just started draining.)
   */
  allocate(nodeId: string, input: AllocationShape): this {
    this.#touch();
    const shape = normalizeAllocationShape(input);
    const slot = this.#requireSlot(nodeId);
    if (!this.fitsSlot(slot, shape)) {
      throw new OverCommitError(`node ${nodeId}: allocation does not fit`, {
        details: { free: this.view(slot).free },
      });
    }
    this.#applyAllocation(slot, shape, 1);
    return this;
  }

  /** Gives `shape` back. Throws ReleaseMismatchError when more is released than is allocated. */
  release(nodeId: string, input: AllocationShape): this {
    this.#touch();
    const shape = normalizeAllocationShape(input);
    const slot = this.#requireSlot(nodeId);
    const r = shape.resources;
    const v = this.view(slot);
    const devicesOk = (shape.gpuDevices ?? []).every(
      (g) => g.device < v.gpuFree.length && (v.gpuFree[g.device] as number) + g.milli <= gpuMilliPerDevice,
    );
    if (r.cpu > v.allocated.cpu || r.memory > v.allocated.memory || r.disk > v.allocated.disk || !devicesOk) {
      throw new ReleaseMismatchError(`node ${nodeId}: release exceeds what is allocated`);
    }
    this.#applyAllocation(slot, shape, -1);
    return this;
  }

  /**
   * `allocate` for a caller that already holds the node's slot (the state machine's apply, which looked it up
   * to check the node): the same validation and over-commit refusal, without a second id lookup.
   */
  allocateAt(slot: number, input: AllocationShape): void {
    this.#touch();
    const shape = normalizeAllocationShape(input);
    assert(this.isLive(slot), 'allocateAt names a live slot', { slot });
    if (!this.fitsSlot(slot, shape)) {
      throw new OverCommitError(`node ${this.nodeId(slot)}: allocation does not fit`, {
        details: { free: this.view(slot).free },
      });
    }
    this.#applyAllocation(slot, shape, 1);
  }

  /**
   * `release` of a shape this index accepted before (the state machine gives back exactly what a sandbox took,
   * so it is not validated again) on a slot the caller holds: the same ReleaseMismatchError when more would be
   * given back than is allocated, checked from the columns without building the node's view.
   */
  releaseAt(slot: number, shape: AllocationShape): void {
    this.#touch();
    assert(this.isLive(slot), 'releaseAt names a live slot', { slot });
    const r = shape.resources;
    let ok =
      r.cpu <= this.hotCol(slot, cAllocCpu) &&
      r.memory <= this.hotCol(slot, cAllocMem) &&
      r.disk <= this.hotCol(slot, cAllocDisk);
    for (const g of shape.gpuDevices ?? []) {
      ok &&= g.device < this.gpuCount(slot) && this.gpuFree(slot, g.device) + g.milli <= gpuMilliPerDevice;
    }
    if (!ok) throw new ReleaseMismatchError(`node ${this.nodeId(slot)}: release exceeds what is allocated`);
    this.#applyAllocation(slot, shape, -1);
  }

  /** The placer's fast path: allocate on a slot it has already checked. */
  allocateSlot(slot: number, shape: AllocationShape): void {
    this.#touch();
    // The values object only on failure: built on every call it was ~45 KiB per batch of 1,000.
    if (!this.fitsSlot(slot, shape)) assert(false, 'planner allocated beyond free capacity', { slot });
    this.#applyAllocation(slot, shape, 1);
  }

  /**
   * A run's fast path: `times` placements of one shape on one slot as one write (the columns, the version — bumped
   * by `times`, as that many single writes would — and one bucket move). Only for shapes without GPU devices or
   * group counts, whose effect is the resources alone. The end state equals `times` calls of allocateSlot.
   */
  allocateSlotTimes(slot: number, shape: AllocationShape, times: number): void {
    this.#touch();
    if (!(Number.isInteger(times) && times >= 1))
      assert(false, 'a run allocates a positive count', { times });
    const plain =
      (shape.gpuDevices === undefined || shape.gpuDevices.length === 0) &&
      shape.antiAffinityGroup === undefined &&
      shape.spread === undefined;
    if (!plain) assert(false, 'a run allocates resources only', { slot });
    const r = shape.resources;
    const fits =
      r.cpu * times <= this.freeCpu(slot) &&
      r.memory * times <= this.freeMem(slot) &&
      r.disk * times <= this.freeDisk(slot);
    if (!fits) assert(false, 'planner allocated a run beyond free capacity', { slot, times });
    this.#applyAllocation(slot, shape, times);
  }

  /** Applies `shape` `sign` times (negative: a release); GPU and group counts only for a single write. */
  #applyAllocation(slot: number, shape: AllocationShape, sign: number): void {
    const r = shape.resources;
    // The placer calls this once per placement: own the page once and write its columns directly.
    const page = slot >>> pageShift;
    this.#ownHotPage(page);
    const hot = this.#d.hot[page] as Int32Array;
    const off = slot & pageMask;
    const iCpu = cAllocCpu * pageSize + off;
    const iMem = cAllocMem * pageSize + off;
    const iDisk = cAllocDisk * pageSize + off;
    const iVersion = cVersion * pageSize + off;
    hot[iCpu] = (hot[iCpu] as number) + sign * r.cpu;
    hot[iMem] = (hot[iMem] as number) + sign * r.memory;
    hot[iDisk] = (hot[iDisk] as number) + sign * r.disk;
    hot[iVersion] = (hot[iVersion] as number) + Math.abs(sign);
    if (this.fixCol(slot, cState) === stateReady) {
      const alloc = this.#d.readyAllocated;
      alloc.cpu += sign * r.cpu;
      alloc.memory += sign * r.memory;
      alloc.disk += sign * r.disk;
    }
    if (shape.gpuDevices !== undefined && shape.gpuDevices.length > 0) {
      const gpu = this.#gpuPage(page);
      for (const g of shape.gpuDevices) {
        const i = (slot & pageMask) * gpuDevicesPerNodeMax + g.device;
        gpu[i] = (gpu[i] as number) - sign * g.milli;
      }
    }
    // The group counts in methods of their own: their update closures capture `slot` and `sign`, and a closure
    // in this method made V8 allocate a context on every call, group rule or not (~55 B a placement).
    if (shape.antiAffinityGroup !== undefined) this.#countAntiAffinity(slot, shape.antiAffinityGroup, sign);
    if (shape.spread !== undefined) this.#countSpread(slot, shape.spread, sign);
    this.#checkBounds(slot);
    this.#rebucket(slot);
  }

  /**
   * Group counts in transient (`asMutable`) maps this builder owns, the outer map (group → counts) and each
   * group's counts: written in place once made, where a persistent `update` per placement copied the path to
   * the entry and the outer map's path each time (~85 KiB of map nodes and update closures a batch of 1,000 in
   * allocation profiles). `publish` seals them (`asImmutable`). The base version's maps are never written: a
   * transient copies every node it does not own before writing it.
   */
  #countAntiAffinity(slot: number, group: string, sign: number): void {
    let m = this.#aaOwned.get(group);
    if (m === undefined) {
      if (this.#aaOuter === undefined) {
        this.#aaOuter = this.#d.antiAffinity.asMutable();
        this.#d.antiAffinity = this.#aaOuter;
      }
      m = (this.#aaOuter.get(group) ?? IMap<number, number>()).asMutable();
      this.#aaOwned.set(group, m);
      this.#aaOuter.set(group, m);
    }
    const n = (m.get(slot) ?? 0) + sign;
    // In place: a transient map's set and remove return the map itself.
    if (n === 0) m.remove(slot);
    else m.set(slot, n);
  }

  #countSpread(slot: number, spread: { readonly group: string; readonly label: string }, sign: number): void {
    const value = labelValue(this.meta(slot).spec.labels, spread.label);
    if (value === undefined) return;
    const key = spreadKey(spread.group, spread.label);
    let m = this.#spreadOwned.get(key);
    if (m === undefined) {
      if (this.#spreadOuter === undefined) {
        this.#spreadOuter = this.#d.spread.asMutable();
        this.#d.spread = this.#spreadOuter;
      }
      m = (this.#spreadOuter.get(key) ?? IMap<string, number>()).asMutable();
      this.#spreadOwned.set(key, m);
      this.#spreadOuter.set(key, m);
    }
    const n = (m.get(value) ?? 0) + sign;
    if (n === 0) m.remove(value);
    else m.set(value, n);
  }

  /** Seals the transient count maps; an emptied one becomes the shared empty map, as `update` left it. */
  #sealCounts(): void {
    const aa = this.#aaOuter;
    if (aa !== undefined) {
      for (const [group, m] of this.#aaOwned) {
        const sealed = m.asImmutable();
        if (sealed !== m) aa.set(group, sealed);
      }
      this.#d.antiAffinity = aa.asImmutable();
    }
    const spread = this.#spreadOuter;
    if (spread !== undefined) {
      for (const [key, m] of this.#spreadOwned) {
        const sealed = m.asImmutable();
        if (sealed !== m) spread.set(key, sealed);
      }
      this.#d.spread = spread.asImmutable();
    }
    this.#aaOuter = undefined;
    this.#spreadOuter = undefined;
    this.#aaOwned.clear();
    this.#spreadOwned.clear();
  }

  /**
   * The invariant every write keeps: 0 <= allocated <= capacity per resource and 0 <= free share <= one device
   * per GPU device. The write paths check before writing; this catches a path that did not.
   */
  #checkBounds(slot: number): void {
    const cpu = this.hotCol(slot, cAllocCpu);
    const mem = this.hotCol(slot, cAllocMem);
    const disk = this.hotCol(slot, cAllocDisk);
    const ok =
      cpu >= 0 &&
      mem >= 0 &&
      disk >= 0 &&
      cpu <= this.fixCol(slot, cCapCpu) &&
      mem <= this.fixCol(slot, cCapMem) &&
      disk <= this.fixCol(slot, cCapDisk);
    if (!ok) assert(false, 'allocation outside 0..capacity', { slot, cpu, mem, disk });
    for (let dev = 0; dev < this.gpuCount(slot); dev++) {
      const free = this.gpuFree(slot, dev);
      if (!(free >= 0 && free <= gpuMilliPerDevice))
        assert(false, 'GPU share outside 0..one device', { slot, dev, free });
    }
  }

  /** Seals the builder into a new published version. */
  publish(): ClusterIndex {
    this.#touch();
    this.#sealCounts();
    this.#sealed = true;
    return this.#seal({
      ...this.#d,
      readyCapacity: Object.freeze({ ...this.#d.readyCapacity }),
      readyAllocated: Object.freeze({ ...this.#d.readyAllocated }),
    });
  }
}

/**
 * Node id → slot through a plain `Map` copy of an id map read often. The immutable map is shared by every
 * version between two node registrations or removals, and hashing a short string id through it on each read
 * was ~5% of a capacity simulation (a place item's and a release's node, each batch). A copy is made once a
 * map has been read `plainSlotsAfterReads(size)` times, so the reads pay for it (a cluster registered one node
 * per entry, each version read a few times, copies nothing); the copy is kept beside the map (a WeakMap: it
 * goes with it) and never changes, as the map never does.
 */
const plainSlots = new WeakMap<IMap<string, number>, Map<string, number> | number>();
const plainSlotsAfterReads = (size: number): number => 64 + (size >>> 2);

/** The last map copied, checked first: one pointer compare instead of a WeakMap read in the steady state. */
let lastIds: IMap<string, number> | undefined;
let lastPlain: Map<string, number> | undefined;

function slotIn(ids: IMap<string, number>, nodeId: string): number | undefined {
  if (ids === lastIds) return (lastPlain as Map<string, number>).get(nodeId);
  const seen = plainSlots.get(ids);
  if (typeof seen === 'object') {
    lastIds = ids;
    lastPlain = seen;
    return seen.get(nodeId);
  }
  const reads = (seen ?? 0) + 1;
  if (reads < plainSlotsAfterReads(ids.size)) {
    plainSlots.set(ids, reads);
    return ids.get(nodeId);
  }
  const plain = new Map(ids);
  plainSlots.set(ids, plain);
  return plain.get(nodeId);
}

function grow(a: Uint8Array): Uint8Array {
  const b = new Uint8Array(a.length * 2);
  b.set(a);
  return b;
}

export type { IndexReader };
