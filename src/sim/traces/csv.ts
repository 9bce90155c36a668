/**
 * The streaming CSV layer every trace reader shares (`csv-parse`: well kept, streaming, reports the line of
 * each record). Rows are read one at a time from the file, so a trace of millions of rows never sits in memory
 * as text; each reader turns a row into an `Arrival` (or a node) and a malformed field into a
 * `TraceFormatError` naming the file's line and the column.
 *
 * The generic reader takes a column mapping: which column holds the arrival time, the departure time or the
 * duration, cpu, memory, disk, GPUs and the tenant. Units are the scheduler's: seconds for times, millicores
 * for cpu, MiB for memory and disk, whole GPUs for `gpuCount`, milli-GPU for `gpuMilli`.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { CsvError, parse } from 'csv-parse';
import { resourceAmountMax } from '../../../placement/index.js';
import type { SandboxSpec } from '../../../scheduler/commands.js';
import { ConfigError } from '../../lib/errors.js';
import { idLengthMax } from '../../lib/ids.js';
import { TraceFormatError } from '../errors.js';
import type { Arrival } from '../workload.js';

/** Rows one trace may yield at most. */
export const traceRowsMax = 10_000_000;
/** Bytes one trace record may have at most (a real row has well under 1,000). */
export const traceRecordBytesMax = 1 << 20;

export interface Row {
  /** 1-based line of the file the record ends on. */
  readonly line: number;
  get(column: string): string;
}

/**
 * Reads `path` row by row. With `header`, columns are named by the first line; without, by position
 * (`"0"`, `"1"`, …) or by `names`. Calls `each` for every data row; stops after `limit` rows.
 */
export async function eachRow(
  path: string,
  options: { header: boolean; names?: readonly string[]; limit?: number },
  each: (row: Row) => void,
): Promise<void> {
  const stream = createReadStream(path);
  const parser = stream.pipe(
    parse({
      info: true,
      relax_column_count: true,
      skip_empty_lines: true,
      trim: true,
      // A bound on one record: a file with no line breaks (or /dev/zero) is refused, not read into memory.
      max_record_size: traceRecordBytesMax,
    }),
  );
  // `pipe` does not forward a read error (no such file, a directory): without this the loop below waits for ever.
  stream.on('error', (err) => parser.destroy(err));
  let names: readonly string[] | undefined = options.names;
  let columnOf = new Map<string, number>();
  const setNames = (n: readonly string[], line = 1): void => {
    names = n;
    columnOf = new Map();
    for (const [i, c] of n.entries()) {
      if (columnOf.has(c)) throw new TraceFormatError(line, c, 'a column named twice in the header');
      columnOf.set(c, i);
    }
  };
  if (names !== undefined) setNames(names);
  let rows = 0;
  const limit = Math.min(options.limit ?? traceRowsMax, traceRowsMax);
  try {
    for await (const rec of parser as AsyncIterable<{ record: string[]; info: { lines: number } }>) {
      const { record, info } = rec;
      const line = info.lines;
      if (options.header && columnOf.size === 0) {
        setNames(record, line);
        continue;
      }
      if (names !== undefined && record.length !== names.length)
        throw new TraceFormatError(
          line,
          // The first column missing, or (too many) the first one beyond the last name.
          names[record.length] ?? String(names.length),
          `expected ${names.length} columns, got ${record.length}`,
        );
      each({
        line,
        get(column: string): string {
          const i = columnOf.get(column) ?? (names === undefined ? Number(column) : -1);
          const v = i >= 0 ? record[i] : undefined;
          if (v === undefined) throw new TraceFormatError(line, column, 'no such column');
          // csv-parse decodes bytes that are not UTF-8 as U+FFFD: refuse them rather than read them as text.
          if (v.includes('\uFFFD')) throw new TraceFormatError(line, column, 'not valid UTF-8');
          return v;
        },
      });
      if (++rows >= limit) break;
    }
    if (rows === 0) throw new TraceFormatError(1, '-', `${path} has no data rows`);
  } catch (err) {
    if (err instanceof TraceFormatError) throw err;
    const e = err as { code?: string; lines?: number; message?: string; syscall?: string };
    if (e.syscall !== undefined || e.code === 'ENOENT' || e.code === 'EACCES' || e.code === 'EISDIR')
      throw new ConfigError(`cannot read trace ${path}: ${e.code ?? 'error'}`);
    // Every csv-parse error (not all codes start with CSV_: INVALID_OPENING_QUOTE does not).
    if (err instanceof CsvError)
      throw new TraceFormatError(e.lines ?? 0, '-', `not valid CSV: ${String(e.message).split('\n')[0]}`);
    throw err;
  } finally {
    stream.destroy();
  }
}

const decimal = /^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/;

/** A non-negative number from a field; TraceFormatError naming line and column otherwise. */
export function num(row: Row, column: string, opts: { optional?: boolean } = {}): number | undefined {
  const s = row.get(column);
  if (s === '' || s === 'nan' || s === 'NaN') {
    if (opts.optional === true) return undefined;
    throw new TraceFormatError(row.line, column, s === '' ? 'empty value' : `no value (${s})`);
  }
  // Decimal only: Number() would also read hex, binary and octal ("0x10" as 16).
  const v = decimal.test(s) ? Number(s) : Number.NaN;
  if (!Number.isFinite(v) || v < 0)
    throw new TraceFormatError(
      row.line,
      column,
      `not a non-negative number: ${JSON.stringify(s.slice(0, 40))}`,
    );
  return v;
}

export function reqNum(row: Row, column: string): number {
  return num(row, column) as number;
}

/** Keeps arrivals in time order (traces are sorted by creation, but not always strictly). Stable. */
export function byTime(arrivals: Arrival[]): Arrival[] {
  return arrivals
    .map((a, i) => [a, i] as const)
    .sort((x, y) => x[0].atMs - y[0].atMs || x[1] - y[1])
    .map(([a]) => a);
}

/** Spec objects shared by equal shapes, so a large trace holds few of them (and digests are computed once). */
export class SpecPool {
  readonly #specs = new Map<string, SandboxSpec>();
  get(spec: SandboxSpec): SandboxSpec {
    const key = JSON.stringify(spec);
    const have = this.#specs.get(key);
    if (have !== undefined) return have;
    this.#specs.set(key, spec);
    return spec;
  }
}

export const genericColumns = [
  'id',
  'arrival',
  'departure',
  'duration',
  'cpu',
  'memory',
  'disk',
  'gpuCount',
  'gpuMilli',
  'tenant',
] as const;
export type GenericColumn = (typeof genericColumns)[number];

/** Reads a CSV with a column mapping (see the file header for units). `arrival`, `cpu` and `memory` are required. */
export async function readGenericCsv(
  path: string,
  mapping: Readonly<Record<string, string>>,
  options: { header?: boolean; limit?: number } = {},
): Promise<Arrival[]> {
  for (const key of Object.keys(mapping)) {
    if (!(genericColumns as readonly string[]).includes(key))
      throw new ConfigError(`trace.columns.${key}: unknown; known: ${genericColumns.join(', ')}`);
  }
  for (const need of ['arrival', 'cpu', 'memory'] as const) {
    if (mapping[need] === undefined) throw new ConfigError(`trace.columns.${need}: required`);
  }
  // Either would otherwise be dropped without a word: a share needs its count, and one lifetime is read.
  if (mapping.gpuMilli !== undefined && mapping.gpuCount === undefined)
    throw new ConfigError('trace.columns.gpuMilli: a milli-GPU share needs gpuCount too (1 for a share)');
  if (mapping.departure !== undefined && mapping.duration !== undefined)
    throw new ConfigError('trace.columns: map departure or duration, not both');
  // Without a header a column is its position: decimal digits only (Number() would take "0x1" or " 2").
  if (options.header === false)
    for (const [key, column] of Object.entries(mapping))
      if (!/^\d{1,4}$/.test(column))
        throw new ConfigError(`trace.columns.${key}: a column position ("0", "1", ...) without a header`);
  const ids = new Map<string, number>();
  const col = (k: GenericColumn): string | undefined => mapping[k];
  const pool = new SpecPool();
  const out: Arrival[] = [];
  await eachRow(
    path,
    { header: options.header ?? true, ...(options.limit === undefined ? {} : { limit: options.limit }) },
    (row) => {
      const at = reqNum(row, col('arrival') as string);
      const dep =
        col('departure') === undefined ? undefined : num(row, col('departure') as string, { optional: true });
      const dur =
        col('duration') === undefined ? undefined : num(row, col('duration') as string, { optional: true });
      if (dep !== undefined && dep < at)
        throw new TraceFormatError(row.line, col('departure') as string, 'departure before arrival');
      const gpuCount =
        col('gpuCount') === undefined ? 0 : (num(row, col('gpuCount') as string, { optional: true }) ?? 0);
      const gpuMilli =
        col('gpuMilli') === undefined ? 0 : (num(row, col('gpuMilli') as string, { optional: true }) ?? 0);
      const tenantCol = col('tenant');
      const spec: SandboxSpec = {
        tenant: tenantCol === undefined ? 'default' : tenantOf(row, tenantCol),
        resources: {
          cpu: intOf(row, col('cpu') as string, reqNum(row, col('cpu') as string)),
          memory: intOf(row, col('memory') as string, reqNum(row, col('memory') as string)),
          disk:
            col('disk') === undefined
              ? 0
              : intOf(row, col('disk') as string, reqNum(row, col('disk') as string)),
        },
        ...gpuAsk(row, col('gpuCount') ?? col('gpuMilli') ?? 'gpu', gpuCount, gpuMilli),
      };
      const lifetimeS = dep !== undefined ? dep - at : dur;
      out.push({
        id: col('id') === undefined ? `r${row.line}` : idOf(row, col('id') as string, ids),
        atMs: Math.round(at * 1000),
        spec: pool.get(spec),
        lifetimeMs:
          lifetimeS === undefined ? Number.POSITIVE_INFINITY : Math.max(1, Math.round(lifetimeS * 1000)),
      });
    },
  );
  return byTime(out);
}

export function intOf(row: Row, column: string, v: number): number {
  const n = Math.round(v);
  if (n > resourceAmountMax)
    throw new TraceFormatError(row.line, column, `too large: ${v} (at most ${resourceAmountMax})`);
  return n;
}

/** Whole GPUs, or a share of one (`gpuCount` 1 with `gpuMilli` < 1000), as a spec's `gpu` field. */
export function gpuAsk(row: Row, column: string, count: number, milli: number): Pick<SandboxSpec, 'gpu'> {
  if (!Number.isInteger(count) || count > 64)
    throw new TraceFormatError(row.line, column, `GPU count must be a whole number up to 64, got ${count}`);
  if (count === 0) return {};
  if (count === 1 && milli > 0 && milli < 1000) return { gpu: { milli: Math.round(milli) } };
  return { gpu: { count } };
}

const idPattern = /^[A-Za-z0-9_-]{1,128}$/;
/** A request id from a field; `seen` (id → line) refuses one used twice, which the scheduler would refuse. */
export function idOf(row: Row, column: string, seen: Map<string, number>): string {
  const v = row.get(column);
  if (!idPattern.test(v))
    throw new TraceFormatError(row.line, column, `not a valid id: ${JSON.stringify(v.slice(0, 40))}`);
  const first = seen.get(v);
  if (first !== undefined)
    throw new TraceFormatError(row.line, column, `id ${v} is used twice (first on line ${first})`);
  seen.set(v, row.line);
  return v;
}
/**
 * A tenant name from a field, one to one: a tenant is an id (letters, digits, '_' and '-', at most
 * `idLengthMax`), so every other byte of the field's UTF-8, and '_' itself, is written `_xx` (hex). Replacing
 * them all with '_' merged tenants ('a+b' and 'a/b', as Azure's base64 subscription ids have), and so their
 * quotas and shares. A name longer than an id may be keeps a prefix and a hash of the whole field. Empty:
 * `default`.
 */
export function tenantOf(row: Row, column: string): string {
  const raw = row.get(column);
  if (raw === '') return 'default';
  let v = '';
  for (const b of utf8Bytes.encode(raw)) {
    const c = String.fromCharCode(b);
    v += /[A-Za-z0-9-]/.test(c) ? c : `_${b.toString(16).padStart(2, '0')}`;
  }
  if (v.length <= idLengthMax) return v;
  // '_h' is no escape (those are '_' and two hex digits), so this cannot equal an escaped name.
  const hash = createHash('sha256').update(raw).digest('hex').slice(0, 32);
  return `${v.slice(0, idLengthMax - 34)}_h${hash}`;
}
const utf8Bytes = new TextEncoder();
