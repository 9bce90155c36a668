/**
 * The connection flags every `trellis` command that talks to NATS declares (`--nats`, `--cluster`,
 * `--user/--password`, `--creds FILE`, `--connect-timeout`), apart from connect.ts, which connects: the CLI
 * declares its commands without loading nats.js, so a bad flag or `--help` answers at once.
 */
import { type Command, InvalidArgumentError, Option } from 'commander';
import { clusterId } from '../lib/ids.js';
import { durationMs, natsUrls } from './args.js';

export const defaultNatsUrl = 'nats://127.0.0.1:4222';

/** How long `kv` and `members` wait for NATS unless `--connect-timeout` says otherwise. */
export const clientConnectTimeoutMs = 5_000;

export interface ConnectionFlags {
  nats: string;
  cluster: string;
  user?: string;
  password?: string;
  /** The older spelling of `--password`, kept (hidden) so existing scripts run. */
  pass?: string;
  creds?: string;
  connectTimeout: number;
}

/** Adds the shared connection flags to `cmd`; `connectTimeoutMs` is the default of `--connect-timeout`. */
export function withConnectionOptions(cmd: Command, connectTimeoutMs: number): Command {
  return cmd
    .option('--nats <url>', 'nats-server URL(s), comma-separated', natsUrls, defaultNatsUrl)
    .option('--cluster <id>', 'cluster id (subject prefix trellis.<id>)', clusterIdArg, 'trellis')
    .option('--user <user>', 'NATS user (env TRELLIS_NATS_USER)')
    .option('--password <password>', 'NATS password (env TRELLIS_NATS_PASSWORD; prefer it or --creds)')
    .addOption(new Option('--pass <password>', 'same as --password').hideHelp())
    .option('--creds <file>', 'credentials.json from `trellis nats-config` (env TRELLIS_NATS_CREDS)')
    .option(
      '--connect-timeout <duration>',
      'give up reaching NATS after this long (ms, or 5s, 2m)',
      durationMs,
      connectTimeoutMs,
    );
}

function clusterIdArg(raw: string): string {
  try {
    return clusterId(raw, 'cluster id');
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
}
