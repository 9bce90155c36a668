/**
 * `trellis bench load`: the load benchmark (src/load/run.ts) from the CLI; `npm run bench:load` runs the same
 * command through bench/load.ts. A live progress bar (cli-progress, as `trellis simulate` uses: well kept,
 * handles terminal redraws) shows on a terminal; the report goes to stdout and `--json FILE` gets the figures
 * the issue names.
 */
import { type Command, InvalidArgumentError, Option } from 'commander';
import { chaosDefaults, loadDefaults, loadNodesMax, loadSandboxesMax } from '../load/defaults.js';
import { intBetween, outputFile, writeOutput } from './args.js';

interface BenchLoadFlags {
  nodes: number;
  sandboxes: number;
  rate?: number;
  chaos: boolean;
  json?: string;
  data?: string;
  wait: 'placed' | 'running';
  clients: number;
  drain: number;
  cpuProf: boolean;
  logLevel: string;
  tickMs: number;
}

/** Without a terminal, a progress line this often instead of the bar. */
const progressLineEveryMs = 5_000;

const ratePattern = /^(\d+(?:\.\d+)?)\/(s|sec|min|m)$/;

/** `100000/min` or `2000/s` → creates per minute. */
export function rateArg(raw: string): number {
  const m = ratePattern.exec(raw.trim());
  const n = m === null ? Number.NaN : Number(m[1]);
  if (m === null || !(n > 0) || n > 1e9)
    throw new InvalidArgumentError(`${JSON.stringify(raw)} is not a rate like 100000/min or 2000/s`);
  return m[2] === 's' || m[2] === 'sec' ? n * 60 : n;
}

export function registerBench(program: Command): void {
  const bench = program.command('bench').description('benchmarks that run whole clusters of processes');
  bench
    .command('load')
    .description(
      'start nats-server, 3 replicas and simulated workers, drive sandboxes through their lifecycle over NATS, check and report',
    )
    .option(
      '--nodes <n>',
      `simulated nodes (1..${loadNodesMax})`,
      intBetween(1, loadNodesMax),
      loadDefaults.nodes,
    )
    .option(
      '--sandboxes <n>',
      `sandboxes to drive (1..${loadSandboxesMax})`,
      intBetween(1, loadSandboxesMax),
      loadDefaults.sandboxes,
    )
    .option('--rate <rate>', 'creates per minute or second, e.g. 100000/min (default: full speed)', rateArg)
    .option('--chaos', 'kill the leader every 5 s, pause a follower, restart nats-server and a worker', false)
    .option('--json <file>', 'write the summary figures as JSON', outputFile)
    .option('--data <dir>', 'keep the replicas and workers data here (default: a temporary directory)')
    .option(
      '--wait <state>',
      'what a create waits for: placed, or running (needs the dispatcher)',
      waitArg,
      loadDefaults.wait,
    )
    .option(
      '--clients <n>',
      'NATS client connections driving the load',
      intBetween(1, 256),
      loadDefaults.clients,
    )
    .option(
      '--drain <seconds>',
      'time for stragglers after the last sandbox',
      intBetween(0, 3_600),
      loadDefaults.drainMs / 1_000,
    )
    .option('--cpu-prof', "profile every replica's CPU (node --cpu-prof) into <data>/profiles", false)
    .option(
      '--tick-ms <ms>',
      'Raft tick of the replicas (elections time out after 10..20 ticks)',
      intBetween(1, 1_000),
      loadDefaults.tickMs,
    )
    .addOption(
      new Option(
        '--log-level <level>',
        'log level of the replicas and workers (their output: <data>/<name>.log)',
      )
        .choices(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'])
        .default(loadDefaults.logLevel),
    )
    .action(async (f: BenchLoadFlags) => {
      // cli-progress and the harness are loaded only by this command (see src/load/defaults.ts).
      const { SingleBar } = await import('cli-progress');
      const bar = process.stderr.isTTY
        ? new SingleBar({
            format:
              'load [{bar}] {percentage}% {value}/{total} terminated | created {created} failed {failed}',
            stream: process.stderr,
          })
        : undefined;
      let barStarted = false;
      let lastLineMs = 0;
      const { jsonSummary, runLoad } = await import('../load/run.js');
      const { formatReport } = await import('../load/report.js');
      const report = await runLoad({
        ...loadDefaults,
        nodes: f.nodes,
        sandboxes: f.sandboxes,
        wait: f.wait,
        clients: f.clients,
        drainMs: f.drain * 1_000,
        cpuProf: f.cpuProf,
        logLevel: f.logLevel,
        tickMs: f.tickMs,
        ...(f.rate === undefined ? {} : { ratePerMin: f.rate }),
        ...(f.chaos ? { chaos: chaosDefaults } : {}),
        ...(f.data === undefined ? {} : { dataDir: f.data }),
        log: (line) => {
          if (bar === undefined || !barStarted) process.stderr.write(`${line}\n`);
        },
        onProgress: (p) => {
          if (bar === undefined) {
            // Not a terminal (a log file, CI): a line every few seconds instead of a bar.
            const nowMs = Date.now();
            if (nowMs - lastLineMs < progressLineEveryMs) return;
            lastLineMs = nowMs;
            process.stderr.write(
              `progress: ${p.created} created, ${p.terminated}/${p.total} terminated, ${p.failed} failed\n`,
            );
            return;
          }
          if (!barStarted) {
            bar.start(p.total, 0, { created: 0, failed: 0 });
            barStarted = true;
          }
          bar.update(p.terminated, { created: p.created, failed: p.failed });
        },
      }).finally(() => bar?.stop());
      process.stdout.write(`${formatReport(report).join('\n')}\n`);
      if (f.json !== undefined) writeOutput(f.json, `${JSON.stringify(jsonSummary(report), null, 2)}\n`);
    });
}

function waitArg(raw: string): 'placed' | 'running' {
  if (raw === 'placed' || raw === 'running') return raw;
  throw new InvalidArgumentError(`--wait is placed or running, got ${JSON.stringify(raw)}`);
}
