/**
 * A 3-member etcd on loopback for comparison benchmarks, and a put client over etcd's v3 HTTP/JSON gateway
 * (`POST /v3/kv/put`, base64 key and value) on node:http with keep-alive agents: no npm dependency.
 *
 * The benchmark never installs etcd: `etcdBinary()` returns undefined when it is missing (Debian package
 * `etcd-server`). Members run with etcd's defaults apart from addresses, data directories and log level, so
 * the WAL is fsynced before a write is acknowledged (nothing like 3.5's `--unsafe-no-fsync` is passed).
 */
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { Agent, request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort, loopbackHost } from '../../src/testing/servers.js';
import { assertRunning, type Child, spawnChild, stopChild } from './children.js';

/** The etcd binary on PATH (or Debian's sbin directories), or undefined when it is not installed. */
export function etcdBinary(): string | undefined {
  const path = `${process.env.PATH ?? ''}:/usr/sbin:/usr/local/sbin:/sbin`;
  try {
    return execFileSync('sh', ['-c', 'command -v etcd'], { env: { ...process.env, PATH: path } })
      .toString()
      .trim();
  } catch {
    return undefined;
  }
}

export function etcdVersion(bin: string): string {
  const out = execFileSync(bin, ['--version']).toString();
  return /etcd Version: (\S+)/.exec(out)?.[1] ?? 'unknown';
}

export interface EtcdCluster {
  /** Client URLs, one per member. */
  readonly clientUrls: readonly string[];
  readonly members: readonly Child[];
  stop(): Promise<void>;
}

/** Starts `size` etcd members on free loopback ports, each with its own data directory, and waits for health. */
export async function startEtcd(bin: string, size = 3): Promise<EtcdCluster> {
  const root = await mkdtemp(join(tmpdir(), 'trellis-bench-etcd-'));
  const names = Array.from({ length: size }, (_, i) => `m${i}`);
  const clientPorts: number[] = [];
  const peerPorts: number[] = [];
  for (let i = 0; i < size; i++) {
    clientPorts.push(await freePort());
    peerPorts.push(await freePort());
  }
  const url = (port: number | undefined): string => `http://${loopbackHost}:${port}`;
  const initialCluster = names.map((n, i) => `${n}=${url(peerPorts[i])}`).join(',');
  const members: Child[] = [];
  const stop = async (): Promise<void> => {
    await Promise.all(members.map((m) => stopChild(m)));
    await rm(root, { recursive: true, force: true });
  };
  try {
    names.forEach((name, i) => {
      const client = url(clientPorts[i]);
      const peer = url(peerPorts[i]);
      members.push(
        spawnChild(`etcd ${name}`, bin, [
          '--name',
          name,
          '--data-dir',
          join(root, name),
          '--listen-client-urls',
          client,
          '--advertise-client-urls',
          client,
          '--listen-peer-urls',
          peer,
          '--initial-advertise-peer-urls',
          peer,
          '--initial-cluster',
          initialCluster,
          '--initial-cluster-state',
          'new',
          '--initial-cluster-token',
          `bench-${process.pid}`,
          '--log-level',
          'warn',
          '--logger',
          'zap',
        ]),
      );
    });
    const clientUrls = clientPorts.map((p) => url(p));
    const deadline = Date.now() + 30_000;
    for (const [i, base] of clientUrls.entries()) {
      for (;;) {
        const member = members[i] as Child;
        assertRunning(member);
        const health = await httpCall(base, 'GET', '/health', undefined).catch(() => undefined);
        if (health?.status === 200 && health.body.includes('"true"')) break;
        if (Date.now() > deadline) throw new Error(`etcd member ${i} not healthy within 30 s`);
        await sleep(100);
      }
    }
    return { clientUrls, members, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

const httpAgents = new Map<string, Agent>();

function httpCall(
  base: string,
  method: 'GET' | 'POST',
  path: string,
  body: string | undefined,
  agent?: Agent,
  timeoutMs = 5_000,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      `${base}${path}`,
      {
        method,
        ...(agent === undefined ? {} : { agent }),
        headers: body === undefined ? {} : { 'content-type': 'application/json' },
        timeout: timeoutMs,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`${method} ${path} timed out`)));
    req.on('error', reject);
    req.end(body);
  });
}

/**
 * A put client for one member: keep-alive connections, up to `sockets` at once (one per concurrent client,
 * as HTTP/1.1 carries one request at a time per connection). Resolves true when etcd acknowledged the put.
 */
export function etcdPutter(base: string, sockets: number): (key: string, value: string) => Promise<boolean> {
  let agent = httpAgents.get(`${base}/${sockets}`);
  if (agent === undefined) {
    agent = new Agent({ keepAlive: true, maxSockets: sockets, maxFreeSockets: sockets });
    httpAgents.set(`${base}/${sockets}`, agent);
  }
  const a = agent;
  return async (key, value) => {
    const body = JSON.stringify({
      key: Buffer.from(key).toString('base64'),
      value: Buffer.from(value).toString('base64'),
    });
    try {
      const r = await httpCall(base, 'POST', '/v3/kv/put', body, a);
      return r.status === 200 && r.body.includes('"header"');
    } catch {
      return false;
    }
  };
}

/** Closes the keep-alive connections of every putter. */
export function closeEtcdPutters(): void {
  for (const a of httpAgents.values()) a.destroy();
  httpAgents.clear();
}

/**
 * The client URL of the member that leads now, from each member's `/v3/maintenance/status` (`leader` is the
 * leader's member id, `header.member_id` the answering member's). Undefined when no member names a leader.
 */
export async function etcdLeaderUrl(clientUrls: readonly string[]): Promise<string | undefined> {
  const statuses = await Promise.all(
    clientUrls.map(async (url) => {
      try {
        const r = await httpCall(url, 'POST', '/v3/maintenance/status', '{}');
        const s = JSON.parse(r.body) as { leader?: string; header?: { member_id?: string } };
        return { url, leader: s.leader, self: s.header?.member_id };
      } catch {
        return { url, leader: undefined, self: undefined };
      }
    }),
  );
  const leader = statuses.find((s) => s.leader !== undefined)?.leader;
  return statuses.find((s) => s.self !== undefined && s.self === leader)?.url;
}
