/**
 * `trellis server --redis`: the built CLI as an operator runs it. Bad Redis settings (flags, environment,
 * config file) are one error line each before anything starts; a real one-replica `trellis server` with a
 * real redis-server and nats-server serves a request from the stream end to end and publishes its events;
 * a refused ACL login stops the server with one line.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, type RemoteScheduler } from '../../src/api/client.js';
import { exitCodes } from '../../src/cli/errors.js';
import { cliMain } from '../../src/testing/replica-process.js';
import { type RunningServer, startNats, startRedis } from '../../src/testing/servers.js';
import { errorLine, runCli, stackFrame } from '../cli/run-cli.js';
import { nodeSpec, readAll, sandboxSpec, waitFor } from './helpers.js';

describe('gateway cli - bad settings', () => {
  let dir: string;
  beforeAll(async () => {
    expect(existsSync(cliMain), `${cliMain} missing: run npm run build first`).toBe(true);
    dir = await mkdtemp(join(tmpdir(), 'trellis-gw-cli-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('gateway cli - each bad Redis setting is one error line and a usage exit, nothing started', async () => {
    // Every case fails before NATS is dialled (the --nats URL points nowhere, so a case that got that far
    // would wait, then fail UNAVAILABLE instead of the expected code).
    const data = join(dir, 'data');
    const server = ['server', '--id', 'a', '--peers', 'a', '--data', data, '--state', 'scheduler'];
    const config = join(dir, 'server.yaml');
    await writeFile(config, 'redis: "redis://127.0.0.1:1"\nredis-requests: "has space"\n');
    const cases: [string[], NodeJS.ProcessEnv, string][] = [
      [[...server, '--redis', 'http://127.0.0.1:6379'], {}, 'CONFIG'],
      [[...server, '--redis', 'redis://'], {}, 'CONFIG'],
      [[...server, '--redis', 'not a url'], {}, 'CONFIG'],
      [[...server, '--redis', 'redis://127.0.0.1:6379/abc'], {}, 'CONFIG'],
      [[...server, '--redis', 'redis://127.0.0.1:6379?tls=1'], {}, 'CONFIG'],
      [[...server, '--redis', 'redis://127.0.0.1:6379', '--redis-in-flight', '0'], {}, 'USAGE'],
      [[...server, '--redis', 'redis://127.0.0.1:6379', '--redis-claim-idle', 'soon'], {}, 'USAGE'],
      [[...server, '--redis', 'redis://127.0.0.1:6379', '--redis-events-maxlen', '-3'], {}, 'USAGE'],
      [[...server, '--redis', 'redis://127.0.0.1:6379', '--redis-group', 'a b'], {}, 'CONFIG'],
      [[...server, '--redis', 'redis://x:1', '--redis-events', 'trellis:requests'], {}, 'CONFIG'],
      [[...server, '--redis-user', 'someone'], {}, 'USAGE'],
      [
        [...server, '--redis', 'rediss://127.0.0.1:6379', '--redis-tls-ca', join(dir, 'missing.pem')],
        {},
        'CONFIG',
      ],
      [[...server, '--redis', 'rediss://127.0.0.1:6379', '--redis-tls-ca', config], {}, 'CONFIG'],
      [[...server, '--state', 'kv', '--redis', 'redis://127.0.0.1:6379'], {}, 'USAGE'],
      [server, { TRELLIS_REDIS: 'ftp://127.0.0.1' }, 'CONFIG'],
      [server, { TRELLIS_REDIS: 'redis://127.0.0.1:1', TRELLIS_REDIS_IN_FLIGHT: 'many' }, 'CONFIG'],
      [[...server, '--config', config], {}, 'CONFIG'],
    ];
    const runs = new Array<Awaited<ReturnType<typeof runCli>>>(cases.length);
    let next = 0;
    // Two at a time: the machine has 2 cores.
    const worker = async (): Promise<void> => {
      for (let i = next++; i < cases.length; i = next++) {
        const [args, env] = cases[i] as (typeof cases)[number];
        runs[i] = await runCli([...args, '--nats', 'nats://127.0.0.1:1', '--connect-timeout', '60s'], {
          env,
        });
      }
    };
    await Promise.all([worker(), worker()]);
    const problems: string[] = [];
    for (const [i, [args, env, code]] of cases.entries()) {
      const r = runs[i] as Awaited<ReturnType<typeof runCli>>;
      const lines = r.stderr.split('\n').filter((l) => l !== '');
      const ok =
        !r.timedOut &&
        r.code === exitCodes.usage &&
        !stackFrame.test(r.stderr) &&
        lines.length === 1 &&
        errorLine.exec(lines[0] ?? '')?.[1] === code &&
        !r.stderr.includes('secret');
      if (!ok)
        problems.push(
          `${args.slice(8).join(' ')} ${JSON.stringify(env)} (want ${code}) → ${JSON.stringify(r)}`,
        );
    }
    expect(problems).toEqual([]);
  }, 300_000);
});

describe('gateway cli - trellis server --redis', () => {
  let nats: RunningServer;
  let redis: RunningServer;
  let dir: string;
  let client: Redis;
  beforeAll(async () => {
    nats = await startNats();
    redis = await startRedis({
      // The narrow user docs/operations.md recommends, on this test's key prefixes.
      aclLines: [
        'user default off',
        'user trellis on >s3cret-pw ~g1:* ~g2:* +@stream +type +eval +evalsha +ping +info +client',
      ],
    });
    client = new Redis(redis.url, { username: 'trellis', password: 's3cret-pw' });
    dir = await mkdtemp(join(tmpdir(), 'trellis-gw-server-'));
  });
  afterAll(async () => {
    client.disconnect();
    await redis.stop();
    await nats.stop();
    await rm(dir, { recursive: true, force: true });
  });

  const serve = (id: string, env: NodeJS.ProcessEnv): ChildProcess =>
    spawn(
      process.execPath,
      [
        cliMain,
        'server',
        '--id',
        id,
        '--peers',
        id,
        '--data',
        join(dir, id),
        '--state',
        'scheduler',
        '--nats',
        nats.url,
        '--cluster',
        `c${id}`,
        '--tick-ms',
        '20',
        '--redis',
        redis.url,
        '--redis-user',
        'trellis',
        '--redis-requests',
        `${id}:requests`,
        '--redis-events',
        `${id}:events`,
      ],
      { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, TRELLIS_LOG_LEVEL: 'warn', ...env } },
    );

  it('gateway cli - a replica started with --redis (ACL user, password from the environment) serves the request stream', async () => {
    // One-replica group: it leads at once, so its gateway reads the stream; a create sent with XADD comes
    // back placed on the node registered over NATS, and the events stream carries the placement.
    const child = serve('g1', { TRELLIS_REDIS_PASSWORD: 's3cret-pw' });
    let api: RemoteScheduler | undefined;
    try {
      api = await connect({ servers: nats.url, cluster: 'cg1', timeoutMs: 30_000 });
      await api.registerNode(nodeSpec('n1'), { requestId: 'node-1' });
      await client.xadd(
        'g1:requests',
        '*',
        'id',
        'r1',
        'type',
        'create',
        'reply',
        'g1:replies',
        'spec',
        JSON.stringify(sandboxSpec),
      );
      const replies = await waitFor(
        'the reply',
        () => readAll(client, 'g1:replies'),
        (r) => r.length === 1,
      );
      expect(replies[0]?.[1]).toMatchObject({ request: 'r1', status: 'placed', node: 'n1' });
      const events = await waitFor(
        'the placement event',
        () => readAll(client, 'g1:events'),
        (e) => e.some(([, f]) => f.kind === 'sandbox'),
      );
      expect(events.map(([, f]) => f.kind)).toEqual(['node', 'sandbox']);
      expect(events[1]?.[0]).toMatch(/^\d+-0$/);
    } finally {
      await api?.close();
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
    }
  }, 120_000);

  it('gateway cli - a refused Redis login stops the server with one error line', async () => {
    const child = serve('g2', { TRELLIS_REDIS_PASSWORD: 'wrong-secret' });
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => {
      stderr += d.toString('utf8');
    });
    const code = await new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
    const lines = stderr.split('\n').filter((l) => l !== '' && !l.startsWith('{'));
    expect(code).toBe(exitCodes.usage);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(errorLine);
    expect(lines[0]).toContain('redis refused the login');
    expect(stderr).not.toContain('wrong-secret');
  }, 120_000);
});
