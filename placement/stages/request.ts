/**
 * A request compiled, just before it is placed, into what the stages read on every candidate: flat numbers, the resolved
 * spread group and its eligible domains, and the per-class verdict cache.
 */
import { Map as IMap } from 'immutable';
import type { AllocationShape, ClassInfo, IndexReader } from '../cluster-index.js';
import type {
  AntiAffinityRule,
  Constraint,
  GpuRequest,
  PlacementRequest,
  Preference,
  Strategy,
} from '../types.js';
import { labelValue } from '../validate.js';
import { ClassWalk } from './class-walk.js';
import { constraintHolds, verdictUnknown } from './feasibility.js';
import type { PassMask } from './pass-mask.js';

export interface CompiledRequest {
  readonly req: PlacementRequest;
  readonly strategy: Strategy;
  readonly cpu: number;
  readonly memory: number;
  readonly disk: number;
  readonly gpu: GpuRequest | undefined;
  readonly constraints: readonly Constraint[];
  readonly preferences: readonly Preference[];
  /**
   * The request's image, copied from `req` once at compilation: the scorers read it for every candidate, and a
   * property of `req` (requests come in dozens of hidden classes) is a megamorphic lookup each time.
   */
  readonly imageId: string | undefined;
  readonly antiAffinity: AntiAffinityRule | undefined;
  readonly spread:
    | {
        readonly group: string;
        readonly label: string;
        readonly maxSkew: number;
        readonly domains: readonly string[];
        /** The group's count per domain, and its least loaded eligible domain's count, as of compilation. */
        readonly counts: IMap<string, number>;
        readonly minCount: number;
        /**
         * The spread label's values as a domain index: per feasibility class, the id of its value (-1: no such
         * label); per value id, whether the rule admits it and its zone-spread score. A group-rule walk visits
         * hundreds of nodes per request, and reading each one's label and count cost ~25% of a spread batch.
         */
        readonly valueOfClass: Int32Array;
        readonly valueHolds: Uint8Array;
        readonly valueScore: Float64Array;
      }
    | undefined;
  /**
   * Slots holding the request's image (when it names one), one bit per slot: locality is one word load per
   * candidate (a Set lookup cost about 10% of a batch's samples in profiles).
   */
  readonly imageHolders: Uint32Array | undefined;
  /** The anti-affinity group's count per slot, as of compilation. */
  readonly antiAffinityCounts: IMap<number, number> | undefined;
  readonly pinnedSlot: number | undefined;
  /**
   * What placing this request takes from its node, given the devices picked there. The shape may be reused by
   * the next call: pass it to the index at once, do not keep it.
   */
  allocation(gpuDevices: readonly { readonly device: number; readonly milli: number }[]): AllocationShape;
  /** Facts shared by every request of the batch with the same constraints and GPU need. */
  readonly shared: SignatureFacts;
  /** The batch's cache, for facts that are not per signature. */
  readonly batch: BatchCache;
  /** Per feasibility class: its verdict for this request (see feasibility.ts), filled lazily; shared. */
  classVerdicts: Int16Array;
}

/**
 * What compiling a request reads from the index that every request of its request class (classes.ts) reads
 * alike: planBatch passes what the class's first compilation found, and compileRequest skips the lookups. With
 * them the class's fields as validation read them (classes.ts keeps them in its tables) and whether this request
 * has a group rule: compileRequest then reads none of the request's own properties unless it is `grouped` (each
 * such read is a megamorphic lookup: requests come in dozens of hidden classes).
 */
export interface KnownFacts {
  shared: SignatureFacts;
  imageHolders: Uint32Array | undefined;
  pinnedSlot: number | undefined;
  cpu: number;
  memory: number;
  disk: number;
  gpu: GpuRequest | undefined;
  constraints: readonly Constraint[] | undefined;
  preferences: readonly Preference[] | undefined;
  imageId: string | undefined;
  strategy: Strategy | undefined;
  /** Per request: it has a spread or anti-affinity rule (RequestClasses.grouped). */
  grouped: boolean;
}

/**
 * What requests with equal constraints and GPU need have in common within one batch. Classes and labels do
 * not change while a batch is planned (only allocations do), so these are computed once per batch.
 */
export interface SignatureFacts {
  readonly verdicts: Int16Array;
  /** Classes passing the class verdict and their node count, once computed. */
  passing: { readonly classes: readonly number[]; readonly nodes: number } | undefined;
  /** Spread label → eligible domains. */
  readonly domains: Map<string, readonly string[]>;
  /** The slots of passing classes as a bitset for masked bucket scans (pass-mask.ts), made on first use. */
  mask: PassMask | undefined;
}

/** Per-batch cache of signature facts, keyed by constraints and GPU need. */
/**
 * Signature facts depend only on the feasibility classes and their membership, which change only when nodes
 * are registered, updated or removed — not when they are allocated. They are therefore shared by every batch
 * planned against versions with the same class membership (keyed weakly by the membership map's identity), so
 * a steady stream of batches does not re-evaluate every class for every constraint signature.
 */
const factsByMembership = new WeakMap<object, SignatureRegistry>();

/**
 * Signature facts by a structural hash of the signature, each bucket checked field by field: a lookup builds no
 * key string (JSON of the constraints was ~100 B and a stringify per constrained request). `plain` holds the
 * facts of the most common signature, no GPU and no constraint, found without hashing.
 */
interface SignatureRegistry {
  plain: SignatureFacts | undefined;
  readonly byHash: Map<number, SignatureEntry[]>;
}

/** One signature and its facts. The signature is copied: requests are validated in place, not frozen. */
interface SignatureEntry {
  /** 0: no GPU; 1: GPUs of any model; a string: GPUs of that model (`*` is a model name like any other). */
  readonly gpu: 0 | 1 | string;
  readonly constraints: readonly Constraint[];
  readonly facts: SignatureFacts;
}

/** Per image: its holders as a bitset over slots (a locality check per candidate) and its candidate lists by bound. */
interface ImageFacts {
  readonly holders: Uint32Array;
  readonly candidates: Map<number, readonly number[]>;
}

/** Image facts, shared while the image → holders map of the index is the same object (see imageMembership). */
const imageFactsByMembership = new WeakMap<object, Map<string, ImageFacts>>();

function imageFacts(index: IndexReader, image: string): ImageFacts {
  const token = index.imageMembership;
  let byImage = imageFactsByMembership.get(token);
  if (byImage === undefined) {
    byImage = new Map();
    imageFactsByMembership.set(token, byImage);
  }
  let facts = byImage.get(image);
  if (facts === undefined) {
    const holders = new Uint32Array((index.slotCount + 31) >>> 5);
    for (const slot of index.nodesWithImage(image))
      holders[slot >>> 5] = (holders[slot >>> 5] as number) | (1 << (slot & 31));
    facts = { holders, candidates: new Map() };
    byImage.set(image, facts);
  }
  return facts;
}

/**
 * Class walks left by earlier batches, reused by later ones (planBatch is synchronous, and a
 * batch gives its own back only when it is planned). Bounded: a batch with unusually many classes does not pin
 * their arrays for good.
 */
const walkPool: ClassWalk[] = [];
const walkPoolMax = 512;

export class BatchCache {
  readonly #bySignature: SignatureRegistry;
  /** Per signature, for this batch's builder only: the class walks of its shapes by CPU (see ClassWalk). */
  readonly #walks = new WeakMap<SignatureFacts, Map<number, ClassWalk[]>>();

  /**
   * The batch's walk for `req`'s walk class: its signature (constraints, GPU model) and its shape (resources,
   * GPU count or share). Only for requests without group rules, whose feasibility reads nothing else.
   */
  classWalk(index: IndexReader, req: CompiledRequest, limit: number): ClassWalk {
    let byCpu = this.#walks.get(req.shared);
    if (byCpu === undefined) {
      byCpu = new Map();
      this.#walks.set(req.shared, byCpu);
    }
    let walks = byCpu.get(req.cpu);
    if (walks === undefined) {
      walks = [];
      byCpu.set(req.cpu, walks);
    }
    for (let i = 0; i < walks.length; i++) {
      const w = walks[i] as ClassWalk;
      if (w.memory === req.memory && w.disk === req.disk && sameGpuNeed(w.gpu, req.gpu)) return w;
    }
    const pooled = walkPool.pop();
    const walk = pooled === undefined ? new ClassWalk(index, req, limit) : pooled.reset(index, req, limit);
    walks.push(walk);
    this.#walksMade.push(walk);
    return walk;
  }

  /** Walks this batch took, given back to the pool by `release`. */
  readonly #walksMade: ClassWalk[] = [];

  /**
   * Gives the batch's walks back to the pool for the next batch. Call once the batch is planned; the cache must
   * not be used afterwards.
   */
  release(): void {
    for (const w of this.#walksMade) if (walkPool.length < walkPoolMax) walkPool.push(w);
    this.#walksMade.length = 0;
  }

  constructor(index?: IndexReader) {
    const token = index?.classMembership;
    let shared = token === undefined ? undefined : factsByMembership.get(token);
    if (shared === undefined) {
      shared = { plain: undefined, byHash: new Map() };
      if (token !== undefined) factsByMembership.set(token, shared);
    }
    this.#bySignature = shared;
  }

  /**
   * Up to `max` slots holding `image`, materialised once per image and holder membership: image holders change
   * only when a node's spec does, so batches against versions with the same holders share the list.
   */
  imageCandidates(index: IndexReader, image: string, max: number): readonly number[] {
    const facts = imageFacts(index, image);
    let slots = facts.candidates.get(max);
    if (slots === undefined) {
      slots = index
        .nodesWithImage(image)
        .take(max)
        .toArray()
        .sort((a, b) => a - b);
      facts.candidates.set(max, slots);
    }
    return slots;
  }

  facts(index: IndexReader, req: PlacementRequest): SignatureFacts {
    const registry = this.#bySignature;
    const constraints = req.constraints ?? noConstraints;
    if (req.gpu === undefined && constraints.length === 0) {
      if (registry.plain === undefined) registry.plain = newFacts(index);
      return registry.plain;
    }
    const gpu = gpuSignature(req.gpu);
    const hash = signatureHash(gpu, constraints);
    let entries = registry.byHash.get(hash);
    if (entries === undefined) {
      entries = [];
      registry.byHash.set(hash, entries);
    }
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i] as SignatureEntry;
      if (e.gpu === gpu && sameList(e.constraints, constraints, sameConstraint)) return e.facts;
    }
    const entry: SignatureEntry = {
      gpu,
      constraints: constraints.map(copyConstraint),
      facts: newFacts(index),
    };
    entries.push(entry);
    return entry.facts;
  }
}

/** Same GPU count or share (the model is part of the signature). */
function sameGpuNeed(a: GpuRequest | undefined, b: GpuRequest | undefined): boolean {
  if (a === b) return true;
  return a !== undefined && b !== undefined && a.count === b.count && a.milli === b.milli;
}

const noConstraints: readonly Constraint[] = Object.freeze([]);
const noPreferences: readonly Preference[] = Object.freeze([]);

function newFacts(index: IndexReader): SignatureFacts {
  return {
    verdicts: new Int16Array(index.classes.length).fill(verdictUnknown),
    passing: undefined,
    domains: new Map(),
    mask: undefined,
  };
}

function gpuSignature(gpu: GpuRequest | undefined): 0 | 1 | string {
  return gpu === undefined ? 0 : gpu.model === undefined ? 1 : gpu.model;
}

/** FNV-1a over the signature's fields; collisions only cost a field-by-field comparison. */
function signatureHash(gpu: 0 | 1 | string, constraints: readonly Constraint[]): number {
  let h = typeof gpu === 'string' ? hashText(0x811c9dc5 ^ 2, gpu) : 0x811c9dc5 ^ gpu;
  for (let i = 0; i < constraints.length; i++) {
    const c = constraints[i] as Constraint;
    h = hashText(Math.imul(h ^ 0x1f, 0x01000193), c.label);
    h = hashText(Math.imul(h ^ 0x2f, 0x01000193), c.op);
    if (c.op === 'eq') h = hashText(h, c.value);
    else if (c.op !== 'exists')
      for (let k = 0; k < c.values.length; k++)
        h = hashText(Math.imul(h ^ 0x3f, 0x01000193), c.values[k] as string);
  }
  return h | 0;
}

function hashText(h: number, text: string): number {
  let x = h;
  for (let i = 0; i < text.length; i++) x = Math.imul(x ^ text.charCodeAt(i), 0x01000193);
  return x;
}

function copyConstraint(c: Constraint): Constraint {
  if (c.op === 'eq') return Object.freeze({ label: c.label, op: c.op, value: c.value });
  if (c.op === 'exists') return Object.freeze({ label: c.label, op: c.op });
  return Object.freeze({ label: c.label, op: c.op, values: Object.freeze([...c.values]) });
}

export function sameList<T>(
  a: readonly T[] | undefined,
  b: readonly T[] | undefined,
  same: (x: T, y: T) => boolean,
): boolean {
  const la = a?.length ?? 0;
  if (la !== (b?.length ?? 0)) return false;
  for (let i = 0; i < la; i++)
    if (!same((a as readonly T[])[i] as T, (b as readonly T[])[i] as T)) return false;
  return true;
}

export function sameConstraint(x: Constraint, y: Constraint): boolean {
  if (x.label !== y.label || x.op !== y.op) return false;
  if (x.op === 'eq') return x.value === (y as typeof x).value;
  if (x.op === 'exists') return true;
  const xv = x.values;
  const yv = (y as typeof x).values;
  if (xv.length !== yv.length) return false;
  for (let i = 0; i < xv.length; i++) if (xv[i] !== yv[i]) return false;
  return true;
}

type Spread = CompiledRequest['spread'];
type Devices = readonly { readonly device: number; readonly milli: number }[];

/**
 * A compiled request as a reusable object. planBatch fills one instance again for each request of its batch
 * (`compileRequest(..., into)`): a fresh object literal, its `allocation` closure and the defaulted empty lists
 * were ~400 B per request, the largest allocation of a batch in profiles. Nothing keeps a compiled request past
 * the placement it was compiled for (class walks copy what they need).
 */
class Compiled implements CompiledRequest {
  req: PlacementRequest = placeholderRequest;
  strategy: Strategy = 'binpack';
  cpu = 0;
  memory = 0;
  disk = 0;
  gpu: GpuRequest | undefined = undefined;
  constraints: readonly Constraint[] = noConstraints;
  preferences: readonly Preference[] = noPreferences;
  imageId: string | undefined = undefined;
  antiAffinity: AntiAffinityRule | undefined = undefined;
  spread: Spread = undefined;
  /** The object `spread` points to for spread requests, refilled for each (see compileSpread). */
  spreadScratch: MutableSpread | undefined = undefined;
  imageHolders: Uint32Array | undefined = undefined;
  antiAffinityCounts: IMap<number, number> | undefined = undefined;
  pinnedSlot: number | undefined = undefined;
  shared: SignatureFacts;
  batch: BatchCache;
  classVerdicts: Int16Array;
  /** The request's resources, rewritten by each compilation (the index reads them within the allocating call). */
  readonly #resources = { cpu: 0, memory: 0, disk: 0 };

  /** Sets the shape's numbers (and `resources`, which `allocation` hands to the index). */
  setShape(cpu: number, memory: number, disk: number): void {
    this.cpu = cpu;
    this.memory = memory;
    this.disk = disk;
    this.#resources.cpu = cpu;
    this.#resources.memory = memory;
    this.#resources.disk = disk;
  }
  /** The shape of a placement without group counts, rewritten by each call of `allocation`. */
  readonly #plainShape: { resources: PlacementRequest['resources']; gpuDevices: Devices } = {
    resources: this.#resources,
    gpuDevices: [],
  };

  constructor(shared: SignatureFacts, batch: BatchCache) {
    this.shared = shared;
    this.batch = batch;
    this.classVerdicts = shared.verdicts;
  }

  /**
   * What placing the request takes from its node. The shape of a request without group rules is one object
   * per compiled request, valid until the next call (the index reads it within the allocating call).
   */
  allocation(gpuDevices: Devices): AllocationShape {
    if (this.antiAffinity === undefined && this.spread === undefined) {
      const shape = this.#plainShape;
      shape.gpuDevices = gpuDevices;
      return shape;
    }
    const req = this.req;
    // Only the fields that apply (exactOptionalPropertyTypes), no spreads.
    const shape: {
      resources: PlacementRequest['resources'];
      gpuDevices: Devices;
      antiAffinityGroup?: string;
      spread?: { group: string; label: string };
    } = { resources: req.resources, gpuDevices };
    if (this.antiAffinity !== undefined) shape.antiAffinityGroup = this.antiAffinity.group;
    if (this.spread !== undefined) shape.spread = { group: this.spread.group, label: this.spread.label };
    return shape;
  }
}

const placeholderRequest: PlacementRequest = Object.freeze({
  id: '',
  tenant: '',
  resources: Object.freeze({ cpu: 0, memory: 0, disk: 0 }),
});

/**
 * Compiles a request against an index. Spread domains are the label values of the ready nodes that satisfy
 * the request's required constraints: the domains the request could land in.
 */
export function compileRequest(
  index: IndexReader,
  req: PlacementRequest,
  batchStrategy: Strategy,
  cache: BatchCache = new BatchCache(),
  into?: CompiledRequest,
  known?: KnownFacts,
): CompiledRequest {
  if (known !== undefined) return compileKnown(index, req, batchStrategy, cache, into, known);
  const constraints = req.constraints ?? noConstraints;
  const shared = cache.facts(index, req);
  const c = into instanceof Compiled && into.batch === cache ? into : new Compiled(shared, cache);
  let spread: Spread;
  if (req.spread !== undefined) {
    c.spreadScratch ??= newSpread();
    spread = compileSpread(index, req, req.spread, constraints, shared, c.spreadScratch);
  }
  c.req = req;
  c.strategy = req.strategy ?? batchStrategy;
  const res = req.resources;
  c.setShape(res.cpu, res.memory, res.disk);
  c.gpu = req.gpu;
  c.constraints = constraints;
  c.preferences = req.preferences ?? noPreferences;
  c.imageId = req.imageId;
  c.antiAffinity = req.antiAffinity;
  c.antiAffinityCounts =
    req.antiAffinity === undefined ? undefined : index.antiAffinityCounts(req.antiAffinity.group);
  c.spread = spread;
  c.pinnedSlot = req.pinnedNode === undefined ? undefined : (index.slotOf(req.pinnedNode) ?? -1);
  c.imageHolders = c.imageId === undefined ? undefined : imageFacts(index, c.imageId).holders;
  c.shared = shared;
  c.classVerdicts = shared.verdicts;
  return c;
}

/**
 * compileRequest for a request of a known class: the class's fields and facts come from `known`, so a request
 * without group rules has none of its own properties read here (the same values: validation read them, and the
 * class holds exactly the requests whose fields are equal, classes.ts).
 */
function compileKnown(
  index: IndexReader,
  req: PlacementRequest,
  batchStrategy: Strategy,
  cache: BatchCache,
  into: CompiledRequest | undefined,
  known: KnownFacts,
): CompiledRequest {
  const constraints = known.constraints ?? noConstraints;
  const shared = known.shared;
  const c = into instanceof Compiled && into.batch === cache ? into : new Compiled(shared, cache);
  let spread: Spread;
  let antiAffinity: AntiAffinityRule | undefined;
  if (known.grouped) {
    if (req.spread !== undefined) {
      c.spreadScratch ??= newSpread();
      spread = compileSpread(index, req, req.spread, constraints, shared, c.spreadScratch);
    }
    antiAffinity = req.antiAffinity;
  }
  c.req = req;
  c.strategy = known.strategy ?? batchStrategy;
  c.setShape(known.cpu, known.memory, known.disk);
  c.gpu = known.gpu;
  c.constraints = constraints;
  c.preferences = known.preferences ?? noPreferences;
  c.imageId = known.imageId;
  c.antiAffinity = antiAffinity;
  c.antiAffinityCounts =
    antiAffinity === undefined ? undefined : index.antiAffinityCounts(antiAffinity.group);
  c.spread = spread;
  c.pinnedSlot = known.pinnedSlot;
  c.imageHolders = known.imageHolders;
  c.shared = shared;
  c.classVerdicts = shared.verdicts;
  return c;
}

function compileSpread(
  index: IndexReader,
  req: PlacementRequest,
  rule: NonNullable<PlacementRequest['spread']>,
  constraints: readonly Constraint[],
  shared: SignatureFacts,
  into?: MutableSpread,
): Spread {
  const label = rule.label;
  let domains = shared.domains.get(label);
  if (domains === undefined) {
    const found = new Set<string>();
    for (const info of index.classes) {
      if (info.state !== 'ready') continue;
      if (index.slotsOfClass(info.id).size === 0) continue;
      const v = labelValue(info.labels, label);
      if (v !== undefined && constraints.every((c) => constraintHolds(c, info.labels))) found.add(v);
    }
    domains = [...found].sort();
    shared.domains.set(label, domains);
  }
  const group = rule.group ?? req.tenant;
  const counts = index.spreadCounts(group, label);
  let minCount = domains.length === 0 ? 0 : Number.POSITIVE_INFINITY;
  for (const d of domains) minCount = Math.min(minCount, counts.get(d) ?? 0);
  const maxSkew = rule.maxSkew;
  const values = labelValuesOf(index, label);
  const n = values.values.length;
  // The compiled request's own arrays when they are long enough (entries past n are never read: value ids < n).
  const valueHolds = into !== undefined && into.valueHolds.length >= n ? into.valueHolds : new Uint8Array(n);
  const valueScore =
    into !== undefined && into.valueScore.length >= n ? into.valueScore : new Float64Array(n);
  for (let v = 0; v < n; v++) {
    const count = counts.get(values.values[v] as string) ?? 0;
    // The same arithmetic as spreadHolds and zoneSpreadScore on a node of this value.
    valueHolds[v] = count + 1 - minCount <= maxSkew ? 1 : 0;
    valueScore[v] = Math.max(0, 1 - (count - minCount) / maxSkew);
  }
  if (into === undefined) {
    return {
      group,
      label,
      maxSkew,
      domains,
      counts,
      minCount,
      valueOfClass: values.ofClass,
      valueHolds,
      valueScore,
    };
  }
  // Refilled in place: a spread object and two typed arrays per spread request were ~26 KiB a batch of 1,000.
  into.group = group;
  into.label = label;
  into.maxSkew = maxSkew;
  into.domains = domains;
  into.counts = counts;
  into.minCount = minCount;
  into.valueOfClass = values.ofClass;
  into.valueHolds = valueHolds;
  into.valueScore = valueScore;
  return into;
}

/** A compiled request's spread, refilled by compileSpread for each spread request it is compiled for. */
type MutableSpread = { -readonly [K in keyof NonNullable<Spread>]: NonNullable<Spread>[K] };

function newSpread(): MutableSpread {
  return {
    group: '',
    label: '',
    maxSkew: 1,
    domains: [],
    counts: IMap<string, number>(),
    minCount: 0,
    valueOfClass: new Int32Array(0),
    valueHolds: new Uint8Array(0),
    valueScore: new Float64Array(0),
  };
}

/** One label's values over the feasibility classes: the distinct values, and each class's value id (-1: none). */
interface LabelValues {
  readonly values: readonly string[];
  readonly ofClass: Int32Array;
}

/**
 * Per class list and label. A published class list never changes (a builder that adds a class copies it first);
 * a builder's own list may grow in place, so an entry is rebuilt when its length no longer matches.
 */
const labelValuesByClasses = new WeakMap<readonly ClassInfo[], Map<string, LabelValues>>();

function labelValuesOf(index: IndexReader, label: string): LabelValues {
  const classes = index.classes;
  let byLabel = labelValuesByClasses.get(classes);
  if (byLabel === undefined) {
    byLabel = new Map();
    labelValuesByClasses.set(classes, byLabel);
  }
  let known = byLabel.get(label);
  if (known === undefined || known.ofClass.length !== classes.length) {
    const ids = new Map<string, number>();
    const ofClass = new Int32Array(classes.length);
    for (let c = 0; c < classes.length; c++) {
      const value = labelValue((classes[c] as ClassInfo).labels, label);
      let id = -1;
      if (value !== undefined) {
        id = ids.get(value) ?? ids.size;
        ids.set(value, id);
      }
      ofClass[c] = id;
    }
    known = { values: [...ids.keys()], ofClass };
    byLabel.set(label, known);
  }
  return known;
}
