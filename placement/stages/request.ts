/**
 * A request compiled, just before it is placed, into what the stages read on every candidate: flat numbers, the resolved
 * spread group and its eligible domains, and the per-class verdict cache.
 */
import type { Map as IMap } from 'immutable';
import { type AllocationShape, bucketCount, type IndexReader, pageShift } from '../cluster-index.js';
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

export interface CompiledRequest {
  readonly req: PlacementRequest;
  readonly strategy: Strategy;
  readonly cpu: number;
  readonly memory: number;
  readonly disk: number;
  readonly gpu: GpuRequest | undefined;
  readonly constraints: readonly Constraint[];
  readonly preferences: readonly Preference[];
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
  /** What placing this request takes from its node, given the devices picked there. */
  allocation(gpuDevices: readonly { readonly device: number; readonly milli: number }[]): AllocationShape;
  /** Facts shared by every request of the batch with the same constraints and GPU need. */
  readonly shared: SignatureFacts;
  /** The batch's cache, for facts that are not per signature. */
  readonly batch: BatchCache;
  /** Per feasibility class: its verdict for this request (see feasibility.ts), filled lazily; shared. */
  classVerdicts: Int16Array;
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
}

/** Per-batch cache of signature facts, keyed by constraints and GPU need. */
/**
 * Signature facts depend only on the feasibility classes and their membership, which change only when nodes
 * are registered, updated or removed — not when they are allocated. They are therefore shared by every batch
 * planned against versions with the same class membership (keyed weakly by the membership map's identity), so
 * a steady stream of batches does not re-evaluate every class for every constraint signature.
 */
const factsByMembership = new WeakMap<object, Map<string, SignatureFacts>>();

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

export class BatchCache {
  readonly #bySignature: Map<string, SignatureFacts>;
  /** Per signature, for this batch's builder only: where each bucket's walk may start (see BucketCursor). */
  readonly #cursors = new WeakMap<SignatureFacts, BucketCursor>();

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
    const walk = new ClassWalk(index, req, limit);
    walks.push(walk);
    return walk;
  }

  /** The batch's walk cursor for requests of one signature. */
  cursor(shared: SignatureFacts, index: IndexReader): BucketCursor {
    let c = this.#cursors.get(shared);
    if (c === undefined) {
      c = new BucketCursor(index);
      this.#cursors.set(shared, c);
    }
    return c;
  }

  constructor(index?: IndexReader) {
    const token = index?.classMembership;
    let shared = token === undefined ? undefined : factsByMembership.get(token);
    if (shared === undefined) {
      shared = new Map();
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
    const key = signatureKey(req);
    let facts = this.#bySignature.get(key);
    if (facts === undefined) {
      facts = {
        verdicts: new Int16Array(index.classes.length).fill(verdictUnknown),
        passing: undefined,
        domains: new Map(),
      };
      this.#bySignature.set(key, facts);
    }
    return facts;
  }
}

/**
 * For one signature and one batch: per free-capacity bucket, a page before which the bucket holds no node of
 * a class the signature passes, except the few listed as pending. A constrained bin-packing walk visits the
 * pending nodes, then starts the bucket at that page instead of page 0, so the nodes it can never take (e.g.
 * every small instance for `instanceType notIn [c8]`, which crowd the tightest buckets) are stepped over
 * once per batch, not once per request. Within a batch classes do not change; a node can only enter a bucket
 * by an allocation, and the builder logs each entry, so every node that entered a known prefix since is
 * pending until a walk finds it gone or of a failing class. The walk sees the passing nodes in the order a
 * full scan would.
 */
export class BucketCursor {
  readonly #page = new Int32Array(bucketCount);
  readonly #seen = new Int32Array(bucketCount);
  /**
   * Per bucket, made on first use: a batch makes a cursor per constraint signature (about 20 on the bench), most
   * touch a few buckets, and 64 arrays each through Array.from cost ~5% of a 100,000-node batch in profiles.
   */
  readonly #pending: (number[] | undefined)[] = new Array(bucketCount).fill(undefined);
  constructor(index: IndexReader) {
    for (let b = 0; b < bucketCount; b++) this.#seen[b] = index.bucketEntries(b).length;
  }

  /** Nodes of bucket `b` before `start(b)` to visit first, ascending; call `start` before reading them. */
  pending(b: number): number[] {
    let list = this.#pending[b];
    if (list === undefined) {
      list = [];
      this.#pending[b] = list;
    }
    return list;
  }

  /** The page bucket `b`'s scan may start at, after taking in the nodes that entered it. */
  start(index: IndexReader, b: number): number {
    const log = index.bucketEntries(b);
    const page = this.#page[b] as number;
    const pending = this.pending(b);
    for (let i = this.#seen[b] as number; i < log.length; i++) {
      const slot = log[i] as number;
      if (slot >>> pageShift < page) insertSorted(pending, slot);
    }
    this.#seen[b] = log.length;
    return page;
  }

  /** Records that bucket `b` holds no passing node in [start, page) (the walk looked at every one of them). */
  advance(b: number, page: number): void {
    if (page > (this.#page[b] as number)) this.#page[b] = page;
  }
}

/** Same GPU count or share (the model is part of the signature). */
function sameGpuNeed(a: GpuRequest | undefined, b: GpuRequest | undefined): boolean {
  if (a === b) return true;
  return a !== undefined && b !== undefined && a.count === b.count && a.milli === b.milli;
}

function insertSorted(list: number[], slot: number): void {
  let lo = 0;
  let hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((list[mid] as number) < slot) lo = mid + 1;
    else hi = mid;
  }
  if (list[lo] !== slot) list.splice(lo, 0, slot);
}

/** The signature of a request with no GPU need and no constraints, the most common one. */
const plainKey = JSON.stringify([0, []]);

/**
 * What class verdicts depend on, encoded without ambiguity: whether GPUs are asked for and of which model (a
 * model named `*` is a model name like any other, not "any model"), and the constraints field by field. These
 * facts are shared across batches, so two requests with different answers must never meet under one key.
 */
export function signatureKey(req: PlacementRequest): string {
  if (req.gpu === undefined && (req.constraints === undefined || req.constraints.length === 0))
    return plainKey;
  const gpu = req.gpu === undefined ? 0 : req.gpu.model === undefined ? 1 : ['model', req.gpu.model];
  const constraints = (req.constraints ?? []).map((c) =>
    c.op === 'eq'
      ? [c.label, c.op, c.value]
      : c.op === 'exists'
        ? [c.label, c.op]
        : [c.label, c.op, c.values],
  );
  return JSON.stringify([gpu, constraints]);
}

/**
 * Compiles a request against an index. Spread domains are the label values of the ready nodes that satisfy
 * the request's required constraints: the domains the request could land in.
 */
export function compileRequest(
  index: IndexReader,
  req: PlacementRequest,
  batchStrategy: Strategy,
  cache: BatchCache = new BatchCache(),
): CompiledRequest {
  const constraints = req.constraints ?? [];
  const shared = cache.facts(index, req);
  let spread: CompiledRequest['spread'];
  if (req.spread !== undefined) {
    const label = req.spread.label;
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
    const group = req.spread.group ?? req.tenant;
    const counts = index.spreadCounts(group, label);
    let minCount = domains.length === 0 ? 0 : Number.POSITIVE_INFINITY;
    for (const d of domains) minCount = Math.min(minCount, counts.get(d) ?? 0);
    spread = { group, label, maxSkew: req.spread.maxSkew, domains, counts, minCount };
  }
  const pinned = req.pinnedNode === undefined ? undefined : (index.slotOf(req.pinnedNode) ?? -1);
  return {
    req,
    strategy: req.strategy ?? batchStrategy,
    cpu: req.resources.cpu,
    memory: req.resources.memory,
    disk: req.resources.disk,
    gpu: req.gpu,
    constraints,
    preferences: req.preferences ?? [],
    antiAffinity: req.antiAffinity,
    antiAffinityCounts:
      req.antiAffinity === undefined ? undefined : index.antiAffinityCounts(req.antiAffinity.group),
    spread,
    pinnedSlot: pinned,
    imageHolders: req.imageId === undefined ? undefined : imageFacts(index, req.imageId).holders,
    allocation: (gpuDevices) => {
      // Built once per placement with only the fields that apply (exactOptionalPropertyTypes), no spreads.
      const shape: {
        resources: typeof req.resources;
        gpuDevices: typeof gpuDevices;
        antiAffinityGroup?: string;
        spread?: { group: string; label: string };
      } = {
        resources: req.resources,
        gpuDevices,
      };
      if (req.antiAffinity !== undefined) shape.antiAffinityGroup = req.antiAffinity.group;
      if (spread !== undefined) shape.spread = { group: spread.group, label: spread.label };
      return shape;
    },
    shared,
    batch: cache,
    classVerdicts: shared.verdicts,
  };
}
