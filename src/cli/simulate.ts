/**
 * `trellis simulate`: capacity simulation (src/sim, docs/simulation.md). Reads a cluster spec and a workload
 * (YAML or JSON; a workload may name a trace), runs one or more policies over the same arrivals — or searches
 * the smallest count of a node shape — and writes a summary, and JSON, CSV and HTML reports when asked.
 * A progress bar (`cli-progress`: well kept, handles TTY redraws) shows on a terminal only.
 * Every failure is one line `error: <message> (<CODE>)` on stderr and exit code 1.
 */
import { SingleBar } from 'cli-progress';
import type { Command } from 'commander';
import { ConfigError, TrellisError } from '../lib/errors.js';
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
import { outputFile, writeOutput } from './args.js';

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
  maxRejected: string;
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

const builtinPolicies = ['dot', 'dominant', 'blend', 'gpu-bestfit', 'gpu-dot', 'fgd', 'spread'] as const;

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
  const inflation: InflationOptions = {
    targetPct: percent('target-pct', f.targetPct),
    ...(resource === undefined ? {} : { resource }),
  };
  const batchWindowMs = int('window-ms', f.windowMs, 0, 1e9);
  const pendingTimeoutMs = int('pending-timeout-s', f.pendingTimeoutS, 0, 1e7) * 1000;
  const maxRejected = percent('max-rejected', f.maxRejected) / 100;
  const policies = policiesOf(f, batch);
  if (f.findMinNodes !== undefined && policies.length !== 1)
    throw new ConfigError('--find-min-nodes takes one policy');
  const workload = parseWorkload(readSpecFile(f.workload));
  const base = withWorkloadQuotas(await clusterOf(f, f.cluster), workload);
  const arrivals = await loadArrivals(workload, seed);
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
  bar?.start(arrivals.length, 0);
  try {
    if (f.findMinNodes !== undefined) {
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
  for (const line of summaryLines(report)) out(line);
  if (sizing !== undefined) {
    out(
      `sizing: ${sizing.count} × ${sizing.shape} keeps rejections within ${(100 * sizing.maxRejectedFraction).toFixed(2)}%`,
    );
    out(
      `  tried: ${sizing.steps.map((s) => `${s.count} → ${(100 * s.rejectedFraction).toFixed(2)}%`).join(', ')}`,
    );
  }
  if (f.json !== undefined) writeOutput(f.json, reportJson(report));
  if (f.csv !== undefined) writeOutput(f.csv, reportCsv(report));
  if (f.html !== undefined) writeOutput(f.html, reportHtml(report));
  return report;
}

export function registerSimulate(program: Command): void {
  program
    .command('simulate')
    .description(
      'capacity simulation: replay a workload in virtual time through the scheduler code (docs/simulation.md)',
    )
    .option('--cluster <file>', 'cluster spec, YAML or JSON')
    .option('--node-list <file>', 'an Alibaba GPU v2023 node list (CSV) as the cluster')
    .requiredOption('--workload <file>', 'workload spec, YAML or JSON (synthetic, or naming a trace)')
    .option('--protocol <name>', 'replay | inflation', 'replay')
    .option('--target-pct <n>', 'inflation: stop when arrived demand reaches this % of capacity', '100')
    .option(
      '--inflation-resource <r>',
      'inflation: cpu | memory | gpu (default gpu when the cluster has GPUs)',
    )
    .option('--policy <names>', `comma-separated built-in policies (${builtinPolicies.join(', ')})`, 'dot')
    .option('--policies <file>', 'a YAML/JSON list of policy specs, instead of --policy')
    .option('--compare-cluster <file...>', 'what-if: more cluster specs to run the same workload on')
    .option('--batch <n>', 'requests planned together at most')
    .option('--window-ms <n>', 'virtual ms a batch collects arrivals (0: one instant)', '0')
    .option(
      '--pending-timeout-s <n>',
      'virtual seconds a request may wait for room (0: rejected at once)',
      '30',
    )
    .option('--seed <n>', 'seed of every random choice', '1')
    .option('--find-min-nodes <shape>', 'sizing: smallest count of this node shape within --max-rejected')
    .option('--max-rejected <pct>', 'sizing: rejected share allowed, e.g. 1%', '1%')
    .option('--json <file>', 'write the JSON report', outputFile)
    .option('--csv <file>', 'write the samples as CSV', outputFile)
    .option('--html <file>', 'write the self-contained HTML report', outputFile)
    .option('--no-progress', 'no progress bar')
    .action(async (flags: SimulateFlags) => {
      try {
        await runSimulate(flags, (line) => process.stdout.write(`${line}\n`));
      } catch (err) {
        if (!(err instanceof TrellisError)) throw err;
        process.stderr.write(`error: ${err.message.split('\n')[0]} (${err.code})\n`);
        process.exitCode = 1;
      }
    });
}
