/**
 * The cluster CLI end to end: the built `trellis` run as a child process against a real nats-server secured
 * with the configuration `trellis nats-config` generates (a client user for the CLI, a replica user for each
 * server), and a group of three `trellis server --state scheduler` processes that connect with those
 * replica users from the same credentials file.
 */

import type { ChildProcess } from 'node:child_process';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, type RemoteScheduler } from '../../src/api/client.js';
import { authorizationBlock, type NatsAuthPlan, planNatsUsers } from '../../src/nats/config.js';
import { cliMain, spawnReplica } from '../../src/testing/replica-process.js';
import { type RunningServer, startNats } from '../../src/testing/servers.js';

interface Run {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

const cluster = 'ops';
/** Each CLI run is a new node process (seconds on a loaded 2-core machine); a test runs up to 30. */
const cliTestTimeoutMs = 300_000;

describe('trellis cluster CLI - against a secured nats-server', () => {
  let nats: RunningServer;
  let plan: NatsAuthPlan;
  let dir: string;
  let creds: string;
  /** The test's own view of the cluster, as an API client (the CLI user's credentials). */
  let scheduler: RemoteScheduler;
  const replicas: ChildProcess[] = [];

  /** Runs the built CLI with the connection flags (unless `bare`) and returns its exit code and output. */
  const trellis = (
    args: readonly string[],
    opts: { bare?: boolean; env?: NodeJS.ProcessEnv } = {},
  ): Promise<Run> => {
    const conn = opts.bare === true ? [] : ['--nats', nats.url, '--cluster', cluster, '--creds', creds];
    return new Promise((resolve) => {
      execFile(
        process.execPath,
        [cliMain, ...args, ...conn],
        { env: { ...process.env, ...opts.env }, timeout: 30_000 },
        (err, stdout, stderr) => {
          const code = err === null ? 0 : typeof err.code === 'number' ? err.code : -1;
          resolve({ code, stdout, stderr });
        },
      );
    });
  };
  const ok = async (args: readonly string[]): Promise<string> => {
    const r = await trellis(args);
    expect(r, `trellis ${args.join(' ')}`).toMatchObject({ code: 0, stderr: '' });
    return r.stdout;
  };
  const json = async (args: readonly string[]): Promise<unknown> => JSON.parse(await ok([...args, '--json']));

  beforeAll(async () => {
    expect(existsSync(cliMain), `${cliMain} missing: run npm run build first`).toBe(true);
    plan = planNatsUsers(cluster, ['r1', 'r2', 'r3'], ['n1'], ['cli']);
    nats = await startNats({ extraConfig: authorizationBlock(plan) });
    dir = await mkdtemp(join(tmpdir(), 'trellis-ops-'));
    creds = join(dir, 'credentials.json');
    await writeFile(creds, JSON.stringify(plan), { mode: 0o600 });
    for (const id of ['r1', 'r2', 'r3']) {
      // Each replica picks its own user (replica-<id>) from the credentials file.
      replicas.push(
        spawnReplica({
          id,
          peers: ['r1', 'r2', 'r3'],
          natsUrl: nats.url,
          root: dir,
          cluster,
          state: 'scheduler',
          extraArgs: ['--creds', creds],
        }),
      );
    }
    const cli = plan.users.find((u) => u.user === 'client-cli');
    scheduler = await connect({
      servers: nats.url,
      cluster,
      credentials: { user: 'client-cli', pass: cli?.password ?? '' },
      timeoutMs: 30_000,
    });
    await scheduler.stats(); // answers once a leader is elected
  }, cliTestTimeoutMs);
  afterAll(async () => {
    await scheduler?.close();
    for (const p of replicas) p.kill('SIGKILL');
    await nats?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it(
    'trellis cluster CLI - registers nodes, creates, gets, lists, watches and terminates',
    async () => {
      expect(
        await ok([
          'node',
          'register',
          'n1',
          '--cpu',
          '4000',
          '--memory',
          '8192',
          '--disk',
          '100000',
          '--label',
          'zone=a',
        ]),
      ).toBe('registered node n1\n');
      await ok([
        'node',
        'register',
        'n2',
        '--cpu',
        '2000',
        '--memory',
        '4096',
        '--disk',
        '50000',
        '--gpu',
        'a100x2',
      ]);
      const nodes = (await json(['nodes'])) as { id: string; state: string; labels: object; gpu?: object }[];
      expect(nodes.map((n) => [n.id, n.state])).toEqual([
        ['n1', 'ready'],
        ['n2', 'ready'],
      ]);
      expect(nodes[0]?.labels).toEqual({ zone: 'a' });
      expect(nodes[1]?.gpu).toMatchObject({ model: 'a100', count: 2 });

      const createArgs = ['create', '--tenant', 't1', '--cpu', '500', '--memory', '512', '--disk', '1024'];
      const created = (await json([
        ...createArgs,
        '--image',
        'img',
        '--label',
        'team=x',
        '--request-id',
        'cli-1',
      ])) as {
        id: string;
        state: string;
        node: string;
      };
      expect(created.state).toBe('placed');
      expect(['n1', 'n2']).toContain(created.node);
      // The same request id again: the same sandbox, not a second one.
      const again = (await json([
        ...createArgs,
        '--image',
        'img',
        '--label',
        'team=x',
        '--request-id',
        'cli-1',
      ])) as {
        id: string;
      };
      expect(again.id).toBe(created.id);
      const table = await ok(createArgs);
      const row = /^ID\s+NODE\s+STATE\n(\S+)\s+n[12]\s+placed\n$/.exec(table);
      expect(row, table).not.toBeNull();
      const second = row?.[1] as string;

      expect(await json(['get', created.id])).toMatchObject({
        id: created.id,
        state: 'placed',
        node: created.node,
        tenant: 't1',
      });
      expect(await ok(['get', created.id])).toMatch(new RegExp(`ID\\s+${created.id}\\n`));
      const listed = (await json(['ls', '--tenant', 't1'])) as { id: string }[];
      expect(listed.length).toBe(2);
      expect(await json(['ls', '--state', 'running'])).toEqual([]);
      expect(await ok(['ls', '--node', created.node])).toMatch(/^ID\s+TENANT\s+STATE\s+NODE/);

      const status = (await json(['status'])) as Record<string, unknown>;
      expect(status).toMatchObject({
        cluster,
        nodes: { total: 2, ready: 2 },
        sandboxes: 2,
        replicas: ['r1', 'r2', 'r3'],
      });
      expect(['r1', 'r2', 'r3']).toContain(status.leader);
      expect(await ok(['status'])).toMatch(new RegExp(`Leader\\s+${String(status.leader)}\\n`));

      const watched = await ok(['watch', '--from', '1', '--count', '3', '--json']);
      const events = watched
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { kind: string; index: number });
      expect(events.map((e) => e.kind)).toEqual(['node', 'node', 'sandbox']);
      expect(await ok(['watch', '--from', '1', '--count', '1'])).toMatch(/^\d+ {2}node n1 {2}registered/);

      expect(await ok(['terminate', created.id])).toBe(`terminated ${created.id}\n`);
      expect(((await json(['ls', '--tenant', 't1'])) as { id: string }[]).map((s) => s.id)).toEqual([second]);
      await ok(['terminate', second, '--request-id', 'term-2']);
      // No room before the command's deadline: the sandbox exists, pending, and the answer says why.
      const bigArgs = ['create', '--tenant', 't1', '--cpu', '999999', '--memory', '1', '--disk', '1'];
      const big = await ok([...bigArgs, '--request-id', 'big-1', '--timeout', '2s']);
      expect(big).toMatch(/^ID\s+NODE\s+STATE\s+REASON\nbig-1\s+-\s+pending\s+\S.*\n$/);
      expect(await json(['get', 'big-1'])).toMatchObject({ id: 'big-1', state: 'pending', node: null });
      await ok(['terminate', 'big-1']);

      await ok(['node', 'cordon', 'n2']);
      expect(((await json(['nodes'])) as { state: string }[])[1]?.state).toBe('cordoned');
      await ok(['node', 'drain', 'n2']);
      await ok(['node', 'uncordon', 'n2']);
      expect(await ok(['node', 'remove', 'n2'])).toBe('removed node n2\n');
      expect(((await json(['nodes'])) as unknown[]).length).toBe(1);
    },
    cliTestTimeoutMs,
  );

  it(
    'trellis cluster CLI - failures are one line with the error code and a non-zero exit, and change nothing',
    async () => {
      await scheduler.create({ tenant: 't9', resources: { cpu: 1, memory: 1, disk: 1 } }); // n1 is busy
      // Refused commands go through the log too (a rejection is committed), so compare state, not indexes.
      const before = JSON.stringify([await scheduler.list(), await scheduler.nodes()]);
      const unknown = await trellis(['terminate', 'sb-missing']);
      expect(unknown.code).toBe(1);
      expect(unknown.stderr).toMatch(/^error: .*\(SCHED_UNKNOWN_SANDBOX\)\n$/);
      expect(unknown.stdout).toBe('');
      const missing = await trellis(['get', 'sb-missing']);
      expect(missing.stderr).toMatch(
        /^error: sandbox sb-missing does not exist \(SCHED_UNKNOWN_SANDBOX\)\n$/,
      );
      const invalid = await trellis([
        'create',
        '--tenant',
        'no spaces allowed',
        '--cpu',
        '1',
        '--memory',
        '1',
        '--disk',
        '1',
      ]);
      expect(invalid).toMatchObject({ code: 2 });
      expect(invalid.stderr).toMatch(/^error: spec\.tenant: .*\(VALIDATION\)\n$/);
      const badFlag = await trellis([
        'create',
        '--tenant',
        't',
        '--cpu',
        '-5',
        '--memory',
        '1',
        '--disk',
        '1',
      ]);
      expect(badFlag.code).toBe(2);
      expect(badFlag.stderr).toMatch(/\(USAGE\)\n$/);
      const badState = await trellis(['ls', '--state', 'sideways']);
      expect(badState.stderr).toMatch(/\(USAGE\)\n$/);
      const badPassword = await trellis(
        ['ls', '--nats', nats.url, '--cluster', cluster, '--user', 'client-cli', '--password', 'wrong'],
        { bare: true },
      );
      expect(badPassword.code).toBe(2);
      expect(badPassword.stderr).toMatch(/\(NATS_AUTH\)\n$/);
      const busy = await trellis(['node', 'remove', 'n1']);
      expect(busy.stderr).toMatch(/\(PLACEMENT_NODE_BUSY\)\n$/);
      for (const r of [unknown, missing, invalid, badFlag, badState, badPassword, busy]) {
        expect(r.stderr.split('\n').length, r.stderr).toBe(2);
        expect(r.stderr).not.toMatch(/\n\s+at /);
      }
      expect(JSON.stringify([await scheduler.list(), await scheduler.nodes()])).toBe(before);
    },
    cliTestTimeoutMs,
  );

  it('trellis cluster CLI - the connection comes from TRELLIS_NATS, TRELLIS_CLUSTER and TRELLIS_NATS_CREDS', async () => {
    const r = await trellis(['nodes', '--json'], {
      bare: true,
      env: { TRELLIS_NATS: nats.url, TRELLIS_CLUSTER: cluster, TRELLIS_NATS_CREDS: creds },
    });
    expect(r.code, r.stderr).toBe(0);
    expect((JSON.parse(r.stdout) as { id: string }[]).map((n) => n.id)).toEqual(['n1']);
  });
});
