/**
 * `trellis nats-config --cluster-listen --routes` for a routed NATS cluster: the one generated nats.conf runs
 * three nats-servers (each given its own client and route port on the command line, as separate machines
 * would not need), three scheduler replicas connect to different servers with their own credentials, and
 * the CLI, as the API client on a third server, registers a node, creates and lists across the routes.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { exitCodes } from '../../src/cli/errors.js';
import { cliMain, spawnReplica } from '../../src/testing/replica-process.js';
import { findBinary, freePort } from '../../src/testing/servers.js';
import { errorLine, runCli } from './run-cli.js';

const cluster = 'routedsec';
const ids = ['r1', 'r2', 'r3'];

describe('trellis nats-config - a routed 3-server NATS cluster with the generated config', () => {
  let dir: string;
  const clientPorts: number[] = [];
  const natsServers: ChildProcess[] = [];
  const replicas: ChildProcess[] = [];
  const creds = (): string => join(dir, 'credentials.json');
  const url = (i: number): string => `nats://127.0.0.1:${clientPorts[i]}`;

  beforeAll(async () => {
    expect(existsSync(cliMain), `${cliMain} missing: run npm run build first`).toBe(true);
    dir = await mkdtemp(join(tmpdir(), 'trellis-routedsec-'));
    const routePorts: number[] = [];
    for (let i = 0; i < 3; i++) {
      clientPorts.push(await freePort());
      routePorts.push(await freePort());
    }
    const made = await runCli([
      'nats-config',
      '--cluster',
      cluster,
      '--replicas',
      ids.join(','),
      '--clients',
      'api',
      '--cluster-listen',
      `127.0.0.1:${routePorts[0]}`,
      '--routes',
      routePorts.map((p) => `127.0.0.1:${p}`).join(','),
      '--out',
      dir,
    ]);
    expect(made.code, made.stderr).toBe(0);
    expect(await readFile(join(dir, 'nats.conf'), 'utf8')).toContain('cluster {');
    for (let i = 0; i < 3; i++) {
      const args = ['-c', join(dir, 'nats.conf'), '-a', '127.0.0.1', '-p', String(clientPorts[i])];
      args.push('--cluster', `nats://127.0.0.1:${routePorts[i]}`);
      natsServers.push(spawn(findBinary('nats-server', 'nats-server'), args, { stdio: 'ignore' }));
    }
    ids.forEach((id, i) => {
      const o = { id, peers: ids, natsUrl: url(i), root: dir, cluster, state: 'scheduler' as const };
      replicas.push(spawnReplica({ ...o, extraArgs: ['--creds', creds()] }));
    });
  });
  afterAll(async () => {
    for (const p of [...replicas, ...natsServers]) p.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  });

  it('trellis nats-config - replicas on three routed servers serve the CLI on any of them', async () => {
    const cli = (args: string[]) =>
      runCli([...args, '--nats', url(2), '--cluster', cluster, '--creds', creds(), '--timeout', '30s']);
    const reg = await cli(['node', 'register', 'n1', '--cpu', '4000', '--memory', '4096', '--disk', '10000']);
    expect(reg.code, reg.stderr).toBe(0);
    const made = await cli([
      'create',
      '--tenant',
      't',
      '--cpu',
      '500',
      '--memory',
      '256',
      '--disk',
      '100',
      '--json',
    ]);
    expect(made.code, made.stderr).toBe(0);
    const sandbox = JSON.parse(made.stdout) as { id: string; node: string };
    expect(sandbox.node).toBe('n1');
    const listed = await cli(['ls', '--json']);
    expect(listed.code, listed.stderr).toBe(0);
    expect((JSON.parse(listed.stdout) as { id: string }[]).map((s) => s.id)).toEqual([sandbox.id]);
  });

  it('trellis nats-config - half a cluster block is a usage error that writes nothing', async () => {
    const out = await mkdtemp(join(tmpdir(), 'trellis-routedsec-half-'));
    try {
      const r = await runCli([
        'nats-config',
        '--cluster',
        cluster,
        '--replicas',
        'r1',
        '--cluster-listen',
        '127.0.0.1:6222',
        '--out',
        out,
      ]);
      expect(r.code).toBe(exitCodes.usage);
      expect(r.stderr.trim()).toMatch(errorLine);
      expect(existsSync(join(out, 'nats.conf'))).toBe(false);
    } finally {
      await rm(out, { recursive: true, force: true });
    }
  });
});
