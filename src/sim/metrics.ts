/**
 * What a run records: samples over virtual time, counters, and histograms. Everything here is deterministic
 * for a seed except `Timing`, which holds wall-clock figures and is kept apart so runs can be compared whole.
 */

export interface Utilization {
  readonly cpu: number;
  readonly memory: number;
  readonly disk: number;
  readonly gpu: number;
}

export interface Sample {
  /** Virtual time, ms. */
  readonly tMs: number;
  /** Allocated share of ready capacity, per resource, in [0, 1] (0 when the cluster has none). */
  readonly util: Utilization;
  /** Requests waiting, by the reason placement gave. */
  readonly pendingByReason: Readonly<Record<string, number>>;
  /** Requests refused so far (cumulative), by reason. */
  readonly rejectedByReason: Readonly<Record<string, number>>;
  /** Share of free capacity the reference shape cannot use (placement/fragmentation.ts), in [0, 1]. */
  readonly fragmentation: number;
  readonly live: number;
}

/** Inflation runs: how much was allocated as demand arrived (both as a share of cluster capacity). */
export interface InflationPoint {
  readonly arrivedPct: number;
  readonly allocatedPct: Utilization;
}

export interface Histogram {
  /** Upper bounds of the buckets (the last bucket is everything above the last bound). */
  readonly bounds: readonly number[];
  readonly counts: number[];
}

export function histogram(bounds: readonly number[]): Histogram {
  return { bounds, counts: new Array(bounds.length + 1).fill(0) };
}

export function observe(h: Histogram, value: number): void {
  let i = 0;
  while (i < h.bounds.length && value > (h.bounds[i] as number)) i++;
  h.counts[i] = (h.counts[i] as number) + 1;
}

/** 1, 2, 5 steps from `lo` to `hi`. */
export function decadeBounds(lo: number, hi: number): number[] {
  const out: number[] = [];
  for (let d = lo; d <= hi; d *= 10) for (const m of [1, 2, 5]) if (d * m <= hi) out.push(d * m);
  return out;
}

export interface Totals {
  arrived: number;
  placed: number;
  rejected: number;
  rejectedByReason: Record<string, number>;
  pendingAtEnd: number;
  departed: number;
  lost: number;
  suspended: number;
  resumed: number;
  /** Events the engine processed (arrivals, departures, suspends, resumes, node events). */
  events: number;
}

export interface Timing {
  readonly wallSeconds: number;
  readonly eventsPerSec: number;
  readonly planCalls: number;
  /** Wall-clock milliseconds per planBatch call. */
  readonly planMs: Histogram;
}

export interface RunResult {
  readonly name: string;
  readonly protocol: 'replay' | 'inflation';
  readonly seed: number;
  readonly nodes: number;
  /** Ready capacity at the start: cpu millicores, memory and disk MiB, gpu milli-GPU. */
  readonly capacity: {
    readonly cpu: number;
    readonly memory: number;
    readonly disk: number;
    readonly gpu: number;
  };
  readonly totals: Totals;
  readonly samples: readonly Sample[];
  /** Virtual ms from arrival to placement, for every placed request. */
  readonly waitMs: Histogram;
  readonly inflation?: readonly InflationPoint[];
  /** request id → node id, when asked for (tests compare placements with the real scheduler). */
  readonly placements?: ReadonlyMap<string, string>;
  /** request id → rejection reason, when placements are recorded. */
  readonly rejections?: ReadonlyMap<string, string>;
  readonly timing: Timing;
}
