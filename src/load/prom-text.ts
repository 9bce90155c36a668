/**
 * Just enough of the Prometheus text format to read the figures a load run reports from the replicas'
 * /metrics: one series' value, and a histogram's cumulative buckets (summed over scrapes of several
 * processes, since the leader moves under chaos and a killed process's counts are kept from its last scrape).
 */

/** The value of one exact series (`name{labels}` as printed), or undefined. */
export function sampleOf(text: string, series: string): number | undefined {
  for (const line of text.split('\n')) {
    if (line.startsWith(`${series} `)) return Number(line.slice(series.length + 1));
  }
  return undefined;
}

/** A histogram: cumulative counts by upper bound (ascending, +Inf last), its sum and count. */
export interface PromHistogram {
  readonly buckets: readonly { readonly le: number; readonly count: number }[];
  readonly sum: number;
  readonly count: number;
}

const bucketLine = /^([a-z_:]+)_bucket\{(?:.*,)?le="([^"]+)"(?:,.*)?\} (\S+)$/;

/** Sums every series of histogram `name` in `texts` (all label sets, all processes) into one. */
export function histogramOf(texts: readonly string[], name: string): PromHistogram {
  const byLe = new Map<number, number>();
  let sum = 0;
  let count = 0;
  for (const text of texts) {
    for (const line of text.split('\n')) {
      const m = bucketLine.exec(line);
      if (m !== null && m[1] === name) {
        const le = m[2] === '+Inf' ? Number.POSITIVE_INFINITY : Number(m[2]);
        byLe.set(le, (byLe.get(le) ?? 0) + Number(m[3]));
      } else if (line.startsWith(`${name}_sum`)) sum += Number(line.slice(line.lastIndexOf(' ') + 1));
      else if (line.startsWith(`${name}_count`)) count += Number(line.slice(line.lastIndexOf(' ') + 1));
    }
  }
  const buckets = [...byLe.entries()].sort((a, b) => a[0] - b[0]).map(([le, c]) => ({ le, count: c }));
  return { buckets, sum, count };
}

/** The upper bound of the bucket holding the q-quantile (0..1); undefined when empty. */
export function quantileOf(h: PromHistogram, q: number): number | undefined {
  if (h.count === 0) return undefined;
  const rank = Math.ceil(q * h.count);
  for (const b of h.buckets) if (b.count >= rank) return b.le;
  return Number.POSITIVE_INFINITY;
}
