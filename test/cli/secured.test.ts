import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { exitCodes } from '../../src/cli/errors.js';
import type { NatsAuthPlan } from '../../src/nats/config.js';
import { cliMain, spawnReplica } from '../../src/testing/replica-process.js';
import { findBinary, freePort } from '../../src/testing/servers.js';
import { until as poll, type UntilCondition } from '../helpers/until.js';
import { errorLine, runCli } from './run-cli.js';

const cluster = 'sec';
const ids = ['r1', 'r2', 'r3'];

/** Waits until `f` resolves truthy, polling; throws after `timeoutMs`. */
const until = (what: string, f: UntilCondition<boolean>, timeoutMs = 30_000): Promise<boolean> =>
  poll(f, what, { timeoutMs, pollMs: 100 });

describe('trellis nats-config - the secured setup works end to end', () => {
  let dir: string;
  let url: string;
  let nats: ChildProcess;
  let plan: NatsAuthPlan;
  const replicas: ChildProcess[] = [];
  const creds = (): string => join(dir, 'credentials.json');

  beforeAll(async () => {
    expect(existsSync(cliMain), `${cliMain} missing: run npm run build first`).toBe(true);
    dir = await mkdtemp(join(tmpdir(), 'trellis-secured-'));
    const port = await freePort();
    url = `nats://127.0.0.1:${port}`;
    // The config is the one the CLI writes, used as it is: nats-server runs on the generated file.
    const made = await runCli([
      'nats-config',
      '--cluster',
      cluster,
      '--replicas',
      ids.join(','),
      '--clients',
      'api',
      '--listen',
      `127.0.0.1:${port}`,
      '--out',
      dir,
    ]);
    expect(made.code, made.stderr).toBe(0);
    plan = JSON.parse(await readFile(creds(), 'utf8')) as NatsAuthPlan;
    nats = spawn(findBinary('nats-server', 'nats-server'), ['-c', join(dir, 'nats.conf')], {
      stdio: 'ignore',
    });
    for (const id of ids) {
      replicas.push(
        spawnReplica({ id, peers: ids, natsUrl: url, root: dir, cluster, extraArgs: ['--creds', creds()] }),
      );
    }
  });
  afterAll(async () => {
    for (const p of replicas) p.kill('SIGKILL');
    nats?.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  });

  const client = (args: string[], env: NodeJS.ProcessEnv = {}) =>
    runCli([...args, '--nats', url, '--cluster', cluster, '--connect-timeout', '10s'], { env });

  it('trellis nats-config - kv and members work with the generated client credentials; every replica is reachable', async () => {
    // Replicas connect as replica-<id> (picked from the file by their id); the CLI client as the file's only
    // client. `members list` asks every replica on its own subject, which the client role must be allowed.
    await until('a write through the secured group', async () => {
      const r = await client(['kv', 'put', 'greeting', 'hello', '--creds', creds()]);
      return r.code === 0;
    });
    const got = await client(['kv', 'get', 'greeting'], { TRELLIS_NATS_CREDS: creds() });
    expect(got.code, got.stderr).toBe(0);
    expect(JSON.parse(got.stdout)).toMatchObject({ ok: true, value: 'hello' });
    const api = plan.users.find((u) => u.user === 'client-api');
    const listed = await client(['members', 'list', '--user', 'client-api'], {
      TRELLIS_NATS_PASSWORD: api?.password ?? '',
    });
    expect(listed.code, listed.stderr).toBe(0);
    const out = JSON.parse(listed.stdout) as {
      voters: string[];
      replicas: { id: string; unreachable?: boolean }[];
    };
    expect(out.voters).toEqual(ids);
    expect(out.replicas.map((r) => r.id).sort()).toEqual(ids);
    expect(out.replicas.filter((r) => r.unreachable === true)).toEqual([]);
    // Leadership can be moved by the client role too (it goes through the leader-routing subject).
    const target = ids.find((id) => id !== (JSON.parse(listed.stdout) as { leader: string }).leader) ?? '';
    const moved = await client(['members', 'transfer', target, '--creds', creds()]);
    expect(moved.code, moved.stderr).toBe(0);
  });

  it('trellis nats-config - wrong or missing credentials are one clear line, not a hang', async () => {
    // A wrong password is refused by nats-server at once (no retrying until the timeout); no credentials at
    // all likewise; a worker's credentials may connect but not call the API, which ends as "unavailable".
    const wrong = await client(['kv', 'get', 'greeting', '--user', 'client-api', '--password', 'nope']);
    expect(wrong.code).toBe(exitCodes.usage);
    expect(wrong.stderr.trim()).toMatch(errorLine);
    expect(wrong.stderr).toContain('(NATS_AUTH)');
    const none = await client(['kv', 'get', 'greeting']);
    expect(none.code).toBe(exitCodes.usage);
    expect(none.stderr).toContain('(NATS_AUTH)');
    const twoClients = await client(['kv', 'get', 'greeting', '--creds', creds(), '--user', 'client-nobody']);
    expect(twoClients.code).toBe(exitCodes.usage);
    expect(twoClients.stderr.trim()).toMatch(errorLine);
  });

  it('trellis nats-config - refuses to overwrite the credentials without --force, and replaces them with it', async () => {
    // The running setup's files stay as they were after a refused run; --force writes new passwords.
    const before = await readFile(creds(), 'utf8');
    const again = await runCli(['nats-config', '--cluster', cluster, '--replicas', 'x', '--out', dir]);
    expect(again.code).toBe(exitCodes.usage);
    expect(again.stderr).toMatch(/--force/);
    expect(await readFile(creds(), 'utf8')).toBe(before);
    const forced = await runCli([
      'nats-config',
      '--cluster',
      'other',
      '--replicas',
      'x',
      '--out',
      dir,
      '--force',
    ]);
    expect(forced.code, forced.stderr).toBe(0);
    expect(await readFile(creds(), 'utf8')).not.toBe(before);
  });
});
