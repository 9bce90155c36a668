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
import { ValidationError } from '../src/lib/errors.js';
import { createRng } from '../src/lib/prng.js';
import { ClusterIndex } from './cluster-index.js';
import { diagnose } from './diagnose.js';
import { placeOne } from './stack.js';
import { BatchCache, compileRequest } from './stages/request.js';
import { type BinpackScorer, binpackScorers } from './stages/score-binpack.js';
import { isNodeScorer } from './stages/score-gpu.js';
import { defaultSelectLimits, type SelectLimits, selectLimitsMin } from './stages/select.js';
import type { Placement, PlacementRequest, PlanOutcome, Rejection, Resources, Strategy } from './types.js';
import { gpuMilliPerDevice, normalizeRequest } from './validate.js';

/** Requests one batch may carry. */
export const batchRequestsMax = 100_000;

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
  readonly placements: readonly Placement[];
  readonly rejections: readonly Rejection[];
  /** Request ids in the order they were placed. */
  readonly order: readonly string[];
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
  const valid = normalizeRequests(requests);
  const rng = createRng((seed ^ Math.imul(snapshot.version, 0x9e3779b1)) | 0);
  const total = snapshot.readyCapacity;
  const gpuTotal = snapshot.readyGpuMilli;
  const keyed = valid.map((r) => ({ r, prio: r.priority ?? 0, share: dominantShare(r, total, gpuTotal) }));
  keyed.sort(
    (a, b) => b.prio - a.prio || b.share - a.share || (a.r.id < b.r.id ? -1 : a.r.id > b.r.id ? 1 : 0),
  );

  const builder = snapshot.edit();
  const cache = new BatchCache(snapshot);
  const placements: Placement[] = [];
  const rejections: Rejection[] = [];
  // Within a batch free capacity only shrinks, so a request with no group rule that fits nowhere is followed by
  // every later request of the same shape and constraints: those skip the candidate walk. Spread and
  // anti-affinity requests are always re-planned, because placements of their group can change their answer.
  // The rejection's numbers (shortfalls, short counts, closest node) describe the cluster as the request meets
  // it, so it is reused as it stands only while nothing was placed since; otherwise it is diagnosed afresh.
  const rejectedShapes = new Map<string, { rejection: Rejection; placedBefore: number }>();
  for (const { r } of keyed) {
    const shapeKey = r.spread === undefined && r.antiAffinity === undefined ? rejectionKey(r) : undefined;
    const earlier = shapeKey === undefined ? undefined : rejectedShapes.get(shapeKey);
    if (earlier !== undefined) {
      if (earlier.placedBefore === placements.length) {
        rejections.push({
          ...earlier.rejection,
          requestId: r.id,
          message: `${earlier.rejection.message} (as for ${earlier.rejection.requestId} earlier in this batch)`,
        });
      } else {
        const rejection = diagnose(builder, compileRequest(builder, r, strategy, cache));
        rejections.push(rejection);
        rejectedShapes.set(shapeKey as string, { rejection, placedBefore: placements.length });
      }
      continue;
    }
    const outcome: PlanOutcome = placeOne(
      builder,
      compileRequest(builder, r, strategy, cache),
      binpack,
      limits,
      rng,
    );
    if (outcome.kind === 'placed') placements.push(outcome.placement);
    else {
      rejections.push(outcome.rejection);
      if (shapeKey !== undefined)
        rejectedShapes.set(shapeKey, { rejection: outcome.rejection, placedBefore: placements.length });
    }
  }
  return {
    baseVersion: snapshot.version,
    index: builder.publish(),
    placements,
    rejections,
    order: keyed.map((k) => k.r.id),
  };
}

/** Checks the batch and returns frozen copies of its requests; ValidationError names the request and field. */
function normalizeRequests(requests: readonly PlacementRequest[]): PlacementRequest[] {
  if (!Array.isArray(requests)) throw new ValidationError('requests', 'must be an array of requests');
  if (requests.length > batchRequestsMax) {
    throw new ValidationError('requests', `a batch holds at most ${batchRequestsMax} requests`);
  }
  const seen = new Set<string>();
  return requests.map((raw: unknown, i) => {
    let r: PlacementRequest;
    try {
      r = normalizeRequest(raw);
    } catch (err) {
      if (err instanceof ValidationError) {
        const path = err.path === '' ? `requests.${i}` : `requests.${i}.${err.path}`;
        throw new ValidationError(
          path,
          err.path === '' ? err.message : err.message.slice(err.path.length + 2),
        );
      }
      throw err;
    }
    if (seen.has(r.id))
      throw new ValidationError(`requests.${i}.id`, `duplicate request id ${r.id} in the batch`);
    seen.add(r.id);
    return r;
  });
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
    throw new ValidationError('options.strategy', `must be binpack or spread, got ${String(strategy)}`);
  const binpack = o.binpackScorer === undefined ? 'dot' : o.binpackScorer;
  if (!isNodeScorer(binpack) && !(binpackScorers as readonly unknown[]).includes(binpack)) {
    throw new ValidationError('options.binpackScorer', `must be one of ${binpackScorers.join(', ')}`);
  }
  const seed = o.seed === undefined ? 0 : o.seed;
  if (typeof seed !== 'number' || !Number.isInteger(seed) || Math.abs(seed) > seedAbsMax) {
    throw new ValidationError('options.seed', `must be a safe integer, got ${String(seed)}`);
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
      throw new ValidationError(`options.limits.${key}`, `must be an integer >= ${min}, got ${String(v)}`);
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
