/**
 * `trellis nats-config`: writes a least-privilege nats-server configuration for a cluster and a credentials
 * file with one user per replica, node worker and API client (see src/nats/config.ts).
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import { natsServerConfig, planNatsUsers } from '../nats/config.js';

const list = (s: string): string[] =>
  s
    .split(',')
    .map((x) => x.trim())
    .filter((x) => x !== '');

export function registerNatsConfig(program: Command): void {
  program
    .command('nats-config')
    .description(
      'write a nats-server config where each replica, worker and client may use only its own subjects',
    )
    .requiredOption('--cluster <id>', 'cluster id (subject prefix trellis.<id>)')
    .requiredOption('--replicas <ids>', 'comma-separated replica ids')
    .option('--nodes <ids>', 'comma-separated node (worker) ids', '')
    .option('--clients <names>', 'comma-separated API client names', 'api')
    .option('--listen <host:port>', 'address nats-server listens on', '127.0.0.1:4222')
    .option('--tls-cert <file>', 'server certificate (enables TLS)')
    .option('--tls-key <file>', 'server key')
    .option('--tls-ca <file>', 'CA to verify clients against (mutual TLS)')
    .option('--out <dir>', 'directory for nats.conf and credentials.json', '.')
    .action(
      (o: {
        cluster: string;
        replicas: string;
        nodes: string;
        clients: string;
        listen: string;
        tlsCert?: string;
        tlsKey?: string;
        tlsCa?: string;
        out: string;
      }) => {
        const plan = planNatsUsers(o.cluster, list(o.replicas), list(o.nodes), list(o.clients));
        const tls =
          o.tlsCert !== undefined && o.tlsKey !== undefined
            ? { cert: o.tlsCert, key: o.tlsKey, ...(o.tlsCa === undefined ? {} : { ca: o.tlsCa }) }
            : undefined;
        const config = natsServerConfig(plan, { listen: o.listen, ...(tls === undefined ? {} : { tls }) });
        writeFileSync(join(o.out, 'nats.conf'), config, { mode: 0o600 });
        writeFileSync(join(o.out, 'credentials.json'), `${JSON.stringify(plan, null, 2)}\n`, { mode: 0o600 });
        process.stdout.write(
          `wrote ${join(o.out, 'nats.conf')} and ${join(o.out, 'credentials.json')} (${plan.users.length} users)\n`,
        );
      },
    );
}
