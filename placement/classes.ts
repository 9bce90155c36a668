/**
 * Request classes of one batch (issue 15, lever 4): requests with the same shape, GPU need, constraints,
 * preferences, image, pin and strategy are compiled alike, so what compiling reads from the index for them — the
 * signature facts, the image holders, the pinned slot — is looked up once per class, their dominant share is
 * computed once per class, and "identical to the request before" (a run step) is one integer comparison.
 *
 * A class is found by a cheap structural hash (numbers, string lengths and a few character codes, no loop over
 * whole strings), then confirmed field by field against the class's first request: a hash collision costs a
 * comparison, never a wrong class. Priority, id, tenant, spread and anti-affinity are per request and not part of
 * a class (they are read per request wherever they matter). The tables are typed arrays reused batch after
 * batch.
 */
import { assert } from '../src/lib/assert.js';
import { type KnownFacts, type SignatureFacts, sameConstraint, sameList } from './stages/request.js';
import type { Constraint, GpuRequest, PlacementRequest, Preference, Strategy } from './types.js';
import type { RequestFields } from './validate.js';

/** Pin of a class without a pinned node (`KnownFacts.pinnedSlot` undefined). */
const notPinned = -2;
/** Pin of a class not compiled yet in this batch. */
const pinUnknown = -3;

export class RequestClasses {
  static #instance = new RequestClasses();
  #inUse = false;

  /** Per request: its class. */
  classOf = new Int32Array(0);
  /** Classes found in this batch; per class arrays below are valid in [0, count). */
  count = 0;
  /** Per request: its priority (0 when absent), as validated. */
  priority = new Int32Array(0);
  /**
   * Per request: 1 when it has a spread or anti-affinity rule, as validated. Read instead of the request's own
   * properties, each a megamorphic lookup (requests come in dozens of hidden classes).
   */
  grouped = new Uint8Array(0);
  /** Per class: its fields, as its first request's validation read them. */
  #cpu = new Int32Array(0);
  #memory = new Int32Array(0);
  #disk = new Int32Array(0);
  #gpu: (GpuRequest | undefined)[] = [];
  #constraints: (readonly Constraint[] | undefined)[] = [];
  #preferences: (readonly Preference[] | undefined)[] = [];
  #imageId: (string | undefined)[] = [];
  #pinnedNode: (string | undefined)[] = [];
  #strategy: (Strategy | undefined)[] = [];
  /** Per class: the request index of its first request (the one its fields are compared against). */
  #first = new Int32Array(0);
  #hash = new Int32Array(0);
  /** Per class: what compiling reads from the index, filled by the class's first compilation. */
  #shared: (SignatureFacts | undefined)[] = [];
  #image: (Uint32Array | undefined)[] = [];
  #pinned = new Int32Array(0);
  /** Per class: the key of rejections reused within the batch (plan.ts), built on first use. */
  #rejectionKey: (string | undefined)[] = [];
  /** Open addressing: class + 1 per entry (0: empty), cleared per batch. */
  #table = new Int32Array(0);
  #mask = 0;
  #requests: readonly PlacementRequest[] = [];

  /** The shared tables, or fresh ones when they are in use (a request's getter planning a batch of its own). */
  static take(requests: number): RequestClasses {
    const t = RequestClasses.#instance.#inUse ? new RequestClasses() : RequestClasses.#instance;
    t.#begin(requests);
    return t;
  }

  /** The batch's validated requests, once every one was added (`firstOf` reads them). */
  bind(requests: readonly PlacementRequest[]): void {
    this.#requests = requests;
  }

  /** Gives the tables back; the batch's plan keeps none of them. */
  release(): void {
    this.#requests = [];
    this.#gpu.fill(undefined, 0, this.count);
    this.#constraints.fill(undefined, 0, this.count);
    this.#preferences.fill(undefined, 0, this.count);
    this.#imageId.fill(undefined, 0, this.count);
    this.#pinnedNode.fill(undefined, 0, this.count);
    this.#strategy.fill(undefined, 0, this.count);
    this.#shared.fill(undefined, 0, this.count);
    this.#image.fill(undefined, 0, this.count);
    this.#rejectionKey.fill(undefined, 0, this.count);
    this.#inUse = false;
  }

  #begin(n: number): void {
    this.#inUse = true;
    this.#requests = [];
    if (this.classOf.length < n) {
      const size = Math.max(n, 2 * this.classOf.length, 64);
      this.classOf = new Int32Array(size);
      this.priority = new Int32Array(size);
      this.grouped = new Uint8Array(size);
      this.#first = new Int32Array(size);
      this.#hash = new Int32Array(size);
      this.#pinned = new Int32Array(size);
      this.#cpu = new Int32Array(size);
      this.#memory = new Int32Array(size);
      this.#disk = new Int32Array(size);
      let entries = 16;
      while (entries < 2 * size) entries *= 2;
      this.#table = new Int32Array(entries);
      this.#mask = entries - 1;
    } else this.#table.fill(0);
    this.count = 0;
  }

  /** Puts request `i`, whose class fields normalizeRequest left in `f`, in its class. */
  add(i: number, f: RequestFields): void {
    this.priority[i] = f.priority;
    this.grouped[i] = f.grouped ? 1 : 0;
    const h = classHash(f);
    // At most half full (#begin), so a free entry is always found; the bound turns a sizing bug into an error.
    for (let e = h & this.#mask, probes = 0; ; e = (e + 1) & this.#mask, probes++) {
      if (probes > this.#mask) assert(false, 'the class table has a free entry', { size: this.#mask + 1 });
      const at = this.#table[e] as number;
      if (at === 0) {
        this.#table[e] = this.#newClass(i, h, f) + 1;
        this.classOf[i] = this.count - 1;
        return;
      }
      const c = at - 1;
      if (this.#hash[c] === h && this.#holds(c, f)) {
        this.classOf[i] = c;
        return;
      }
    }
  }

  #newClass(i: number, h: number, f: RequestFields): number {
    const c = this.count++;
    this.#first[c] = i;
    this.#hash[c] = h;
    this.#cpu[c] = f.cpu;
    this.#memory[c] = f.memory;
    this.#disk[c] = f.disk;
    this.#gpu[c] = f.gpu;
    this.#constraints[c] = f.constraints;
    this.#preferences[c] = f.preferences;
    this.#imageId[c] = f.imageId;
    this.#pinnedNode[c] = f.pinnedNode;
    this.#strategy[c] = f.strategy;
    this.#pinned[c] = pinUnknown;
    this.#shared[c] = undefined;
    this.#image[c] = undefined;
    this.#rejectionKey[c] = undefined;
    return c;
  }

  /** Every field of class `c` equals the request's (see the module comment for which fields those are). */
  #holds(c: number, f: RequestFields): boolean {
    if (this.#cpu[c] !== f.cpu || this.#memory[c] !== f.memory || this.#disk[c] !== f.disk) return false;
    if (
      this.#imageId[c] !== f.imageId ||
      this.#strategy[c] !== f.strategy ||
      this.#pinnedNode[c] !== f.pinnedNode
    )
      return false;
    const ga = this.#gpu[c];
    const gb = f.gpu;
    if (
      ga !== gb &&
      (ga === undefined ||
        gb === undefined ||
        ga.count !== gb.count ||
        ga.milli !== gb.milli ||
        ga.model !== gb.model)
    )
      return false;
    return (
      sameList(this.#constraints[c], f.constraints, sameConstraint) &&
      sameList(this.#preferences[c], f.preferences, samePreference)
    );
  }

  /** The dominant share of class `c` (plan.ts's dominantShare of any of its requests). */
  firstOf(c: number): PlacementRequest {
    return this.#requests[this.#first[c] as number] as PlacementRequest;
  }

  /**
   * What class `c`'s first compilation read from the index, and the class's fields as validation read them, or
   * false before that compilation (see KnownFacts).
   */
  known(c: number, into: KnownFacts): boolean {
    const pinned = this.#pinned[c] as number;
    if (pinned === pinUnknown) return false;
    into.cpu = this.#cpu[c] as number;
    into.memory = this.#memory[c] as number;
    into.disk = this.#disk[c] as number;
    into.gpu = this.#gpu[c];
    into.constraints = this.#constraints[c];
    into.preferences = this.#preferences[c];
    into.imageId = this.#imageId[c];
    into.strategy = this.#strategy[c];
    into.shared = this.#shared[c] as SignatureFacts;
    into.imageHolders = this.#image[c];
    into.pinnedSlot = pinned === notPinned ? undefined : pinned;
    return true;
  }

  /** Records what class `c`'s first compilation read. */
  learn(
    c: number,
    shared: SignatureFacts,
    imageHolders: Uint32Array | undefined,
    pinnedSlot: number | undefined,
  ): void {
    this.#shared[c] = shared;
    this.#image[c] = imageHolders;
    this.#pinned[c] = pinnedSlot === undefined ? notPinned : pinnedSlot;
  }

  /** The rejection-reuse key of class `c`, built once per class. */
  rejectionKey(c: number, key: (r: PlacementRequest) => string): string {
    let k = this.#rejectionKey[c];
    if (k === undefined) {
      k = key(this.firstOf(c));
      this.#rejectionKey[c] = k;
    }
    return k;
  }
}

/**
 * The batch order as request indexes (priority higher first, dominant share larger first, then id), from the
 * classes: the share is computed once per class, classes are ranked by share, and the requests are put in order
 * by two stable counting sorts (share rank, then priority rank), so no object or array is made per request or
 * per group. Runs of one (priority, share) key keep the batch's order and are sorted by id only when they are
 * not in id order already (callers usually number their requests in order).
 */
export class OrderTables {
  static #instance = new OrderTables();
  #inUse = false;
  #sortedShares = new Float64Array(0);
  #classShare = new Float64Array(0);
  #shareRank = new Int32Array(0);
  #counts = new Int32Array(0);
  #byShare = new Int32Array(0);
  #prioRank = new Int32Array(0);
  readonly #prios = new Map<number, number>();
  #prioList: number[] = [];

  static take(): OrderTables {
    const t = OrderTables.#instance.#inUse ? new OrderTables() : OrderTables.#instance;
    t.#inUse = true;
    return t;
  }

  release(): void {
    this.#inUse = false;
  }

  order(
    requests: readonly PlacementRequest[],
    classes: RequestClasses,
    share: (r: PlacementRequest) => number,
  ): number[] {
    const n = requests.length;
    const k = classes.count;
    this.#grow(n, k);
    const classShare = this.#classShare;
    for (let c = 0; c < k; c++) classShare[c] = share(classes.firstOf(c));
    // The distinct shares, ascending: a typed array's own sort (a comparator made V8 copy it, ~20 KiB a batch).
    // Equal shares of different classes are one key: a run of them is ordered by id across the classes.
    const sorted = this.#sortedShares;
    sorted.set(classShare.subarray(0, k));
    sorted.subarray(0, k).sort();
    let distinct = 0;
    for (let s = 0; s < k; s++)
      if (s === 0 || (sorted[s] as number) !== (sorted[distinct - 1] as number))
        sorted[distinct++] = sorted[s] as number;
    // Rank 0 is the largest share.
    const shareRank = this.#shareRank;
    for (let c = 0; c < k; c++)
      shareRank[c] = distinct - 1 - rankOf(sorted, distinct, classShare[c] as number);
    const ranks = distinct;
    const prioRank = this.#rankPriorities(n, classes.priority);
    const prioRanks = this.#prioList.length;
    const classOf = classes.classOf;
    // Stable counting sort by share rank, then by priority rank: (priority, share) order, batch order within.
    const byShareOrder = this.#byShare;
    const counts = this.#countsFor(Math.max(ranks, prioRanks) + 1);
    counts.fill(0, 0, ranks + 1);
    for (let i = 0; i < n; i++) {
      const r = (shareRank[classOf[i] as number] as number) + 1;
      counts[r] = (counts[r] as number) + 1;
    }
    for (let r = 1; r <= ranks; r++) counts[r] = (counts[r] as number) + (counts[r - 1] as number);
    for (let i = 0; i < n; i++) {
      const r = shareRank[classOf[i] as number] as number;
      byShareOrder[counts[r] as number] = i;
      counts[r] = (counts[r] as number) + 1;
    }
    // A plain array: the plan keeps it, and a new Int32Array of n (an array buffer per batch) cost ~3x the time
    // of the whole counting sort in profiles.
    const order = new Array<number>(n);
    counts.fill(0, 0, prioRanks + 1);
    for (let i = 0; i < n; i++) {
      const r = (prioRank[i] as number) + 1;
      counts[r] = (counts[r] as number) + 1;
    }
    for (let r = 1; r <= prioRanks; r++) counts[r] = (counts[r] as number) + (counts[r - 1] as number);
    for (let p = 0; p < n; p++) {
      const i = byShareOrder[p] as number;
      const r = prioRank[i] as number;
      order[counts[r] as number] = i;
      counts[r] = (counts[r] as number) + 1;
    }
    if (n > 0 && counts[prioRanks - 1] !== n)
      assert(false, 'batch order holds every request once', { ordered: counts[prioRanks - 1], n });
    this.#sortRunsById(requests, order, prioRank, shareRank, classOf);
    return order;
  }

  #countsFor(size: number): Int32Array {
    if (this.#counts.length < size) this.#counts = new Int32Array(Math.max(size, 2 * this.#counts.length));
    return this.#counts;
  }

  #grow(n: number, k: number): void {
    if (this.#byShare.length < n) {
      const size = Math.max(n, 2 * this.#byShare.length, 64);
      this.#byShare = new Int32Array(size);
      this.#prioRank = new Int32Array(size);
    }
    if (this.#sortedShares.length < k) {
      const size = Math.max(k, 2 * this.#sortedShares.length, 64);
      this.#sortedShares = new Float64Array(size);
      this.#classShare = new Float64Array(size);
      this.#shareRank = new Int32Array(size);
    }
  }

  /** Per request its priority's rank, 0 for the highest; `#prioList` holds the distinct priorities. */
  #rankPriorities(n: number, priority: Int32Array): Int32Array {
    const prios = this.#prios;
    const list = this.#prioList;
    prios.clear();
    list.length = 0;
    // Most batches hold one or two priorities: a request like the one before skips the map.
    let last = Number.NaN;
    for (let i = 0; i < n; i++) {
      const p = priority[i] as number;
      if (p !== last && !prios.has(p)) {
        prios.set(p, 0);
        list.push(p);
      }
      last = p;
    }
    list.sort((a, b) => b - a);
    for (let r = 0; r < list.length; r++) prios.set(list[r] as number, r);
    const rank = this.#prioRank;
    last = Number.NaN;
    let lastRank = -1;
    for (let i = 0; i < n; i++) {
      const p = priority[i] as number;
      if (p !== last) {
        lastRank = prios.get(p) as number;
        last = p;
      }
      rank[i] = lastRank;
    }
    return rank;
  }

  /** Sorts each run of one (priority, share) key by id, when it is not in id order already. */
  #sortRunsById(
    requests: readonly PlacementRequest[],
    order: number[],
    prioRank: Int32Array,
    shareRank: Int32Array,
    classOf: Int32Array,
  ): void {
    const byId = (a: number, b: number): number => {
      const ia = (requests[a] as PlacementRequest).id;
      const ib = (requests[b] as PlacementRequest).id;
      return ia < ib ? -1 : ia > ib ? 1 : 0;
    };
    const n = order.length;
    let at = 0;
    while (at < n) {
      const first = order[at] as number;
      const prio = prioRank[first] as number;
      const share = shareRank[classOf[first] as number] as number;
      let end = at + 1;
      let sorted = true;
      for (
        ;
        end < n &&
        prioRank[order[end] as number] === prio &&
        shareRank[classOf[order[end] as number] as number] === share;
        end++
      )
        if (sorted) sorted = byId(order[end - 1] as number, order[end] as number) < 0;
      if (!sorted) {
        const run = order.slice(at, end).sort(byId);
        for (let k = 0; k < run.length; k++) order[at + k] = run[k] as number;
      }
      at = end;
    }
  }
}

/** The index of `value` in the ascending distinct values `sorted[0, count)`, where it is known to be. */
function rankOf(sorted: Float64Array, count: number, value: number): number {
  let lo = 0;
  let hi = count - 1;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((sorted[mid] as number) < value) lo = mid + 1;
    else hi = mid;
  }
  if (sorted[lo] !== value)
    assert(false, 'a class share is among the distinct shares', { value, at: sorted[lo] });
  return lo;
}

function samePreference(x: Preference, y: Preference): boolean {
  return x.weight === y.weight && sameConstraint(x.constraint, y.constraint);
}

/** One step of a multiplicative hash; the rotation carries high bits down, which a multiplication never does. */
function mix(h: number, v: number): number {
  const x = Math.imul(h ^ v, 0x01000193);
  return (x << 13) | (x >>> 19);
}

/** A string's length and three of its characters: enough to tell most values apart, without a loop. */
function textHash(h: number, s: string | undefined): number {
  if (s === undefined) return mix(h, -1);
  const n = s.length;
  return mix(mix(mix(mix(h, n), s.charCodeAt(0)), s.charCodeAt(n >>> 1)), s.charCodeAt(n - 1));
}

function constraintHash(h0: number, c: Constraint): number {
  let h = textHash(mix(h0, c.op.length), c.label);
  if (c.op === 'eq') h = textHash(h, c.value);
  else if (c.op !== 'exists') {
    h = mix(h, c.values.length);
    for (let k = 0; k < c.values.length; k++) h = textHash(h, c.values[k]);
  }
  return h;
}

function classHash(f: RequestFields): number {
  let h = mix(mix(mix(0x811c9dc5, f.cpu), f.memory), f.disk);
  const g = f.gpu;
  if (g !== undefined) h = textHash(mix(mix(h, g.count ?? -1), g.milli ?? -1), g.model);
  const cs = f.constraints;
  if (cs !== undefined) for (let k = 0; k < cs.length; k++) h = constraintHash(h, cs[k] as Constraint);
  const ps = f.preferences;
  if (ps !== undefined)
    for (let k = 0; k < ps.length; k++) {
      const p = ps[k] as Preference;
      h = constraintHash(mix(h, p.weight), p.constraint);
    }
  h = textHash(textHash(textHash(h, f.imageId), f.pinnedNode), f.strategy);
  // murmur3's finaliser: the table indexes by the low bits.
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) | 0;
}
