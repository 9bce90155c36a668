/**
 * The HTML report: one self-contained file (inline CSS and SVG, no script, no external reference) with the
 * plots of every run: utilisation per resource over time, pending and rejected over time by reason,
 * fragmentation over time, allocation against arrived demand (inflation runs), placement latency and virtual
 * wait histograms, and the what-if comparison of all runs side by side.
 */
import type { Histogram, RunResult } from '../metrics.js';
import type { Report } from './data.js';
import { barChart, esc, lineChart, type Series } from './svg.js';

const hours = (ms: number): number => ms / 3_600_000;

function histogramBars(h: Histogram): { label: string; values: number[] }[] {
  return h.counts.map((c, i) => ({
    label: i < h.bounds.length ? `≤${h.bounds[i]}` : `>${h.bounds[h.bounds.length - 1]}`,
    values: [c],
  }));
}

function reasons(r: RunResult, pick: 'pendingByReason' | 'rejectedByReason'): string[] {
  const set = new Set<string>();
  for (const s of r.samples) for (const k of Object.keys(s[pick])) set.add(k);
  return [...set].sort();
}

function runSection(r: RunResult, i: number): string {
  const util: Series[] = (['cpu', 'memory', 'disk', 'gpu'] as const)
    .filter((k) => k !== 'gpu' || r.capacity.gpu > 0)
    .map((k) => ({ name: k, points: r.samples.map((s) => [hours(s.tMs), 100 * s.util[k]] as const) }));
  const pending: Series[] = reasons(r, 'pendingByReason').map((k) => ({
    name: `pending: ${k}`,
    points: r.samples.map((s) => [hours(s.tMs), s.pendingByReason[k] ?? 0] as const),
  }));
  const rejected: Series[] = reasons(r, 'rejectedByReason').map((k) => ({
    name: `rejected: ${k}`,
    points: r.samples.map((s) => [hours(s.tMs), s.rejectedByReason[k] ?? 0] as const),
  }));
  const t = r.totals;
  const parts = [
    `<h2 id="run-${i}">${esc(r.name)}</h2>`,
    `<p>${esc(`${r.protocol}, seed ${r.seed}, ${r.nodes} nodes: ${t.arrived} arrived, ${t.placed} placed, ${t.rejected} rejected, ${t.pendingAtEnd} pending at the end, ${t.departed} departed, ${t.lost} lost, ${t.suspended} suspended; ${r.timing.wallSeconds.toFixed(2)} s wall, ${Math.round(r.timing.eventsPerSec)} events/s.`)}</p>`,
  ];
  if (r.protocol === 'replay') {
    parts.push(
      lineChart(
        `utilization-${i}`,
        `Utilization per resource — ${r.name}`,
        'virtual time (h)',
        '% of ready capacity',
        util,
        100,
      ),
      lineChart(
        `pending-rejected-${i}`,
        `Pending and rejected by reason — ${r.name}`,
        'virtual time (h)',
        'requests',
        [...pending, ...rejected],
      ),
    );
  }
  parts.push(
    barChart(
      `latency-${i}`,
      `Placement latency (planBatch, wall clock) — ${r.name}`,
      'batches',
      ['batches'],
      histogramBars(r.timing.planMs),
    ),
    barChart(
      `wait-${i}`,
      `Wait from arrival to placement (virtual ms) — ${r.name}`,
      'requests',
      ['requests'],
      histogramBars(r.waitMs),
    ),
  );
  return parts.join('\n');
}

export function reportHtml(report: Report): string {
  const runs = report.runs;
  const replay = runs.filter((r) => r.protocol === 'replay');
  const inflation = runs.filter((r) => r.inflation !== undefined);
  const sections: string[] = [];
  sections.push(
    barChart(
      'what-if',
      'What-if comparison',
      '% of arrivals / capacity',
      ['placed %', 'rejected %', 'mean cpu util %', 'mean gpu util %'],
      runs.map((r) => {
        const n = Math.max(1, r.totals.arrived);
        const mean = (k: 'cpu' | 'gpu'): number =>
          r.inflation !== undefined
            ? (r.inflation[r.inflation.length - 1]?.allocatedPct[k] ?? 0)
            : r.samples.length === 0
              ? 0
              : (100 * r.samples.reduce((a, s) => a + s.util[k], 0)) / r.samples.length;
        return {
          label: r.name,
          values: [(100 * r.totals.placed) / n, (100 * r.totals.rejected) / n, mean('cpu'), mean('gpu')],
        };
      }),
      100,
    ),
  );
  if (replay.length > 0) {
    sections.push(
      lineChart(
        'fragmentation',
        'Fragmentation over time (share of free capacity the reference shape cannot use)',
        'virtual time (h)',
        '% of free capacity',
        replay.map((r) => ({
          name: r.name,
          points: r.samples.map((s) => [hours(s.tMs), 100 * s.fragmentation] as const),
        })),
        100,
      ),
    );
  }
  if (inflation.length > 0) {
    const res = (r: RunResult): 'gpu' | 'cpu' => (r.capacity.gpu > 0 ? 'gpu' : 'cpu');
    sections.push(
      lineChart(
        'inflation',
        'Allocation against arrived demand (inflation)',
        'arrived demand (% of capacity)',
        'allocated (% of capacity)',
        inflation.map((r) => ({
          name: `${r.name} (${res(r)})`,
          points: (r.inflation ?? []).map((p) => [p.arrivedPct, p.allocatedPct[res(r)]] as const),
        })),
        100,
      ),
    );
  }
  if (report.sizing !== undefined) {
    const s = report.sizing;
    sections.push(
      `<h2>Sizing</h2><p>${esc(`Smallest count of ${s.shape} with at most ${(100 * s.maxRejectedFraction).toFixed(2)}% rejected: ${s.count}.`)}</p>`,
      lineChart('sizing', `Rejected share by count of ${s.shape}`, 'nodes', '% rejected', [
        {
          name: 'rejected %',
          points: [...s.steps]
            .sort((a, b) => a.count - b.count)
            .map((x) => [x.count, 100 * x.rejectedFraction] as const),
        },
      ]),
    );
  }
  sections.push(...runs.map(runSection));
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${esc(report.title)}</title>
<style>body{font-family:system-ui,sans-serif;margin:24px;max-width:1000px}figure{margin:12px 0}svg{background:#fff;border:1px solid #eee}h2{margin-top:32px}</style>
</head><body>
<h1>${esc(report.title)}</h1>
<p>Trellis capacity simulation. Times are virtual; latency figures are wall clock on the machine that ran it.</p>
${sections.join('\n')}
</body></html>
`;
}
