/**
 * The gateway over TLS: a real redis-server serving only `rediss://` with a certificate from a CA made here
 * (openssl, in a temp dir). With that CA the gateway serves a request; without it (system CAs only) it
 * refuses to start with a ConfigError, at once rather than after retrying.
 */
import { execFileSync } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createScheduler, type Scheduler } from '../../scheduler/scheduler.js';
import { gatewayConfig } from '../../src/gateway/config.js';
import { RedisGateway } from '../../src/gateway/gateway.js';
import { ConfigError } from '../../src/lib/errors.js';
import { findBinary, type RunningServer, startRedis } from '../../src/testing/servers.js';
import { nodeSpec, readAll, sandboxSpec, waitFor } from './helpers.js';

const alwaysLeader = { id: 'r0', leading: () => true, onLeaderChange: () => () => {} };

/** A CA and a server certificate for 127.0.0.1 signed by it; returns the file paths. */
async function makeCertificates(dir: string): Promise<{ ca: string; cert: string; key: string }> {
  const openssl = findBinary('openssl', 'openssl');
  const f = (name: string) => join(dir, name);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  const run = (args: string[]) => execFileSync(openssl, args, { stdio: 'ignore' });
  run([
    'req',
    '-x509',
    ...ec,
    '-keyout',
    f('ca.key'),
    '-out',
    f('ca.pem'),
    '-days',
    '1',
    '-subj',
    '/CN=trellis-test-ca',
  ]);
  run(['req', ...ec, '-keyout', f('server.key'), '-out', f('server.csr'), '-subj', '/CN=127.0.0.1']);
  await writeFile(f('ext.cnf'), 'subjectAltName=IP:127.0.0.1\n');
  run(
    [
      'x509',
      '-req',
      '-in',
      f('server.csr'),
      '-CA',
      f('ca.pem'),
      '-CAkey',
      f('ca.key'),
      '-CAcreateserial',
    ].concat(['-out', f('server.pem'), '-days', '1', '-extfile', f('ext.cnf')]),
  );
  return { ca: f('ca.pem'), cert: f('server.pem'), key: f('server.key') };
}

describe('gateway tls', () => {
  let dir: string;
  let redis: RunningServer;
  let ca: string;
  let scheduler: Scheduler;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'trellis-gw-tls-'));
    const certs = await makeCertificates(dir);
    ca = await readFile(certs.ca, 'utf8');
    redis = await startRedis({ tls: { certFile: certs.cert, keyFile: certs.key } });
    scheduler = createScheduler();
    await scheduler.registerNode(nodeSpec('n1'), { requestId: 'node-tls' });
  });
  afterAll(async () => {
    await scheduler.close();
    await redis.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('gateway tls - over rediss:// with the CA given, requests are served', async () => {
    expect(redis.url.startsWith('rediss://')).toBe(true);
    const gateway = await RedisGateway.start({
      config: gatewayConfig({ url: redis.url, tlsCa: ca, readBlockMs: 100 }),
      api: scheduler,
      replica: alwaysLeader,
    });
    const client = new Redis(redis.url, { tls: { ca } });
    try {
      await client.xadd(
        'trellis:requests',
        '*',
        'id',
        'tls-1',
        'type',
        'create',
        'reply',
        'tls:r',
        'spec',
        JSON.stringify(sandboxSpec),
      );
      const replies = await waitFor(
        'the reply',
        () => readAll(client, 'tls:r'),
        (r) => r.length === 1,
      );
      expect(replies[0]?.[1]).toMatchObject({ request: 'tls-1', status: 'placed', node: 'n1' });
    } finally {
      client.disconnect();
      await gateway.close();
    }
  });

  it('gateway tls - a certificate the gateway cannot verify stops it at start with ConfigError', async () => {
    const start = RedisGateway.start({
      config: gatewayConfig({ url: redis.url }),
      api: scheduler,
      replica: alwaysLeader,
      startTimeoutMs: 30_000,
    });
    await expect(start).rejects.toThrow(ConfigError);
    await expect(start).rejects.toThrow(/not trusted/);
  });
});
