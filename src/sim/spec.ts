/**
 * The simulator's inputs, as zod schemas (the static types are inferred, so the check and the type cannot
 * drift), and the loader that reads them from YAML or JSON (`yaml`: well kept, YAML 1.2, so every JSON
 * document is also read correctly, and its errors carry line and column).
 *
 * Units: node capacity and sandbox sizes are the scheduler's own (cpu millicores, memory and disk MiB, GPU
 * milli-GPU per device); times in a spec are seconds of virtual time (`...S`), converted to milliseconds
 * inside the engine.
 */
import { closeSync, openSync, readSync } from 'node:fs';
import { LineCounter, parseDocument } from 'yaml';
import { z } from 'zod';
import { quotaSchema, resourcesSchema, sandboxSpecSchema } from '../../scheduler/commands.js';
import { ConfigError } from '../lib/errors.js';
import { parseWith } from '../lib/validate.js';
import { SpecParseError } from './errors.js';

/** Nodes one cluster spec may expand to (the index holds up to 2^20; a simulation stays well below). */
export const clusterNodesMax = 200_000;
/** Node groups and timed node events one cluster spec may list. */
export const clusterGroupsMax = 1_000;
export const clusterEventsMax = 100_000;
/** Sizes, tenants and policies a spec may list. */
export const specListMax = 1_000;
/** Arrivals one synthetic workload may generate. */
export const syntheticArrivalsMax = 10_000_000;
/** Alias expansions a YAML spec may make (`yaml`'s guard against an alias bomb). */
export const specAliasesMax = 100;
/** Largest spec file read, in bytes. */
export const specFileBytesMax = 16 << 20;

const name = z
  .string()
  .min(1)
  .max(64)
  .regex(/^[A-Za-z0-9_.-]+$/, "may contain only letters, digits, '_', '.' and '-'");
const seconds = z.number().min(0).max(1e10);
const positive = z.number().positive().max(1e10);

export const nodeGroupSchema = z.strictObject({
  /** The shape's name; node ids are `<shape>-<n>`. */
  shape: name,
  count: z.int().min(0).max(clusterNodesMax),
  capacity: resourcesSchema,
  gpu: z.strictObject({ model: z.string().min(1).max(64), count: z.int().min(0).max(64) }).optional(),
  labels: z.record(z.string().min(1).max(64), z.string().min(1).max(64)).optional(),
  /** Nodes are spread round-robin over these zones (label `zone`), and over racks within a zone. */
  zones: z.array(name).min(1).max(64).optional(),
  racksPerZone: z.int().min(1).max(10_000).optional(),
});
export type NodeGroup = z.output<typeof nodeGroupSchema>;

export const nodeEventSchema = z.strictObject({
  atS: seconds,
  /** fail: the node goes down and its sandboxes are lost; drain: no new placements; return: ready again. */
  kind: z.enum(['fail', 'drain', 'return']),
  /** One node by id, or the first `count` nodes of a shape. */
  node: z.string().min(1).max(128).optional(),
  shape: name.optional(),
  count: z.int().min(1).max(clusterNodesMax).optional(),
});
export type NodeEventSpec = z.output<typeof nodeEventSchema>;

export const clusterSpecSchema = z.strictObject({
  nodes: z.array(nodeGroupSchema).min(1).max(clusterGroupsMax),
  events: z.array(nodeEventSchema).max(clusterEventsMax).optional(),
  quotas: z.record(name, quotaSchema).optional(),
});
export type ClusterSpec = z.output<typeof clusterSpecSchema>;

const gpuAsk = z.strictObject({
  count: z.int().min(1).max(64).optional(),
  milli: z.int().min(1).max(999).optional(),
  model: z.string().min(1).max(64).optional(),
});

export const sizeSchema = z.strictObject({
  weight: positive.default(1),
  cpu: z.int().min(0).max(1e9),
  memory: z.int().min(0).max(1e9),
  disk: z.int().min(0).max(1e9).default(0),
  gpu: gpuAsk.optional(),
});
export type SizeSpec = z.output<typeof sizeSchema>;

export const lifetimeSchema = z.discriminatedUnion('kind', [
  z.strictObject({ kind: z.literal('exponential'), meanS: positive }),
  z.strictObject({ kind: z.literal('fixed'), s: positive }),
  z
    .strictObject({ kind: z.literal('uniform'), minS: seconds, maxS: positive })
    .refine((l) => l.minS <= l.maxS, { path: ['maxS'], message: 'must be at least minS' }),
  z.strictObject({ kind: z.literal('lognormal'), medianS: positive, sigma: z.number().min(0).max(10) }),
  /** Heavy-tailed: Pareto with scale `minS` and shape `alpha`. */
  z.strictObject({ kind: z.literal('pareto'), minS: positive, alpha: z.number().min(0.1).max(100) }),
  z.strictObject({ kind: z.literal('forever') }),
]);
export type LifetimeSpec = z.output<typeof lifetimeSchema>;

export const arrivalsSchema = z.discriminatedUnion('kind', [
  z.strictObject({ kind: z.literal('poisson'), ratePerS: positive }),
  /**
   * Bursty: Poisson at `ratePerS`, and for `burstS` seconds out of every `everyS` at `burstRatePerS`
   * (a Markov-modulated Poisson process with a fixed schedule).
   */
  z
    .strictObject({
      kind: z.literal('bursty'),
      ratePerS: positive,
      burstRatePerS: positive,
      everyS: positive,
      burstS: positive,
    })
    .refine((a) => a.burstS <= a.everyS, { path: ['burstS'], message: 'must be at most everyS' }),
]);

export const tenantSchema = z.strictObject({
  name,
  weight: positive.default(1),
  quota: quotaSchema.optional(),
});

export const syntheticWorkloadSchema = z.strictObject({
  arrivals: arrivalsSchema,
  /** Stop after this many arrivals or this much virtual time, whichever comes first. */
  count: z.int().min(1).max(syntheticArrivalsMax),
  durationS: positive.optional(),
  sizes: z.array(sizeSchema).min(1).max(specListMax),
  lifetime: lifetimeSchema,
  tenants: z.array(tenantSchema).min(1).max(specListMax).optional(),
  /** A share of sandboxes is suspended for a while half-way through their life. */
  suspend: z.strictObject({ share: z.number().min(0).max(1), durationS: positive }).optional(),
  /** Extra spec fields every sandbox carries (constraints, spread, ...), as in `trellis` create specs. */
  template: sandboxSpecSchema.omit({ tenant: true, resources: true, gpu: true }).partial().optional(),
});
export type SyntheticWorkload = z.output<typeof syntheticWorkloadSchema>;

export const traceWorkloadSchema = z.strictObject({
  trace: z.strictObject({
    format: z.enum(['csv', 'azure-vmtable', 'alibaba-2018-batch-task', 'alibaba-gpu-2023-pods']),
    path: z.string().min(1).max(4096),
    /** Generic CSV only: which column holds what (see traces/csv.ts). */
    columns: z.record(z.string(), z.string()).optional(),
    header: z.boolean().optional(),
    /** Rows read at most. */
    limit: z.int().min(1).max(syntheticArrivalsMax).optional(),
  }),
});
export type TraceWorkload = z.output<typeof traceWorkloadSchema>;

export const workloadSpecSchema = z.union([syntheticWorkloadSchema, traceWorkloadSchema]);
export type WorkloadSpec = z.output<typeof workloadSpecSchema>;

/** One placement policy of a run (what-if runs list several). */
export const policySchema = z.strictObject({
  name,
  strategy: z.enum(['binpack', 'spread']).optional(),
  scorer: z.enum(['dot', 'dominant', 'blend', 'gpu-bestfit', 'gpu-dot', 'fgd']).optional(),
  /** Requests planned together at most (the leader's batch size). */
  batchSize: z.int().min(1).max(100_000).optional(),
  /** Feasible candidates scored per request, and the cluster size scanned whole (placement's limits). */
  candidateLimit: z.int().min(1).max(1_000_000).optional(),
  exactScanNodesMax: z.int().min(0).max(1_000_000).optional(),
});
export type PolicySpec = z.output<typeof policySchema>;

/**
 * Reads at most `max` bytes of a file, and refuses a longer one while reading: a whole-file read of a huge
 * file, or of a device that never ends (/dev/zero), would fill memory before any size check.
 */
function readBounded(path: string, max: number): Buffer {
  const fd = openSync(path, 'r');
  try {
    const chunks: Buffer[] = [];
    let total = 0;
    for (;;) {
      const chunk = Buffer.allocUnsafe(64 * 1024);
      const n = readSync(fd, chunk, 0, chunk.length, null);
      if (n === 0) return Buffer.concat(chunks, total);
      total += n;
      if (total > max) throw new ConfigError(`${path} is larger than ${max} bytes`);
      chunks.push(n === chunk.length ? chunk : chunk.subarray(0, n));
    }
  } finally {
    closeSync(fd);
  }
}

/** Refuses bytes that are not UTF-8 (a lossy read would make labels and names of U+FFFD). Drops a BOM. */
const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Reads and parses a YAML or JSON file into a plain value; SpecParseError with line and column on bad syntax. */
export function readSpecFile(path: string): unknown {
  let bytes: Buffer;
  try {
    bytes = readBounded(path, specFileBytesMax);
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    throw new ConfigError(`cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`, {
      cause: err,
    });
  }
  let text: string;
  try {
    text = utf8.decode(bytes);
  } catch (err) {
    throw new SpecParseError(`${path}: not valid UTF-8`, { cause: err });
  }
  return parseSpecText(text, path);
}

/** Parses YAML (or JSON) text; SpecParseError with the position of the first syntax error. */
export function parseSpecText(text: string, where = 'spec'): unknown {
  const lines = new LineCounter();
  // logLevel 'error': `yaml` would print a warning (a collection used as a key) through process.emitWarning,
  // two more lines on stderr beside the one error line; such a key is refused by the schema anyway.
  const doc = parseDocument(text, {
    prettyErrors: false,
    uniqueKeys: true,
    lineCounter: lines,
    logLevel: 'error',
  });
  const first = doc.errors[0];
  if (first !== undefined) {
    const pos = lines.linePos(first.pos[0]);
    const at = pos === undefined ? '' : ` at line ${pos.line}, column ${pos.col}`;
    throw new SpecParseError(`${where}: not valid YAML/JSON${at}: ${first.message.split('\n')[0]}`, {
      details: pos === undefined ? {} : { line: pos.line, column: pos.col },
    });
  }
  try {
    return doc.toJS({ maxAliasCount: specAliasesMax });
  } catch (err) {
    // `yaml` refuses an alias bomb (aliases that expand exponentially) while building the value.
    throw new SpecParseError(`${where}: not valid YAML/JSON: ${(err as Error).message.split('\n')[0]}`);
  }
}

export function parseCluster(input: unknown, root = 'cluster'): ClusterSpec {
  const spec = parseWith(clusterSpecSchema, input, root);
  const total = spec.nodes.reduce((n, g) => n + g.count, 0);
  if (total > clusterNodesMax) throw new ConfigError(`${root}: ${total} nodes, at most ${clusterNodesMax}`);
  return spec;
}

/** A workload is a trace reference when it has a `trace` key, else synthetic (so errors name the real field). */
export function parseWorkload(input: unknown, root = 'workload'): WorkloadSpec {
  const isTrace = input !== null && typeof input === 'object' && 'trace' in input;
  return isTrace
    ? parseWith(traceWorkloadSchema, input, root)
    : parseWith(syntheticWorkloadSchema, input, root);
}

export function parsePolicy(input: unknown, root = 'policy'): PolicySpec {
  return parseWith(policySchema, input, root);
}
