/**
 * Shared bench helpers: command-line flags (node's parseArgs), a latency histogram, percentiles, the machine
 * line every figure is recorded with, and JSON-lines output.
 */
import { writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { type ParseArgsConfig, parseArgs } from 'node:util';

export interface BenchFlags {
  readonly json: string | undefined;
  readonly quick: boolean;
}

/** Ends a benchmark on a bad flag as the CLI does: one line on stderr, exit code 2, no stack trace. */
export function usage(message: string): never {
  process.stderr.write(`error: ${message.replace(/\s*\n\s*/g, ' ')} (USAGE)\n`);
  process.exit(2);
}

/** node's parseArgs, with an unknown, repeated-type or valueless flag ending the run through `usage`. */
export function benchArgs<T extends ParseArgsConfig>(config: T): ReturnType<typeof parseArgs<T>> {
  try {
    return parseArgs(config);
  } catch (err) {
    return usage((err as Error).message);
  }
}

/** A flag's text as a decimal number in [min, max] (a whole one when `integer`), else `usage`. */
export function numberFlag(
  name: string,
  text: string | undefined,
  range: { readonly min: number; readonly max: number; readonly integer?: boolean },
): number {
  const n = text !== undefined && /^-?\d+(\.\d+)?$/.test(text) ? Number(text) : Number.NaN;
  const kind = range.integer === true ? 'a whole number' : 'a number';
  if (!(n >= range.min && n <= range.max) || (range.integer === true && !Number.isInteger(n)))
    usage(`--${name}: ${kind} from ${range.min} to ${range.max}, got ${JSON.stringify(text)}`);
  return n;
}

export function benchFlags(): BenchFlags {
  const { values } = benchArgs({
    options: { json: { type: 'string' }, quick: { type: 'boolean', default: false } },
    allowPositionals: false,
  });
  return { json: values.json, quick: values.quick ?? false };
}

/** `model, N cores, M GiB, node vX` — printed with every result. */
export function machineLine(): string {
  const c = cpus();
  return `${c[0]?.model ?? 'unknown cpu'}, ${c.length} cores, ${Math.round(totalmem() / 2 ** 30)} GiB, node ${process.version}`;
}

export function percentile(sortedMs: readonly number[], p: number): number {
  if (sortedMs.length === 0) return Number.NaN;
  const i = Math.min(sortedMs.length - 1, Math.max(0, Math.ceil((p / 100) * sortedMs.length) - 1));
  return sortedMs[i] as number;
}

/** A log-scale histogram of latencies, printed as rows `≤ bound ms  count  bar`. */
export function histogram(samplesMs: readonly number[]): string {
  // Quarter-octave steps from 0.1 ms: fine enough to show the spread of a p50-to-p99 range.
  const bounds = [
    ...Array.from({ length: 56 }, (_, k) => Math.round(0.1 * 2 ** (k / 4) * 1000) / 1000),
    Number.POSITIVE_INFINITY,
  ];
  const counts = new Array<number>(bounds.length).fill(0);
  for (const s of samplesMs) {
    const i = bounds.findIndex((b) => s <= b);
    counts[i] = (counts[i] ?? 0) + 1;
  }
  const max = Math.max(1, ...counts);
  return bounds
    .map((b, i) => ({ b, n: counts[i] ?? 0 }))
    .filter((r) => r.n > 0)
    .map(
      (r) =>
        `  ≤ ${String(r.b === Number.POSITIVE_INFINITY ? '∞' : r.b).padStart(5)} ms ${String(r.n).padStart(6)} ${'#'.repeat(Math.ceil((40 * r.n) / max))}`,
    )
    .join('\n');
}

/** Writes one JSON object per line to `path` (when given). */
export function writeJsonLines(path: string | undefined, rows: readonly object[]): void {
  if (path === undefined) return;
  writeFileSync(path, `${rows.map((r) => JSON.stringify(r)).join('\n')}\n`);
}

/** Formats rows as an aligned text table. */
export function table(rows: readonly Record<string, string | number>[]): string {
  if (rows.length === 0) return '';
  const keys = Object.keys(rows[0] as object);
  const cell = (v: string | number | undefined): string =>
    typeof v === 'number' ? (Number.isInteger(v) ? String(v) : v.toFixed(3)) : (v ?? '');
  const widths = keys.map((k) => Math.max(k.length, ...rows.map((r) => cell(r[k]).length)));
  const line = (vals: string[]): string => vals.map((v, i) => v.padStart(widths[i] ?? 0)).join('  ');
  return [line(keys), ...rows.map((r) => line(keys.map((k) => cell(r[k]))))].join('\n');
}

/**
 * Runs `op` from `workers` concurrent loops for `durationMs` (a closed loop: each worker waits for its
 * previous call) and returns the operations per second and latency percentiles.
 */
export async function closedLoop(
  workers: number,
  durationMs: number,
  op: () => Promise<unknown>,
): Promise<{ opsPerSec: number; p50Ms: number; p99Ms: number }> {
  const latencies: number[] = [];
  const end = performance.now() + durationMs;
  const worker = async (): Promise<void> => {
    while (performance.now() < end) {
      const t0 = performance.now();
      await op();
      latencies.push(performance.now() - t0);
    }
  };
  await Promise.all(Array.from({ length: workers }, worker));
  latencies.sort((a, b) => a - b);
  return {
    opsPerSec: Math.round(latencies.length / (durationMs / 1000)),
    p50Ms: percentile(latencies, 50),
    p99Ms: percentile(latencies, 99),
  };
}
