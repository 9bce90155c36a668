/**
 * planBatch: places a batch of requests against a snapshot and returns the plan with the new index version.
 *
 * Order inside a batch: priority first (higher first), then the largest dominant share first — the request's
 * largest demand as a share of the ready cluster's total of that resource (as in DRF) — then id. Placing the
 * biggest items first is first-fit-decreasing: small requests fill the gaps big ones leave, where the other
 * way round the big ones find the cluster already fragmented. The id tie-break makes the order total.
 *
 * The snapshot is never modified: the plan's index is a new version sharing every page it did not touch.
 * Placements see the earlier placements of the same batch (they allocate into the builder as they go).
 */
import { assert } from '../src/lib/assert.js';
import { ValidationError } from '../src/lib/errors.js';
import { createRng, type Rng } from '../src/lib/prng.js';
import { OrderTables, RequestClasses } from './classes.js';
import { ClusterIndex } from './cluster-index.js';
import { diagnose } from './diagnose.js';
import { batchRequestsMax } from './limits.js';
import { placeFollowers, placeOne, RunState } from './stack.js';
import { BatchCache, type CompiledRequest, compileRequest, type KnownFacts } from './stages/request.js';
import { type BinpackScorer, binpackScorers } from './stages/score-binpack.js';
import { isNodeScorer } from './stages/score-gpu.js';
import { defaultSelectLimits, type SelectLimits, selectLimitsMin } from './stages/select.js';
import type { Placement, PlacementRequest, Rejection, Resources, Strategy } from './types.js';
import { gpuMilliPerDevice, normalizeRequest, type RequestFields, shown } from './validate.js';

export { batchRequestsMax };

export interface PlanOptions {
  /** The cluster's default strategy; a request may override it. Default `binpack`. */
  readonly strategy?: Strategy;
  /** Which scorer bin-packing uses. Default `dot`, the one that fragmented least (see score-binpack.ts). */
  readonly binpackScorer?: BinpackScorer;
  /** Seed for the batch's random choices (spread start pages). Same seed and snapshot → same plan. */
  readonly seed?: number;
  /** Candidate bounds; defaults in stages/select.ts. */
  readonly limits?: Partial<SelectLimits>;
}

export interface Plan {
  /** The snapshot version the plan was made against. */
  readonly baseVersion: number;
  /** The new version with every placement of the plan allocated. */
  readonly index: ClusterIndex;
  /** One object per placement, in batch order; built from `placed` on first read. */
  readonly placements: readonly Placement[];
  readonly rejections: readonly Rejection[];
  /** Request ids in the order they were placed. */
  readonly order: readonly string[];
  /** The placements as flat arrays (what `placements` is built from on first read). */
  readonly placed: PlacedArrays;
  /** How the plan was made: requests placed by a run step (stack.ts) rather than a candidate walk. */
  readonly stats: { readonly runSteps: number };
}

/** The request's largest demand as a share of the ready cluster's total of that resource. */
export function dominantShare(req: PlacementRequest, total: Resources, gpuTotalMilli: number): number {
  const share = (asked: number, have: number): number => (asked === 0 ? 0 : have <= 0 ? 1 : asked / have);
  const gpuAsked =
    req.gpu === undefined ? 0 : (req.gpu.count ?? 0) * gpuMilliPerDevice + (req.gpu.milli ?? 0);
  return Math.max(
    share(req.resources.cpu, total.cpu),
    share(req.resources.memory, total.memory),
    share(req.resources.disk, total.disk),
    share(gpuAsked, gpuTotalMilli),
  );
}

/**
 * Plans a batch. Throws ValidationError (and plans nothing) when a request is malformed or two share an id;
 * a request that fits nowhere is a rejection in the plan, never an error.
 */
export function planBatch(
  snapshot: ClusterIndex,
  requests: readonly PlacementRequest[],
  options: PlanOptions = {},
): Plan {
  if (!(snapshot instanceof ClusterIndex)) {
    throw new ValidationError('snapshot', 'must be a published ClusterIndex');
  }
  const { strategy, binpack, seed, limits } = normalizeOptions(options);
  const rng = createRng((seed ^ Math.imul(snapshot.version, 0x9e3779b1)) | 0);
  const classes = RequestClasses.take(Array.isArray(requests) ? requests.length : 0);
  try {
    const valid = normalizeRequests(requests, classes);
    classes.bind(valid);
    const order = batchOrder(valid, classes, snapshot);
    return placeInOrder(snapshot, valid, classes, order, strategy, binpack, limits, rng);
  } finally {
    classes.release();
  }
}

/** A request with no constraints or GPU: its signature facts are a valid placeholder for `KnownFacts`. */
const noRequest: PlacementRequest = Object.freeze({
  id: 'none',
  tenant: 'none',
  resources: Object.freeze({ cpu: 0, memory: 0, disk: 0 }),
});

function placeInOrder(
  snapshot: ClusterIndex,
  valid: PlacementRequest[],
  classes: RequestClasses,
  order: readonly number[],
  strategy: Strategy,
  binpack: BinpackScorer,
  limits: SelectLimits,
  rng: Rng,
): Plan {
  const builder = snapshot.edit();
  const cache = new BatchCache(snapshot);
  const placed = new PlacedBuilder(valid.length);
  const rejections: Rejection[] = [];
  // Within a batch free capacity only shrinks, so a request with no group rule that fits nowhere is followed by
  // every later request of the same shape and constraints: those skip the candidate walk. Spread and
  // anti-affinity requests are always re-planned, because placements of their group can change their answer.
  // The rejection's numbers (shortfalls, short counts, closest node) describe the cluster as the request meets
  // it, so it is reused as it stands only while nothing was placed since; otherwise it is diagnosed afresh.
  const rejectedShapes = new Map<string, { rejection: Rejection; placedBefore: number }>();
  const run = new RunState();
  const classOf = classes.classOf;
  // One compiled request, filled again for each request (compileRequest's `into`): nothing keeps it longer.
  let compiled: CompiledRequest | undefined;
  // Filled from a request class's tables for each compilation after its first (see RequestClasses.known); one
  // per batch, not per module, so a getter planning a batch of its own cannot overwrite it mid-compilation.
  const knownFacts: KnownFacts = {
    shared: cache.facts(builder, noRequest),
    imageHolders: undefined,
    pinnedSlot: undefined,
    cpu: 0,
    memory: 0,
    disk: 0,
    gpu: undefined,
    constraints: undefined,
    preferences: undefined,
    imageId: undefined,
    strategy: undefined,
    grouped: false,
  };
  const groupedOf = classes.grouped;
  const compile = (r: PlacementRequest, cls: number, grouped: boolean): CompiledRequest => {
    knownFacts.grouped = grouped;
    const known = classes.known(cls, knownFacts) ? knownFacts : undefined;
    compiled = compileRequest(builder, r, strategy, cache, compiled, known);
    if (known === undefined) classes.learn(cls, compiled.shared, compiled.imageHolders, compiled.pinnedSlot);
    return compiled;
  };
  for (let k = 0; k < order.length; k++) {
    const i = order[k] as number;
    const r = valid[i] as PlacementRequest;
    const cls = classOf[i] as number;
    const grouped = groupedOf[i] === 1;
    // The key is built only once some shape was rejected: most batches reject nothing.
    const key = grouped || rejectedShapes.size === 0 ? undefined : classes.rejectionKey(cls, rejectionKey);
    const earlier = key === undefined ? undefined : rejectedShapes.get(key);
    if (earlier !== undefined) {
      run.clear();
      if (earlier.placedBefore === placed.count) {
        rejections.push({
          ...earlier.rejection,
          requestId: r.id,
          message: `${earlier.rejection.message} (as for ${earlier.rejection.requestId} earlier in this batch)`,
        });
      } else {
        const rejection = diagnose(builder, compile(r, cls, grouped));
        rejections.push(rejection);
        rejectedShapes.set(key as string, { rejection, placedBefore: placed.count });
      }
      continue;
    }
    const req = compile(r, cls, grouped);
    const slot = placeOne(builder, req, binpack, limits, rng, run, cls);
    if (slot >= 0) {
      placed.add(i, slot, run.score, run.devices);
      // The identical requests right after this one, placed on the same node in one step while it stays best.
      k += placeFollowers(builder, req, binpack, run, groupedOf, order, classOf, k + 1, placed);
    } else {
      const rejection = run.rejection as Rejection;
      rejections.push(rejection);
      if (!grouped)
        rejectedShapes.set(classes.rejectionKey(cls, rejectionKey), {
          rejection,
          placedBefore: placed.count,
        });
    }
  }
  cache.release();
  return new BatchPlan(
    snapshot.version,
    builder.publish(),
    valid,
    placed.seal(),
    rejections,
    order,
    run.steps,
  );
}

/**
 * The batch order as indexes into `requests`: priority (higher first), dominant share (larger first), id. The
 * share is a property of the request class (classes.ts), computed once per class; OrderTables sorts without an
 * object per request or per group.
 */
function batchOrder(
  requests: readonly PlacementRequest[],
  classes: RequestClasses,
  snapshot: ClusterIndex,
): number[] {
  const total = snapshot.readyCapacity;
  const gpuTotal = snapshot.readyGpuMilli;
  const tables = OrderTables.take();
  try {
    return tables.order(requests, classes, (r) => dominantShare(r, total, gpuTotal));
  } finally {
    tables.release();
  }
}

type Devices = readonly { readonly device: number; readonly milli: number }[];

/** The placements of a batch as flat arrays; `Plan.placed`. */
export interface PlacedArrays {
  /** Placements made; entries [0, count) of each array are used, in batch order. */
  readonly count: number;
  /** Index of the placed request in the batch as the caller gave it. */
  readonly request: Int32Array;
  /** Slot of the chosen node in `Plan.index` (`index.nodeId(slot)`). */
  readonly slot: Int32Array;
  /** Final normalised score of the chosen node, in [0, 1]. */
  readonly score: Float64Array;
  /** GPU devices of placement i, only for requests that asked for GPUs. */
  readonly gpuDevices: ReadonlyMap<number, Devices>;
}

class PlacedBuilder {
  count = 0;
  readonly request: Int32Array;
  readonly slot: Int32Array;
  readonly score: Float64Array;
  readonly gpuDevices = new Map<number, Devices>();
  constructor(capacity: number) {
    this.request = new Int32Array(capacity);
    this.slot = new Int32Array(capacity);
    this.score = new Float64Array(capacity);
  }
  add(request: number, slot: number, score: number, devices: Devices): void {
    const i = this.count++;
    this.request[i] = request;
    this.slot[i] = slot;
    this.score[i] = score;
    if (devices.length > 0) this.gpuDevices.set(i, devices);
  }
  seal(): PlacedArrays {
    return Object.freeze({
      count: this.count,
      request: this.request,
      slot: this.slot,
      score: this.score,
      gpuDevices: this.gpuDevices,
    });
  }
}

const noDevices: Devices = Object.freeze([]);

/**
 * A plan whose placements live in flat arrays (`placed`); `placements` and `order` build the object forms on
 * first read, so a caller that reads the arrays never pays for an object per request.
 */
class BatchPlan implements Plan {
  #placements: readonly Placement[] | undefined;
  #order: readonly string[] | undefined;
  constructor(
    readonly baseVersion: number,
    readonly index: ClusterIndex,
    readonly requests: readonly PlacementRequest[],
    readonly placed: PlacedArrays,
    readonly rejections: readonly Rejection[],
    readonly orderIndexes: readonly number[],
    runSteps: number,
  ) {
    this.stats = Object.freeze({ runSteps });
  }
  readonly stats: { readonly runSteps: number };

  get placements(): readonly Placement[] {
    if (this.#placements === undefined) {
      const p = this.placed;
      const out: Placement[] = new Array(p.count);
      for (let i = 0; i < p.count; i++) {
        out[i] = {
          requestId: (this.requests[p.request[i] as number] as PlacementRequest).id,
          nodeId: this.index.nodeId(p.slot[i] as number),
          gpuDevices: p.gpuDevices.get(i) ?? noDevices,
          score: p.score[i] as number,
        };
      }
      this.#placements = Object.freeze(out);
    }
    return this.#placements;
  }

  get order(): readonly string[] {
    if (this.#order === undefined) {
      this.#order = Object.freeze(this.orderIndexes.map((i) => (this.requests[i] as PlacementRequest).id));
    }
    return this.#order;
  }
}

/**
 * Checks the batch and returns its requests typed, each put in its request class (classes.ts) from the fields its
 * validation read; ValidationError names the request and field.
 */
function normalizeRequests(
  requests: readonly PlacementRequest[],
  classes: RequestClasses,
): PlacementRequest[] {
  if (!Array.isArray(requests)) throw new ValidationError('requests', 'must be an array of requests');
  if (requests.length > batchRequestsMax) {
    throw new ValidationError('requests', `a batch holds at most ${batchRequestsMax} requests`);
  }
  const seen = IdTable.take(requests.length);
  try {
    return normalizeEach(requests, seen, classes);
  } finally {
    seen.release();
  }
}

function normalizeEach(
  requests: readonly PlacementRequest[],
  seen: IdTable,
  classes: RequestClasses,
): PlacementRequest[] {
  const out = new Array<PlacementRequest>(requests.length);
  // One per batch (not per module: a getter may plan a batch of its own while this one is validated).
  const fields: RequestFields = {
    cpu: 0,
    memory: 0,
    disk: 0,
    priority: 0,
    gpu: undefined,
    constraints: undefined,
    preferences: undefined,
    imageId: undefined,
    pinnedNode: undefined,
    strategy: undefined,
    grouped: false,
  };
  for (let i = 0; i < requests.length; i++) {
    out[i] = normalizeAt(requests[i], i, seen, out, fields);
    classes.add(i, fields);
  }
  return out;
}

function normalizeAt(
  raw: unknown,
  i: number,
  seen: IdTable,
  done: readonly PlacementRequest[],
  fields: RequestFields,
): PlacementRequest {
  let r: PlacementRequest;
  try {
    r = normalizeRequest(raw, fields);
  } catch (err) {
    if (err instanceof ValidationError) {
      const path = err.path === '' ? `requests.${i}` : `requests.${i}.${err.path}`;
      throw new ValidationError(path, err.path === '' ? err.message : err.message.slice(err.path.length + 2));
    }
    throw err;
  }
  if (!seen.add(r.id, i, done))
    throw new ValidationError(`requests.${i}.id`, `duplicate request id ${r.id} in the batch`);
  return r;
}

/**
 * The batch's duplicate-id check without a Set per batch (a Set of 1,000 ids allocated ~40 KiB a batch, of
 * 5,000 ids ~320 KiB, in allocation profiles): open addressing over a reused Int32Array of request indexes,
 * stamped per batch so it is never cleared. Ids are compared as strings, so a hash collision costs a probe,
 * never a false duplicate.
 */
class IdTable {
  /** Per entry: the request index, valid only where `#stamps` holds the current stamp. */
  #indexes = new Int32Array(0);
  #stamps = new Uint32Array(0);
  #stamp = 0;
  #mask = 0;
  #inUse = false;
  static #shared = new IdTable();

  /** The shared table, or a fresh one when it is in use (a request's getter planning a batch of its own). */
  static take(ids: number): IdTable {
    const t = IdTable.#shared.#inUse ? new IdTable() : IdTable.#shared;
    t.#begin(ids);
    return t;
  }

  release(): void {
    this.#inUse = false;
  }

  #begin(ids: number): void {
    this.#inUse = true;
    let size = 16;
    while (size < ids * 2) size *= 2;
    if (this.#indexes.length < size) {
      this.#indexes = new Int32Array(size);
      this.#stamps = new Uint32Array(size);
      this.#stamp = 0;
    }
    this.#mask = size - 1;
    this.#stamp = (this.#stamp + 1) >>> 0;
    if (this.#stamp === 0) {
      this.#stamps.fill(0);
      this.#stamp = 1;
    }
  }

  /** Records `id` of request `index`; false when an earlier request of `done` has it. */
  add(id: string, index: number, done: readonly PlacementRequest[]): boolean {
    let h = 0x811c9dc5;
    for (let c = 0; c < id.length; c++) h = Math.imul(h ^ id.charCodeAt(c), 0x01000193);
    // At most half full (#begin), so a free entry is always found; the bound turns a sizing bug into an error.
    for (let e = h & this.#mask, probes = 0; ; e = (e + 1) & this.#mask, probes++) {
      if (probes > this.#mask) assert(false, 'the id table has a free entry', { size: this.#mask + 1 });
      if (this.#stamps[e] !== this.#stamp) {
        this.#stamps[e] = this.#stamp;
        this.#indexes[e] = index;
        return true;
      }
      if ((done[this.#indexes[e] as number] as PlacementRequest).id === id) return false;
    }
  }
}

/** Seeds are integers; the planner mixes them into 32 bits with the snapshot version. */
const seedAbsMax = Number.MAX_SAFE_INTEGER;

/** Checks the options: unknown strategy or scorer names, bad limits and non-integer seeds are refused. */
function normalizeOptions(options: unknown): {
  strategy: Strategy;
  binpack: BinpackScorer;
  seed: number;
  limits: SelectLimits;
} {
  if (options === undefined)
    return { strategy: 'binpack', binpack: 'dot', seed: 0, limits: defaultSelectLimits };
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw new ValidationError('options', 'must be an object');
  }
  const o = options as Record<string, unknown>;
  const strategy = o.strategy === undefined ? 'binpack' : o.strategy;
  if (strategy !== 'binpack' && strategy !== 'spread')
    throw new ValidationError('options.strategy', `must be binpack or spread, got ${shown(strategy)}`);
  const binpack = o.binpackScorer === undefined ? 'dot' : o.binpackScorer;
  if (!isNodeScorer(binpack) && !(binpackScorers as readonly unknown[]).includes(binpack)) {
    throw new ValidationError('options.binpackScorer', `must be one of ${binpackScorers.join(', ')}`);
  }
  const seed = o.seed === undefined ? 0 : o.seed;
  if (typeof seed !== 'number' || !Number.isInteger(seed) || Math.abs(seed) > seedAbsMax) {
    throw new ValidationError('options.seed', `must be a safe integer, got ${shown(seed)}`);
  }
  return { strategy, binpack: binpack as BinpackScorer, seed, limits: normalizeLimits(o.limits) };
}

function normalizeLimits(raw: unknown): SelectLimits {
  if (raw === undefined) return defaultSelectLimits;
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new ValidationError('options.limits', 'must be an object');
  }
  const out: Record<string, number> = { ...defaultSelectLimits };
  for (const [key, v] of Object.entries(raw)) {
    const min = selectLimitsMin[key as keyof SelectLimits];
    if (min === undefined) throw new ValidationError(`options.limits.${key}`, 'is not a limit');
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) {
      throw new ValidationError(`options.limits.${key}`, `must be an integer >= ${min}, got ${shown(v)}`);
    }
    out[key] = v;
  }
  return out as unknown as SelectLimits;
}

/** What decides whether a request without group rules can fit: its demand, GPU need, constraints and pin. */
function rejectionKey(r: PlacementRequest): string {
  const res = r.resources;
  return JSON.stringify([
    res.cpu,
    res.memory,
    res.disk,
    r.gpu ?? null,
    r.constraints ?? null,
    r.pinnedNode ?? null,
  ]);
}
