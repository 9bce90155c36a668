/**
 * `trellis nats-config`: writes a least-privilege nats-server configuration for a cluster and a credentials
 * file with one user per replica, node worker and API client (see src/nats/config.ts).
 *
 * It refuses what would leave a broken or weakened setup: duplicate ids (two users with one name), half a
 * TLS pair, and replacing existing credentials without `--force` (every running process would lose access).
 */
import { existsSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import { ConfigError } from '../lib/errors.js';
import { natsServerConfig, planNatsUsers } from '../nats/config.js';
import { commaList, hostPort } from './args.js';
import { UsageError } from './errors.js';

interface NatsConfigOptions {
  cluster: string;
  replicas: string[];
  nodes: string[];
  clients: string[];
  listen: string;
  tlsCert?: string;
  tlsKey?: string;
  tlsCa?: string;
  out: string;
  force?: boolean;
  clusterListen?: string;
  routes?: string[];
}

/** The TLS block's files, or undefined without TLS; half a pair is refused rather than silently dropped. */
function tlsFiles(o: NatsConfigOptions): { cert: string; key: string; ca?: string } | undefined {
  if (o.tlsCert === undefined && o.tlsKey === undefined) {
    if (o.tlsCa !== undefined) throw new UsageError('--tls-ca needs --tls-cert and --tls-key');
    return undefined;
  }
  if (o.tlsCert === undefined || o.tlsKey === undefined) {
    throw new UsageError('TLS needs both --tls-cert and --tls-key, not one of them');
  }
  return { cert: o.tlsCert, key: o.tlsKey, ...(o.tlsCa === undefined ? {} : { ca: o.tlsCa }) };
}

/** Writes `text` to `file` with mode 0600 through a temporary file, so a replaced file keeps no old mode. */
function writePrivate(file: string, text: string): void {
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, text, { mode: 0o600 });
  renameSync(tmp, file);
}

function run(o: NatsConfigOptions): void {
  const tls = tlsFiles(o);
  if (!existsSync(o.out) || !statSync(o.out).isDirectory()) {
    throw new ConfigError(`--out ${o.out} is not a directory`);
  }
  const confPath = join(o.out, 'nats.conf');
  const credsPath = join(o.out, 'credentials.json');
  const existing = [confPath, credsPath].filter((f) => existsSync(f));
  if (existing.length > 0 && o.force !== true) {
    throw new ConfigError(
      `${existing.join(' and ')} already exist; --force replaces them (the old passwords stop working)`,
    );
  }
  if ((o.clusterListen === undefined) !== (o.routes === undefined)) {
    throw new UsageError('a NATS cluster needs both --cluster-listen and --routes');
  }
  const plan = planNatsUsers(o.cluster, o.replicas, o.nodes, o.clients);
  const config = natsServerConfig(plan, {
    listen: o.listen,
    ...(tls === undefined ? {} : { tls }),
    ...(o.clusterListen === undefined || o.routes === undefined
      ? {}
      : { routeCluster: { listen: o.clusterListen, routes: o.routes } }),
  });
  writePrivate(confPath, config);
  writePrivate(credsPath, `${JSON.stringify(plan, null, 2)}\n`);
  process.stdout.write(`wrote ${confPath} and ${credsPath} (${plan.users.length} users)\n`);
}

/** A comma-separated list of host:port. */
function hostPorts(raw: string): string[] {
  return commaList(raw).map(hostPort);
}

export function registerNatsConfig(program: Command): void {
  program
    .command('nats-config')
    .description(
      'write a nats-server config where each replica, worker and client may use only its own subjects',
    )
    .requiredOption('--cluster <id>', 'cluster id (subject prefix trellis.<id>)')
    .requiredOption('--replicas <ids>', 'comma-separated replica ids', commaList)
    .option('--nodes <ids>', 'comma-separated node (worker) ids', commaList, [])
    .option('--clients <names>', 'comma-separated API client names', commaList, ['api'])
    .option('--listen <host:port>', 'address nats-server listens on', hostPort, '127.0.0.1:4222')
    .option('--tls-cert <file>', 'server certificate (enables TLS; needs --tls-key)')
    .option('--tls-key <file>', 'server key (needs --tls-cert)')
    .option('--tls-ca <file>', 'CA to verify clients against (mutual TLS)')
    .option(
      '--cluster-listen <host:port>',
      'route address of this server in a NATS cluster (needs --routes)',
      hostPort,
    )
    .option(
      '--routes <host:port,...>',
      'route addresses of every server of the NATS cluster (each skips its own)',
      hostPorts,
    )
    .option('--out <dir>', 'directory for nats.conf and credentials.json', '.')
    .option('--force', 'replace an existing nats.conf and credentials.json')
    .action(run);
}
