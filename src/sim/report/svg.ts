/**
 * Plots drawn as inline SVG by hand, so a report is one file that opens with no server, no network and no
 * plotting library: line charts (axes, ticks, a legend) and bar charts. Every value is escaped.
 */

export interface Series {
  readonly name: string;
  readonly points: readonly (readonly [number, number])[];
}

export interface Bar {
  readonly label: string;
  readonly values: readonly number[];
}

const width = 640;
const height = 280;
const margin = { left: 56, right: 150, top: 28, bottom: 40 };
const palette = [
  '#1f77b4',
  '#d62728',
  '#2ca02c',
  '#ff7f0e',
  '#9467bd',
  '#8c564b',
  '#e377c2',
  '#17becf',
  '#7f7f7f',
  '#bcbd22',
];

export function esc(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function fmt(v: number): string {
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 1e6) return `${(v / 1e6).toFixed(a >= 1e7 ? 0 : 1)}M`;
  if (a >= 1e3) return `${(v / 1e3).toFixed(a >= 1e4 ? 0 : 1)}k`;
  if (a >= 10) return v.toFixed(0);
  if (a >= 1) return v.toFixed(1);
  return v.toFixed(2);
}

function ticks(lo: number, hi: number, n = 5): number[] {
  if (hi <= lo) return [lo];
  const raw = (hi - lo) / n;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? raw;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(v);
  return out;
}

function frame(plot: string, title: string, xLabel: string, yLabel: string, body: string): string {
  return (
    `<figure><svg class="plot" data-plot="${esc(plot)}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${width} ${height}" width="${width}" height="${height}" role="img">` +
    `<title>${esc(title)}</title>` +
    `<text x="${margin.left}" y="16" font-size="13" font-weight="bold">${esc(title)}</text>` +
    `<text x="${margin.left + (width - margin.left - margin.right) / 2}" y="${height - 6}" font-size="11" text-anchor="middle">${esc(xLabel)}</text>` +
    `<text x="12" y="${margin.top + (height - margin.top - margin.bottom) / 2}" font-size="11" text-anchor="middle" transform="rotate(-90 12 ${margin.top + (height - margin.top - margin.bottom) / 2})">${esc(yLabel)}</text>` +
    body +
    `</svg></figure>`
  );
}

function legend(names: readonly string[]): string {
  return names
    .map((n, i) => {
      const y = margin.top + 6 + i * 16;
      const x = width - margin.right + 12;
      return `<rect x="${x}" y="${y - 8}" width="10" height="10" fill="${palette[i % palette.length]}"/><text x="${x + 14}" y="${y + 1}" font-size="11">${esc(n.slice(0, 22))}</text>`;
    })
    .join('');
}

function axes(
  xs: readonly number[],
  ys: readonly number[],
  sx: (v: number) => number,
  sy: (v: number) => number,
): string {
  const x0 = margin.left;
  const y0 = height - margin.bottom;
  let s = `<line x1="${x0}" y1="${y0}" x2="${width - margin.right}" y2="${y0}" stroke="#333"/><line x1="${x0}" y1="${margin.top}" x2="${x0}" y2="${y0}" stroke="#333"/>`;
  for (const v of xs)
    s += `<line x1="${sx(v)}" y1="${y0}" x2="${sx(v)}" y2="${y0 + 4}" stroke="#333"/><text x="${sx(v)}" y="${y0 + 16}" font-size="10" text-anchor="middle">${fmt(v)}</text>`;
  for (const v of ys)
    s += `<line x1="${x0 - 4}" y1="${sy(v)}" x2="${width - margin.right}" y2="${sy(v)}" stroke="#ddd"/><text x="${x0 - 6}" y="${sy(v) + 3}" font-size="10" text-anchor="end">${fmt(v)}</text>`;
  return s;
}

/** A line chart; `yMax` fixes the top (e.g. 100 for percentages). An empty chart says so. */
export function lineChart(
  plot: string,
  title: string,
  xLabel: string,
  yLabel: string,
  series: readonly Series[],
  yMax?: number,
): string {
  const all = series.flatMap((s) => s.points);
  const xLo = Math.min(0, ...all.map((p) => p[0]));
  const xHi = Math.max(1e-9, ...all.map((p) => p[0]));
  const yHi = yMax ?? Math.max(1, ...all.map((p) => p[1])) * 1.05;
  const sx = (v: number): number =>
    margin.left + ((v - xLo) / (xHi - xLo || 1)) * (width - margin.left - margin.right);
  const sy = (v: number): number =>
    height - margin.bottom - (v / yHi) * (height - margin.top - margin.bottom);
  let body = axes(ticks(xLo, xHi), ticks(0, yHi), sx, sy);
  series.forEach((s, i) => {
    if (s.points.length === 0) return;
    const color = palette[i % palette.length];
    if (s.points.length === 1) {
      // A path of one point draws nothing (an inflation run planned in one batch has one point): a dot.
      const [p] = s.points as [readonly [number, number]];
      body += `<circle class="mark" cx="${sx(p[0]).toFixed(1)}" cy="${sy(p[1]).toFixed(1)}" r="3" fill="${color}"><title>${esc(s.name)}</title></circle>`;
      return;
    }
    const d = s.points
      .map((p, j) => `${j === 0 ? 'M' : 'L'}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`)
      .join('');
    body += `<path class="mark" d="${d}" fill="none" stroke="${color}" stroke-width="1.6"><title>${esc(s.name)}</title></path>`;
  });
  if (all.length === 0)
    body += `<text x="${width / 2}" y="${height / 2}" font-size="12" text-anchor="middle">no data</text>`;
  return frame(plot, title, xLabel, yLabel, body + legend(series.map((s) => s.name)));
}

/** Grouped bars: one group per bar label, one bar per series name. */
export function barChart(
  plot: string,
  title: string,
  yLabel: string,
  seriesNames: readonly string[],
  bars: readonly Bar[],
  yMax?: number,
): string {
  const yHi = yMax ?? Math.max(1, ...bars.flatMap((b) => b.values)) * 1.05;
  const plotW = width - margin.left - margin.right;
  const groupW = plotW / Math.max(1, bars.length);
  const barW = Math.max(1, (groupW * 0.8) / Math.max(1, seriesNames.length));
  const sy = (v: number): number =>
    height - margin.bottom - (v / yHi) * (height - margin.top - margin.bottom);
  let body = axes([], ticks(0, yHi), () => 0, sy);
  bars.forEach((b, g) => {
    const gx = margin.left + g * groupW + groupW * 0.1;
    b.values.forEach((v, i) => {
      const y = sy(v);
      body += `<rect class="mark" x="${(gx + i * barW).toFixed(1)}" y="${y.toFixed(1)}" width="${barW.toFixed(1)}" height="${Math.max(0, height - margin.bottom - y).toFixed(1)}" fill="${palette[i % palette.length]}"><title>${esc(`${seriesNames[i] ?? ''} ${b.label}: ${fmt(v)}`)}</title></rect>`;
    });
    if (bars.length <= 24)
      body += `<text x="${(gx + groupW * 0.4).toFixed(1)}" y="${height - margin.bottom + 14}" font-size="9" text-anchor="middle">${esc(b.label.slice(0, 12))}</text>`;
  });
  return frame(plot, title, '', yLabel, body + legend(seriesNames));
}
