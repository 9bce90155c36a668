/**
 * Reports as data: one JSON document for a whole invocation (every run, what-if or sizing), and a CSV of the
 * samples (one row per run and sample time) for spreadsheets.
 */
import type { RunResult } from '../metrics.js';
import type { SizingResult } from '../run.js';

export interface Report {
  readonly title: string;
  readonly runs: readonly RunResult[];
  readonly sizing?: SizingResult;
}

/** A run as plain JSON (maps become objects). */
export function runJson(r: RunResult): unknown {
  const { placements, rejections, ...rest } = r;
  return {
    ...rest,
    ...(placements === undefined ? {} : { placements: Object.fromEntries(placements) }),
    ...(rejections === undefined ? {} : { rejections: Object.fromEntries(rejections) }),
  };
}

export function reportJson(report: Report): string {
  return `${JSON.stringify(
    {
      title: report.title,
      runs: report.runs.map(runJson),
      ...(report.sizing === undefined ? {} : { sizing: { ...report.sizing, best: report.sizing.best.name } }),
    },
    null,
    2,
  )}\n`;
}

function cell(v: string | number): string {
  if (typeof v === 'number') return Number.isInteger(v) ? String(v) : v.toFixed(6);
  return /[",\n]/.test(v) ? `"${v.replaceAll('"', '""')}"` : v;
}

/** Samples of every run, one row each; reasons become `pending_<reason>` and `rejected_<reason>` columns. */
export function reportCsv(report: Report): string {
  const pendingReasons = new Set<string>();
  const rejectedReasons = new Set<string>();
  for (const r of report.runs) {
    for (const s of r.samples) {
      for (const k of Object.keys(s.pendingByReason)) pendingReasons.add(k);
      for (const k of Object.keys(s.rejectedByReason)) rejectedReasons.add(k);
    }
  }
  const pend = [...pendingReasons].sort();
  const rej = [...rejectedReasons].sort();
  const header = [
    'run',
    't_s',
    'util_cpu',
    'util_memory',
    'util_disk',
    'util_gpu',
    'fragmentation',
    'live',
    ...pend.map((p) => `pending_${p}`),
    ...rej.map((p) => `rejected_${p}`),
  ];
  const lines = [header.join(',')];
  for (const r of report.runs) {
    for (const s of r.samples) {
      lines.push(
        [
          r.name,
          s.tMs / 1000,
          s.util.cpu,
          s.util.memory,
          s.util.disk,
          s.util.gpu,
          s.fragmentation,
          s.live,
          ...pend.map((p) => s.pendingByReason[p] ?? 0),
          ...rej.map((p) => s.rejectedByReason[p] ?? 0),
        ]
          .map(cell)
          .join(','),
      );
    }
    for (const p of r.inflation ?? []) {
      lines.push(
        [
          r.name,
          -1,
          p.allocatedPct.cpu / 100,
          p.allocatedPct.memory / 100,
          p.allocatedPct.disk / 100,
          p.allocatedPct.gpu / 100,
          0,
          0,
        ]
          .map(cell)
          .concat(
            pend.map(() => '0'),
            rej.map(() => '0'),
          )
          .join(','),
      );
    }
  }
  return `${lines.join('\n')}\n`;
}

/** A one-line summary per run, for the terminal. */
export function summaryLines(report: Report): string[] {
  const out: string[] = [];
  for (const r of report.runs) {
    const t = r.totals;
    const last = r.samples[r.samples.length - 1];
    const infl = r.inflation?.[r.inflation.length - 1];
    const mean = (k: 'cpu' | 'memory' | 'gpu'): number =>
      r.samples.length === 0 ? 0 : r.samples.reduce((a, s) => a + s.util[k], 0) / r.samples.length;
    const pct = (n: number, d: number): string => (d === 0 ? '0.0' : ((100 * n) / d).toFixed(1));
    const reasons = Object.entries(t.rejectedByReason)
      .sort((a, b) => b[1] - a[1])
      .map(([k, v]) => `${k} ${v}`)
      .join(', ');
    out.push(
      `${r.name}: ${t.arrived} arrived, ${t.placed} placed, ${t.rejected} rejected (${pct(t.rejected, t.arrived)}%${reasons === '' ? '' : `: ${reasons}`})` +
        `, ${t.pendingAtEnd} pending at end` +
        (infl === undefined
          ? last === undefined
            ? ''
            : `, mean util cpu ${pct(mean('cpu'), 1)}% mem ${pct(mean('memory'), 1)}% gpu ${pct(mean('gpu'), 1)}%`
          : `; at ${infl.arrivedPct.toFixed(1)}% arrived: allocated cpu ${infl.allocatedPct.cpu.toFixed(1)}% mem ${infl.allocatedPct.memory.toFixed(1)}% gpu ${infl.allocatedPct.gpu.toFixed(1)}%`) +
        `; ${r.timing.wallSeconds.toFixed(2)} s, ${Math.round(r.timing.eventsPerSec)} events/s`,
    );
  }
  return out;
}
