/**
 * `trellis simulate` tried from the outside with hostile flags and files (audit of issue #16): each case is
 * one `error: … (CODE)` line on stderr, exit 1, no stack, nothing on stdout, and no report file left behind.
 * Runs the built CLI (npm run build first).
 */
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cliMain } from '../../src/testing/replica-process.js';
import { errorLine, runCli, stackFrame } from './run-cli.js';

describe('trellis simulate - hostile input', () => {
  let dir: string;
  let base: string[];
  let cases: {
    name: string;
    args: string[];
    code: string;
    message: RegExp;
    /** A report path that must not exist afterwards. */
    absent?: string;
    /** Without base's --cluster (for --node-list). */
    noCluster?: boolean;
  }[];

  beforeAll(async () => {
    expect(existsSync(cliMain), `${cliMain} missing: run npm run build first`).toBe(true);
    dir = await mkdtemp(join(tmpdir(), 'trellis-sim-hostile-'));
    const f = async (name: string, text: string): Promise<string> => {
      const p = join(dir, name);
      await writeFile(p, text);
      return p;
    };
    const cluster = await f(
      'cluster.yaml',
      'nodes:\n  - { shape: m5, count: 2, capacity: { cpu: 16000, memory: 65536, disk: 400000 } }\n',
    );
    const workload = await f(
      'workload.yaml',
      'arrivals: { kind: poisson, ratePerS: 5 }\ncount: 20\nsizes: [{ cpu: 1000, memory: 2048 }]\nlifetime: { kind: fixed, s: 10 }\n',
    );
    base = ['simulate', '--cluster', cluster, '--workload', workload, '--no-progress'];
    const trace = (name: string, path: string) =>
      f(name, `trace: { format: azure-vmtable, path: ${JSON.stringify(path)} }\n`);
    const json = join(dir, 'r.json');
    cases = [
      {
        name: 'a trace file that does not exist',
        args: ['--workload', await trace('t1.yaml', join(dir, 'none.csv'))],
        code: 'CONFIG',
        message: /cannot read trace .*ENOENT/,
      },
      {
        name: 'a trace path that is a directory',
        args: ['--workload', await trace('t2.yaml', dir)],
        code: 'CONFIG',
        message: /cannot read trace .*EISDIR/,
      },
      {
        name: 'a node list with a header and no nodes',
        args: ['--node-list', await f('nodes.csv', 'sn,cpu_milli,memory_mib,gpu,model\n')],
        noCluster: true,
        code: 'TRACE_FORMAT',
        message: /no data rows/,
      },
      {
        name: 'a cluster of zero nodes',
        args: [
          '--cluster',
          await f('zero.yaml', 'nodes: [{ shape: m, count: 0, capacity: { cpu: 1, memory: 1, disk: 0 } }]\n'),
        ],
        code: 'CONFIG',
        message: /no nodes/,
      },
      {
        name: 'a cluster spec that never ends (/dev/zero)',
        args: ['--cluster', '/dev/zero'],
        code: 'CONFIG',
        message: /larger than/,
      },
      {
        name: 'a trace that never ends (/dev/zero)',
        args: ['--workload', await trace('t3.yaml', '/dev/zero')],
        code: 'TRACE_FORMAT',
        message: /not valid CSV/,
      },
      {
        name: 'sizing with a what-if cluster (was ignored)',
        args: ['--find-min-nodes', 'm5', '--compare-cluster', cluster],
        code: 'CONFIG',
        message: /--compare-cluster/,
      },
      {
        name: 'sizing under inflation (every count passed)',
        args: ['--find-min-nodes', 'm5', '--protocol', 'inflation'],
        code: 'CONFIG',
        message: /replay/,
      },
      {
        name: 'an inflation resource for a replay (was ignored)',
        args: ['--inflation-resource', 'cpu'],
        code: 'CONFIG',
        message: /--protocol inflation/,
      },
      {
        name: 'a synthetic workload whose duration ends before its first arrival',
        args: [
          '--workload',
          await f(
            'short.yaml',
            'arrivals: { kind: poisson, ratePerS: 0.001 }\ncount: 5\ndurationS: 0.001\nsizes: [{ cpu: 1, memory: 1 }]\nlifetime: { kind: forever }\n',
          ),
        ],
        code: 'CONFIG',
        message: /no arrivals/,
      },
      {
        name: 'a YAML collection used as a key (yaml printed a process warning too)',
        args: [
          '--cluster',
          await f(
            'ckey.yaml',
            'nodes: [{ shape: m, count: 1, capacity: { cpu: 1, memory: 1, disk: 0 } }]\n? [a, b]\n: 1\n',
          ),
        ],
        code: 'VALIDATION',
        message: /Unrecognized key/,
      },
      {
        name: 'an inflation target for a replay (was ignored)',
        args: ['--target-pct', '50'],
        code: 'CONFIG',
        message: /--target-pct is for --protocol inflation/,
      },
      {
        name: 'a rejection bound without a sizing search (was ignored)',
        args: ['--max-rejected', '5%'],
        code: 'CONFIG',
        message: /--find-min-nodes/,
      },
      {
        name: 'a rejection bound of the default value without a sizing search (was ignored too)',
        args: ['--max-rejected', '1%'],
        code: 'CONFIG',
        message: /--find-min-nodes/,
      },
      {
        name: 'a report over the workload file (it was overwritten after the run)',
        args: ['--json', workload],
        code: 'CONFIG',
        message: /also an input/,
      },
      {
        name: 'two reports at one path',
        args: ['--json', json, '--html', json],
        code: 'CONFIG',
        message: /--html: .* also an input or another report/,
        absent: json,
      },
      {
        name: 'inflation to 0%',
        args: ['--protocol', 'inflation', '--target-pct', '0'],
        code: 'CONFIG',
        message: /--target-pct/,
      },
      {
        name: 'sizing with 100% allowed rejected',
        args: ['--find-min-nodes', 'm5', '--max-rejected', '100%'],
        code: 'CONFIG',
        message: /--max-rejected/,
      },
      {
        name: 'a report that cannot be written after one that could',
        args: ['--json', json, '--html', '/dev/full'],
        code: 'CONFIG',
        message: /cannot write \/dev\/full: ENOSPC/,
        absent: json,
      },
    ];
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('trellis simulate - each hostile case is one error line, exit 1, no stack and no report left', async () => {
    const problems: string[] = [];
    for (const c of cases) {
      // A later flag overrides base's (commander keeps an option's last value).
      const args = [...(c.noCluster === true ? base.filter((_, i) => i !== 1 && i !== 2) : base), ...c.args];
      const r = await runCli(args);
      const lines = r.stderr.split('\n').filter((l) => l !== '');
      const m = errorLine.exec(lines[0] ?? '');
      const ok =
        !r.timedOut &&
        r.code === 1 &&
        lines.length === 1 &&
        m?.[1] === c.code &&
        c.message.test(lines[0] ?? '') &&
        !stackFrame.test(r.stderr) &&
        r.stdout === '' &&
        (c.absent === undefined || !existsSync(c.absent));
      if (!ok)
        problems.push(
          `${c.name}: ${JSON.stringify(r)}${c.absent && existsSync(c.absent) ? ' (report left)' : ''}`,
        );
    }
    expect(problems).toEqual([]);
  }, 600_000);
});
