/**
 * `trellis simulate`: capacity simulation (src/sim, docs/simulation.md). Reads a cluster spec and a workload
 * (YAML or JSON; a workload may name a trace), runs one or more policies over the same arrivals — or searches
 * the smallest count of a node shape — and writes a summary, and JSON, CSV and HTML reports when asked.
 * A progress bar (`cli-progress`: well kept, handles TTY redraws) shows on a terminal only.
 * Every failure is one line `error: <message> (<CODE>)` on stderr and exit code 1.
 */
import { resolve } from 'node:path';
import { SingleBar } from 'cli-progress';
import { ConfigError } from '../lib/errors.js';
import {
  type ClusterSpec,
  findMinNodes,
  type InflationOptions,
  loadArrivals,
  type PolicySpec,
  parseCluster,
  parsePolicy,
  parseWorkload,
  type Report,
  type RunResult,
  readAlibabaGpuNodes,
  readSpecFile,
  reportCsv,
  reportHtml,
  reportJson,
  type SimOptions,
  type SizingResult,
  summaryLines,
  whatIf,
  withWorkloadQuotas,
} from '../sim/index.js';
import { writeOutputs } from './args.js';
import { builtinPolicies } from './simulate-command.js';

export interface SimulateFlags {
  cluster?: string;
  nodeList?: string;
  workload: string;
  protocol: string;
  targetPct: string;
  inflationResource?: string;
  policy: string;
  policies?: string;
  compareCluster?: string[];
  batch?: string;
  windowMs: string;
  pendingTimeoutS: string;
  seed: string;
  findMinNodes?: string;
  /** Given only with findMinNodes; 1% when not given. */
  maxRejected?: string;
  json?: string;
  csv?: string;
  html?: string;
  progress: boolean;
}

function int(name: string, v: string, min: number, max: number): number {
  if (!/^-?\d+$/.test(v.trim())) throw new ConfigError(`--${name}: not a whole number: ${JSON.stringify(v)}`);
  const n = Number(v);
  if (n < min || n > max) throw new ConfigError(`--${name}: must be in [${min}, ${max}], got ${n}`);
  return n;
}

function percent(name: string, v: string): number {
  const m = /^(\d+(?:\.\d+)?)%?$/.exec(v.trim());
  if (m === null) throw new ConfigError(`--${name}: not a percentage: ${JSON.stringify(v)}`);
  const n = Number(m[1]);
  if (n > 1000) throw new ConfigError(`--${name}: at most 1000%`);
  return n;
}

/** `--policy dot,fgd` names built-in policies; `--policies FILE` lists full policy specs. */
function policiesOf(f: SimulateFlags, batch: number | undefined): PolicySpec[] {
  let list: PolicySpec[];
  if (f.policies !== undefined) {
    const raw = readSpecFile(f.policies);
    if (!Array.isArray(raw)) throw new ConfigError(`${f.policies}: a list of policies`);
    list = raw.map((p, i) => parsePolicy(p, `policies.${i}`));
  } else {
    list = f.policy.split(',').map((name) => {
      const n = name.trim();
      if (!(builtinPolicies as readonly string[]).includes(n))
        throw new ConfigError(`--policy: unknown ${JSON.stringify(n)}; known: ${builtinPolicies.join(', ')}`);
      return n === 'spread'
        ? { name: n, strategy: 'spread' as const }
        : { name: n, scorer: n as PolicySpec['scorer'] & string };
    });
  }
  return batch === undefined ? list : list.map((p) => ({ ...p, batchSize: batch }));
}

async function clusterOf(f: SimulateFlags, path: string | undefined): Promise<ClusterSpec> {
  if (path !== undefined) return parseCluster(readSpecFile(path));
  if (f.nodeList !== undefined) return readAlibabaGpuNodes(f.nodeList);
  throw new ConfigError('give --cluster FILE or --node-list FILE');
}

export async function runSimulate(f: SimulateFlags, out: (line: string) => void): Promise<Report> {
  // Every flag is checked before a file is read: a trace may take seconds to load.
  const seed = int('seed', f.seed, 0, 2 ** 31 - 1);
  if (f.protocol !== 'replay' && f.protocol !== 'inflation')
    throw new ConfigError(`--protocol: replay or inflation, got ${JSON.stringify(f.protocol)}`);
  if (f.cluster !== undefined && f.nodeList !== undefined)
    throw new ConfigError('give --cluster FILE or --node-list FILE, not both');
  const batch = f.batch === undefined ? undefined : int('batch', f.batch, 1, 100_000);
  const resource = f.inflationResource;
  if (resource !== undefined && resource !== 'cpu' && resource !== 'memory' && resource !== 'gpu')
    throw new ConfigError(`--inflation-resource: cpu, memory or gpu`);
  const targetPct = percent('target-pct', f.targetPct);
  // 0% would submit nothing and report an empty run as a result.
  if (targetPct === 0) throw new ConfigError('--target-pct: more than 0%');
  const inflation: InflationOptions = {
    targetPct,
    ...(resource === undefined ? {} : { resource }),
  };
  const batchWindowMs = int('window-ms', f.windowMs, 0, 1e9);
  const pendingTimeoutMs = int('pending-timeout-s', f.pendingTimeoutS, 0, 1e7) * 1000;
  // Refused whenever given without a sizing search, the default's value included: it would be ignored.
  if (f.maxRejected !== undefined && f.findMinNodes === undefined)
    throw new ConfigError('--max-rejected is the bound of --find-min-nodes');
  const maxRejected = percent('max-rejected', f.maxRejected ?? '1%') / 100;
  if (maxRejected >= 1) throw new ConfigError('--max-rejected: below 100%');
  // A report written over an input (or over another report) would destroy it after the run.
  const inputs = [f.cluster, f.nodeList, f.workload, f.policies, ...(f.compareCluster ?? [])]
    .filter((p): p is string => p !== undefined)
    .map((p) => resolve(p));
  const outputs = new Set<string>();
  for (const [flag, p] of [
    ['json', f.json],
    ['csv', f.csv],
    ['html', f.html],
  ] as const) {
    if (p === undefined) continue;
    const at = resolve(p);
    if (inputs.includes(at) || outputs.has(at))
      throw new ConfigError(`--${flag}: ${p} is also an input or another report`);
    outputs.add(at);
  }
  const policies = policiesOf(f, batch);
  if (f.findMinNodes !== undefined && policies.length !== 1)
    throw new ConfigError('--find-min-nodes takes one policy');
  // Each would otherwise be ignored without a word (sizing under inflation: the arrived demand grows with
  // the node count, so every count "passes").
  if (f.findMinNodes !== undefined && (f.compareCluster ?? []).length > 0)
    throw new ConfigError('--find-min-nodes sizes one cluster: not with --compare-cluster');
  if (f.findMinNodes !== undefined && f.protocol !== 'replay')
    throw new ConfigError('--find-min-nodes runs the replay protocol, not inflation');
  if (resource !== undefined && f.protocol !== 'inflation')
    throw new ConfigError('--inflation-resource is for --protocol inflation');
  // A target other than the default with a replay would be ignored (an explicit 100 is harmless).
  if (targetPct !== 100 && f.protocol !== 'inflation')
    throw new ConfigError('--target-pct is for --protocol inflation');
  const workload = parseWorkload(readSpecFile(f.workload));
  const base = withWorkloadQuotas(await clusterOf(f, f.cluster), workload);
  const notes: string[] = [];
  const arrivals = await loadArrivals(workload, seed, notes);
  // A run of nothing would print a summary of zeros as if it were an answer.
  if (arrivals.length === 0)
    throw new ConfigError(
      `${f.workload}: the workload has no arrivals (a durationS shorter than the first arrival, or a trace whose rows were all skipped)`,
    );
  const bar =
    f.progress && process.stderr.isTTY
      ? new SingleBar({
          format: 'simulating [{bar}] {percentage}% {value}/{total} arrivals',
          stream: process.stderr,
        })
      : undefined;
  const options: Omit<SimOptions, 'policy'> = {
    seed,
    protocol: f.protocol,
    inflation,
    batchWindowMs,
    pendingTimeoutMs,
    ...(bar === undefined ? {} : { onProgress: (n: number) => bar.update(n) }),
  };
  let runs: RunResult[];
  let sizing: SizingResult | undefined;
  try {
    if (f.findMinNodes !== undefined) {
      // A sizing search's run count is not known ahead: the bar fills once per count tried.
      bar?.start(arrivals.length, 0);
      sizing = findMinNodes(
        base,
        f.findMinNodes,
        arrivals,
        { ...options, policy: policies[0] as PolicySpec },
        maxRejected,
      );
      runs = [{ ...sizing.best, name: `${sizing.best.name} @ ${sizing.count} × ${f.findMinNodes}` }];
    } else {
      const clusters: { name: string; spec: ClusterSpec }[] = [{ name: '', spec: base }];
      for (const path of f.compareCluster ?? [])
        clusters.push({ name: path, spec: withWorkloadQuotas(await clusterOf(f, path), workload) });
      const variants = clusters.flatMap((c) =>
        policies.map((p) => ({
          name: c.name === '' ? p.name : `${p.name} on ${c.name}`,
          cluster: c.spec,
          policy: p,
        })),
      );
      bar?.start(variants.length * arrivals.length, 0);
      runs = whatIf(variants, arrivals, options);
    }
  } finally {
    bar?.stop();
  }
  const report: Report = {
    title: `trellis simulate — ${f.workload}`,
    runs,
    ...(sizing === undefined ? {} : { sizing }),
  };
  // Reports first, all or none: a report left beside a failed write (or a summary printed before it)
  // would look like a finished run's.
  const files: [string, string][] = [];
  if (f.json !== undefined) files.push([f.json, reportJson(report)]);
  if (f.csv !== undefined) files.push([f.csv, reportCsv(report)]);
  if (f.html !== undefined) files.push([f.html, reportHtml(report)]);
  writeOutputs(files);
  for (const line of summaryLines(report)) out(line);
  for (const note of notes) out(`note: ${note}`);
  if (sizing !== undefined) {
    out(
      `sizing: ${sizing.count} × ${sizing.shape} keeps rejections within ${(100 * sizing.maxRejectedFraction).toFixed(2)}%`,
    );
    out(
      `  tried: ${sizing.steps.map((s) => `${s.count} → ${(100 * s.rejectedFraction).toFixed(2)}%`).join(', ')}`,
    );
  }
  return report;
}

export { registerSimulate } from './simulate-command.js';
