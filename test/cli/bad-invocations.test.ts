import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { exitCodes } from '../../src/cli/errors.js';
import { cliMain } from '../../src/testing/replica-process.js';
import { freePort } from '../../src/testing/servers.js';
import { errorLine, runCli, stackFrame } from './run-cli.js';

interface Case {
  readonly args: readonly string[];
  /** The code in the error line's parentheses. */
  readonly code: string;
  readonly exit: number;
}

const usage = exitCodes.usage;

describe('trellis cli - bad invocations', () => {
  let dir: string;
  let taken: string;
  let closedPort: number;
  let cases: Case[];

  beforeAll(async () => {
    expect(existsSync(cliMain), `${cliMain} missing: run npm run build first`).toBe(true);
    dir = await mkdtemp(join(tmpdir(), 'trellis-cli-bad-'));
    taken = join(dir, 'taken');
    await mkdir(taken);
    await writeFile(join(taken, 'credentials.json'), '{"keep":"me"}\n');
    // A port that was free a moment ago: nothing listens there, so connecting is refused.
    closedPort = await freePort();
    const data = join(dir, 'data');
    const server = ['server', '--id', 'a', '--peers', 'a', '--data', data];
    const cluster = join(dir, 'cluster.yaml');
    const workload = join(dir, 'workload.yaml');
    await writeFile(
      cluster,
      'nodes:\n  - { shape: m5, count: 2, capacity: { cpu: 16000, memory: 65536, disk: 400000 } }\n',
    );
    await writeFile(
      workload,
      'arrivals: { kind: poisson, ratePerS: 20 }\ncount: 10\nsizes: [{ weight: 1, cpu: 1000, memory: 2048 }]\n',
    );
    const simulate = ['simulate', '--cluster', cluster, '--workload', workload, '--no-progress'];
    cases = [
      { args: [], code: 'USAGE', exit: usage },
      { args: ['frobnicate'], code: 'USAGE', exit: usage },
      { args: ['--no-such-flag'], code: 'USAGE', exit: usage },
      { args: ['demo', '--bogus'], code: 'USAGE', exit: usage },
      { args: ['demo', '--nodes', 'abc'], code: 'USAGE', exit: usage },
      { args: ['demo', '--nodes', '-5'], code: 'USAGE', exit: usage },
      { args: ['demo', '--requests', '1.5'], code: 'USAGE', exit: usage },
      { args: ['demo', '--batch', '0'], code: 'USAGE', exit: usage },
      { args: ['demo', '--seed', 'NaN'], code: 'USAGE', exit: usage },
      { args: ['demo', '--nodes'], code: 'USAGE', exit: usage },
      { args: ['demo', 'extra-argument'], code: 'USAGE', exit: usage },
      { args: ['cluster-demo', '--sandboxes', '0'], code: 'USAGE', exit: usage },
      { args: ['cluster-demo', '--nodes', '1e3'], code: 'USAGE', exit: usage },
      { args: ['server'], code: 'USAGE', exit: usage },
      { args: [...server, '--tick-ms', 'abc'], code: 'USAGE', exit: usage },
      { args: [...server, '--tick-ms', '0'], code: 'USAGE', exit: usage },
      { args: [...server, '--snapshot-entries', '0'], code: 'USAGE', exit: usage },
      { args: [...server, '--connect-timeout', 'soon'], code: 'USAGE', exit: usage },
      { args: [...server, '--stop-timeout', '-1'], code: 'USAGE', exit: usage },
      { args: [...server, '--nats', 'http://127.0.0.1:4222'], code: 'USAGE', exit: usage },
      { args: [...server, '--cluster', 'a.b'], code: 'USAGE', exit: usage },
      { args: ['server', '--id', 'a b', '--peers', 'a', '--data', data], code: 'VALIDATION', exit: usage },
      { args: ['kv'], code: 'USAGE', exit: usage },
      { args: ['kv', 'put', 'k'], code: 'USAGE', exit: usage },
      { args: ['kv', 'get', 'k', '--nats', 'nats://127.0.0.1:99999'], code: 'USAGE', exit: usage },
      { args: ['kv', 'get', 'k', '--user', 'someone'], code: 'USAGE', exit: usage },
      { args: ['kv', 'get', 'k', '--password', 'secret'], code: 'USAGE', exit: usage },
      { args: ['kv', 'get', 'k', '--creds', join(dir, 'missing.json')], code: 'CONFIG', exit: usage },
      {
        args: ['kv', 'get', 'k', '--nats', `nats://127.0.0.1:${closedPort}`, '--connect-timeout', '300ms'],
        code: 'UNAVAILABLE',
        exit: exitCodes.unavailable,
      },
      { args: ['members', 'transfer'], code: 'USAGE', exit: usage },
      { args: ['members', 'add', 'bad.id'], code: 'VALIDATION', exit: usage },
      { args: ['members', 'list', '--connect-timeout', '0'], code: 'USAGE', exit: usage },
      { args: ['nats-config'], code: 'USAGE', exit: usage },
      {
        args: ['nats-config', '--cluster', 'c', '--replicas', 'a,b,a', '--out', dir],
        code: 'VALIDATION',
        exit: usage,
      },
      {
        args: ['nats-config', '--cluster', 'c', '--replicas', 'a', '--tls-key', 'k.pem', '--out', dir],
        code: 'USAGE',
        exit: usage,
      },
      {
        args: ['nats-config', '--cluster', 'c', '--replicas', 'a', '--tls-ca', 'ca.pem', '--out', dir],
        code: 'USAGE',
        exit: usage,
      },
      {
        args: ['nats-config', '--cluster', 'c', '--replicas', 'a', '--listen', 'nohost', '--out', dir],
        code: 'USAGE',
        exit: usage,
      },
      {
        args: ['nats-config', '--cluster', 'c', '--replicas', 'a', '--out', join(dir, 'no', 'such')],
        code: 'CONFIG',
        exit: usage,
      },
      {
        args: ['nats-config', '--cluster', 'c', '--replicas', 'a', '--out', taken],
        code: 'CONFIG',
        exit: usage,
      },
      // A data directory that cannot be one: a file, or under a file.
      { args: ['server', '--id', 'a', '--peers', 'a', '--data', cluster], code: 'USAGE', exit: usage },
      {
        args: ['server', '--id', 'a', '--peers', 'a', '--data', join(cluster, 'sub')],
        code: 'USAGE',
        exit: usage,
      },
      // Report paths are checked before a run, not after minutes of it.
      { args: [...simulate, '--json', join(dir, 'no', 'such', 'r.json')], code: 'USAGE', exit: usage },
      { args: [...simulate, '--html', dir], code: 'USAGE', exit: usage },
      { args: [...simulate, '--csv', join(cluster, 'x.csv')], code: 'USAGE', exit: usage },
      { args: [...simulate, '--node-list', cluster], code: 'CONFIG', exit: 1 },
      { args: [...simulate, '--find-min-nodes', 'm5', '--policy', 'dot,fgd'], code: 'CONFIG', exit: 1 },
      { args: ['bench', 'load', '--json', join(dir, 'no', 'such', 'r.json')], code: 'USAGE', exit: usage },
    ];
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('trellis cli - each of at least 25 bad invocations exits non-zero with one error line, no stack, no hang', async () => {
    // Spawns the built CLI once per case, two at a time (2 cores here), each under a bounded timeout, and
    // checks the whole of stderr: exactly one line in the documented shape with the expected code, and the
    // documented exit code. Nothing may appear on stdout.
    expect(cases.length).toBeGreaterThanOrEqual(25);
    const results = new Array<Awaited<ReturnType<typeof runCli>>>(cases.length);
    let next = 0;
    const worker = async (): Promise<void> => {
      for (let i = next++; i < cases.length; i = next++) {
        results[i] = await runCli((cases[i] as Case).args);
      }
    };
    await Promise.all([worker(), worker()]);
    // Every case is checked and every mismatch listed, so one run shows all that is wrong.
    const problems: string[] = [];
    for (const [i, c] of cases.entries()) {
      const r = results[i];
      const lines = (r?.stderr ?? '').split('\n').filter((l) => l !== '');
      const ok =
        r !== undefined &&
        !r.timedOut &&
        r.code === c.exit &&
        !stackFrame.test(r.stderr) &&
        lines.length === 1 &&
        errorLine.exec(lines[0] ?? '')?.[1] === c.code &&
        r.stdout === '';
      if (!ok)
        problems.push(`trellis ${c.args.join(' ')} (want exit ${c.exit}, ${c.code}) → ${JSON.stringify(r)}`);
    }
    expect(problems).toEqual([]);
    // A refused nats-config changed nothing: the existing credentials are as they were, and no config appeared.
    expect(await readFile(join(taken, 'credentials.json'), 'utf8')).toBe('{"keep":"me"}\n');
    expect(existsSync(join(taken, 'nats.conf'))).toBe(false);
    expect(existsSync(join(dir, 'nats.conf'))).toBe(false);
    // Forty node processes on a shared 2-core machine: the bound is on hangs, each run has its own timeout.
  }, 900_000);

  it('trellis cli - --debug and TRELLIS_DEBUG=1 add the stack; without them there is none', async () => {
    // The same bad flag three ways: plain (one line), --debug and the environment variable (stack, then line).
    const plain = await runCli(['demo', '--nodes', 'abc']);
    expect(plain.stderr).not.toMatch(stackFrame);
    for (const r of [
      await runCli(['--debug', 'demo', '--nodes', 'abc']),
      await runCli(['demo', '--nodes', 'abc'], { env: { TRELLIS_DEBUG: '1' } }),
    ]) {
      expect(r.code).toBe(usage);
      expect(r.stderr).toMatch(stackFrame);
      expect(r.stderr.trim().split('\n').at(-1)).toMatch(errorLine);
    }
  });

  it('trellis cli - --version prints the package version and --help exits 0', async () => {
    // The version comes from package.json, so the two cannot drift.
    const pkg = JSON.parse(await readFile(join(import.meta.dirname, '..', '..', 'package.json'), 'utf8')) as {
      version: string;
    };
    const v = await runCli(['--version']);
    expect(v).toMatchObject({ code: 0, stdout: `${pkg.version}\n`, stderr: '' });
    const h = await runCli(['server', '--help']);
    expect(h.code).toBe(0);
    expect(h.stdout).toContain('--connect-timeout');
    expect(h.stderr).toBe('');
  });
});
