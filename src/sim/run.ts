/**
 * Whole runs built on the engine: loading a workload (synthetic or trace), what-if comparisons (several
 * policies or cluster shapes over the same arrivals), and sizing (the smallest count of one node shape that
 * keeps rejections within a bound).
 */
import { ConfigError } from '../lib/errors.js';
import { withShapeCount } from './cluster.js';
import { type SimOptions, simulate } from './engine.js';
import { SizingError } from './errors.js';
import type { RunResult } from './metrics.js';
import type { ClusterSpec, NodeGroup, PolicySpec, WorkloadSpec } from './spec.js';
import { readTrace } from './traces/index.js';
import { type Arrival, syntheticArrivals } from './workload.js';

/** Node counts a sizing search tries at most. */
export const sizingRunsMax = 40;
/** Doublings in a row without fewer rejections before a sizing search gives up. */
export const sizingStallsMax = 3;
/** The largest node count a sizing search tries. */
export const sizingNodesMax = 100_000;

/** All arrivals of a workload, in time order; `notes` receives what a trace reader left out (see readTrace). */
export async function loadArrivals(w: WorkloadSpec, seed: number, notes?: string[]): Promise<Arrival[]> {
  if ('trace' in w) return readTrace(w.trace, notes);
  return [...syntheticArrivals(w, seed)];
}

/** The tenants' quotas a synthetic workload declares, merged under the cluster's own. */
export function withWorkloadQuotas(cluster: ClusterSpec, w: WorkloadSpec): ClusterSpec {
  if ('trace' in w || w.tenants === undefined) return cluster;
  const quotas = { ...cluster.quotas };
  for (const t of w.tenants)
    if (t.quota !== undefined && quotas[t.name] === undefined) quotas[t.name] = t.quota;
  return { ...cluster, quotas };
}

export interface Variant {
  readonly name: string;
  readonly cluster: ClusterSpec;
  readonly policy: PolicySpec;
}

/**
 * Runs every variant over the same arrivals, one after the other; results in the variants' order.
 * `options.onProgress` counts over all runs (the i-th run's arrivals after i × the arrivals' length), so a
 * progress bar over `variants.length × arrivals.length` fills once instead of restarting per run.
 */
export function whatIf(
  variants: readonly Variant[],
  arrivals: readonly Arrival[],
  options: Omit<SimOptions, 'policy'>,
): RunResult[] {
  if (variants.length === 0) throw new ConfigError('what-if: no variants to compare');
  const names = new Set<string>();
  for (const v of variants) {
    if (names.has(v.name)) throw new ConfigError(`what-if: variant name ${v.name} is used twice`);
    names.add(v.name);
  }
  const progress = options.onProgress;
  return variants.map((v, i) => ({
    ...simulate(v.cluster, arrivals, {
      ...options,
      policy: v.policy,
      ...(progress === undefined ? {} : { onProgress: (n: number) => progress(i * arrivals.length + n) }),
    }),
    name: v.name,
  }));
}

/** True when an empty node of the group could host the request (resources and GPUs; labels not checked). */
function shapeHosts(g: NodeGroup, a: Arrival): boolean {
  const r = a.spec.resources;
  if (r.cpu > g.capacity.cpu || r.memory > g.capacity.memory || r.disk > g.capacity.disk) return false;
  const gpu = a.spec.gpu;
  if (gpu === undefined || ((gpu.count ?? 0) === 0 && (gpu.milli ?? 0) === 0)) return true;
  if (g.gpu === undefined || (gpu.model !== undefined && gpu.model !== g.gpu.model)) return false;
  return (gpu.count ?? 1) <= g.gpu.count;
}

export interface SizingStep {
  readonly count: number;
  readonly rejectedFraction: number;
  readonly ok: boolean;
}

export interface SizingResult {
  readonly shape: string;
  readonly maxRejectedFraction: number;
  /** The smallest count found that keeps rejections within the bound. */
  readonly count: number;
  readonly steps: readonly SizingStep[];
  readonly best: RunResult;
}

/**
 * The smallest count of `shape` for which at most `maxRejectedFraction` of arrivals are rejected (requests
 * still pending at the end count as rejected). Doubling from 1 until a count passes, then bisecting between
 * the last failing and the first passing count, so it takes O(log n) runs. It assumes more nodes never
 * reject more, which holds for bin-packing on these workloads but is not a theorem: each step is reported.
 */
export function findMinNodes(
  cluster: ClusterSpec,
  shape: string,
  arrivals: readonly Arrival[],
  options: SimOptions,
  maxRejectedFraction: number,
): SizingResult {
  if (!(maxRejectedFraction >= 0 && maxRejectedFraction < 1))
    throw new ConfigError(`max rejected must be in [0, 1), got ${maxRejectedFraction}`);
  if (arrivals.length === 0) throw new ConfigError('sizing needs a workload with arrivals');
  // Requests no node shape could ever host are rejected at any count: when they alone pass the bound, no
  // search can succeed, so say so at once instead of doubling up to the limit.
  const unfittable = arrivals.filter((a) => !cluster.nodes.some((g) => shapeHosts(g, a))).length;
  if (unfittable / arrivals.length > maxRejectedFraction)
    throw new SizingError(
      `sizing: ${unfittable} of ${arrivals.length} requests fit no node shape of the cluster, more than ${(100 * maxRejectedFraction).toFixed(2)}%`,
    );
  const steps: SizingStep[] = [];
  const results = new Map<number, RunResult>();
  const tryCount = (count: number): boolean => {
    if (steps.length >= sizingRunsMax) throw new SizingError(`sizing: gave up after ${sizingRunsMax} runs`);
    const r = simulate(withShapeCount(cluster, shape, count), arrivals, options);
    const rejectedFraction = (r.totals.rejected + r.totals.pendingAtEnd) / Math.max(1, r.totals.arrived);
    const ok = rejectedFraction <= maxRejectedFraction;
    steps.push({ count, rejectedFraction, ok });
    results.set(count, r);
    return ok;
  };
  let lo = 0;
  let hi = 1;
  let stalled = 0;
  while (!tryCount(hi)) {
    // Doubling that stops reducing rejections means this shape is not what they wait for (GPUs, labels).
    const last = steps[steps.length - 1] as SizingStep;
    const before = steps[steps.length - 2];
    stalled = before !== undefined && last.rejectedFraction >= before.rejectedFraction ? stalled + 1 : 0;
    if (stalled >= sizingStallsMax)
      throw new SizingError(
        `sizing: more nodes of ${shape} stopped reducing rejections at ${hi} (${(100 * last.rejectedFraction).toFixed(2)}% rejected)`,
      );
    lo = hi;
    hi *= 2;
    if (hi > sizingNodesMax)
      throw new SizingError(
        `sizing: even ${lo} nodes of ${shape} reject more than ${(100 * maxRejectedFraction).toFixed(2)}%`,
      );
  }
  // Invariant: lo fails (or is 0), hi passes.
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if (tryCount(mid)) hi = mid;
    else lo = mid;
  }
  return { shape, maxRejectedFraction, count: hi, steps, best: results.get(hi) as RunResult };
}
