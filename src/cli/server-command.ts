/**
 * The `trellis server` and `trellis kv` commands and their flags, declared without loading what runs them
 * (server.ts: Raft, storage, NATS, the scheduler, metrics, the Redis gateway), which each action imports:
 * a bad flag, `--help` or another command answers without that start-up cost.
 */
import { type Command, Option } from 'commander';
import { durationMs, intBetween, port, positiveInt } from './args.js';
import { type ConnectionFlags, clientConnectTimeoutMs, withConnectionOptions } from './connect-options.js';
import { exitCodes } from './errors.js';
import { withServerConfig } from './ops/server-config.js';
import { type RedisFlags, withRedisOptions } from './redis-flags.js';
import type { KvRequest } from './server.js';

export interface ServerOptions extends ConnectionFlags, RedisFlags {
  id: string;
  peers: string;
  data: string;
  tickMs: number;
  electionTicks: number;
  snapshotEntries: number;
  stopTimeout: number;
  metricsPort?: number;
  nodeDownAfter: number;
}

/** The longest Raft tick `--tick-ms` takes (a minute: elections would take 10-20 minutes). */
export const tickMsMax = 60_000;
/**
 * Ticks without word from the leader before a follower campaigns (random in [n, 2n)), unless
 * `--election-ticks` says otherwise. A killed leader is found sooner than this through NATS (no responders
 * on its subject: raft/node.ts `leaderProbeTicks`), so this bounds only the failover of a leader that is
 * stalled or cut off, and sets how long a stall must be to cost an election: 20 (400-800 ms at the 20 ms
 * tick) rather than the core's 10, because at 10 a no-fault 2,000-sandbox load run at load 15-17 held 9
 * elections in 40 s (the leader descheduled for 200-400 ms), at 20 two in 23 s at load 17-24.
 */
export const electionTicksDefault = 20;
export const electionTicksMax = 10_000;
/** Entries applied between snapshots unless `--snapshot-entries` says otherwise (etcd's default). */
export const snapshotEntriesDefault = 100_000;
/** How long `trellis server` waits for NATS at start unless `--connect-timeout` says otherwise. */
export const serverConnectTimeoutMsDefault = 60_000;
/** How long a stopping replica may take to close Raft, storage and NATS before it exits anyway. */
export const stopTimeoutMsDefault = 3_000;

export function registerServer(program: Command): void {
  const cmd = program
    .command('server')
    .description('run one replica of a Raft group over NATS (the scheduler, or the KV state machine)')
    .option('--id <id>', 'this replica (required)')
    .option(
      '--peers <ids>',
      "the group's voters on first start, comma-separated; a replica joining a running group lists the current voters without itself, and is then added with `trellis members add`",
    )
    .option('--data <dir>', 'directory for the write-ahead log and snapshots (required)')
    .option(
      '--tick-ms <ms>',
      'Raft tick: heartbeats every tick, elections after --election-ticks (20-40 ticks by default)',
      intBetween(1, tickMsMax),
      20,
    )
    .option(
      '--election-ticks <n>',
      'ticks without the leader before a campaign (random in [n, 2n)); a killed leader is found sooner through NATS',
      intBetween(2, electionTicksMax),
      electionTicksDefault,
    )
    .option(
      '--snapshot-entries <n>',
      'applied entries between snapshots (the log is compacted at each)',
      positiveInt,
      snapshotEntriesDefault,
    )
    .addOption(
      new Option(
        '--state <machine>',
        'what the group replicates: the scheduler, or the KV machine (etcd comparison bench)',
      )
        .choices(['scheduler', 'kv'])
        .default('scheduler'),
    )
    .option(
      '--stop-timeout <duration>',
      'on SIGTERM/SIGINT, exit after this long even if NATS or storage has not closed',
      durationMs,
      stopTimeoutMsDefault,
    )
    .option('--metrics-port <port>', 'serve /metrics, /healthz and /readyz on 127.0.0.1:<port>', port)
    .option(
      '--node-down-after <duration>',
      'scheduler: a node with no heartbeat for this long is marked down and its sandboxes lost (0: never)',
      durationMs,
      0,
    );
  withRedisOptions(cmd);
  withConnectionOptions(cmd, serverConnectTimeoutMsDefault);
  // Flags, then TRELLIS_* env, then an optional YAML config file (credentials keep connect.ts's env names).
  withServerConfig(cmd, ['id', 'peers', 'data'], ['user', 'password', 'pass', 'creds']).action(
    async (o: ServerOptions) => {
      const { runServer } = await import('./server.js');
      await runServer(o);
    },
  );
}

/** `trellis kv`'s exit code when a write's outcome is unknown (docs/operations.md lists every exit code). */
export const kvOutcomeUnknownExitCode = exitCodes.outcomeUnknown;

export function registerKv(program: Command): void {
  const kvCmd = program.command('kv').description('read and write the replica group’s KV state machine');
  // An OutcomeUnknownError propagates to the CLI's one error handler: one line and exit code 5
  // (outcomeUnknown), distinct from a refusal (1) and from an unreachable group (3).
  const withConn = async (o: ConnectionFlags, req: KvRequest): Promise<void> => {
    const { runKv } = await import('./server.js');
    await runKv(o, req);
  };
  withConnectionOptions(kvCmd.command('put <key> <value>'), clientConnectTimeoutMs).action(
    (key: string, value: string, o: ConnectionFlags) => withConn(o, { op: 'put', key, value }),
  );
  withConnectionOptions(kvCmd.command('get <key>'), clientConnectTimeoutMs).action(
    (key: string, o: ConnectionFlags) => withConn(o, { op: 'get', key }),
  );
  withConnectionOptions(kvCmd.command('delete <key>'), clientConnectTimeoutMs).action(
    (key: string, o: ConnectionFlags) => withConn(o, { op: 'delete', key }),
  );
}
