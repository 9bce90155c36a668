/**
 * The `--redis-*` flags of `trellis server` (the Redis streams gateway), declared apart from
 * redis-options.ts, which checks them with the gateway's schema: the CLI declares its commands without
 * loading the gateway.
 */
import type { Command } from 'commander';
import { inFlightMaxLimit } from '../gateway/limits.js';
import { durationMs, intBetween, positiveInt } from './args.js';

export interface RedisFlags {
  state: 'kv' | 'scheduler';
  redis?: string;
  redisUser?: string;
  redisPassword?: string;
  redisTlsCa?: string;
  redisRequests?: string;
  redisGroup?: string;
  redisEvents?: string;
  redisDeadLetter?: string;
  redisEventsMaxlen?: number;
  redisInFlight?: number;
  redisClaimIdle?: number;
}

export function withRedisOptions(cmd: Command): Command {
  return cmd
    .option(
      '--redis <url>',
      'run the Redis streams gateway while this replica leads: redis://host:port[/db], or rediss:// for TLS',
    )
    .option('--redis-user <name>', 'Redis ACL user (default: the default user)')
    .option(
      '--redis-password <password>',
      'Redis password (prefer TRELLIS_REDIS_PASSWORD or the config file)',
    )
    .option(
      '--redis-tls-ca <file>',
      "PEM file of the CA that signed Redis's certificate (rediss://; default: system CAs)",
    )
    .option('--redis-requests <stream>', 'stream the gateway reads requests from (default trellis:requests)')
    .option(
      '--redis-group <name>',
      'consumer group the replicas share on the request stream (default trellis)',
    )
    .option('--redis-events <stream>', 'stream committed events are appended to (default trellis:events)')
    .option('--redis-dead-letter <stream>', 'stream malformed requests go to (default trellis:dead-letter)')
    .option('--redis-events-maxlen <n>', 'events kept in the events stream, about (MAXLEN ~)', positiveInt)
    .option(
      '--redis-in-flight <n>',
      'requests read but not yet answered, at most (back-pressure)',
      intBetween(1, inFlightMaxLimit),
    )
    .option(
      '--redis-claim-idle <duration>',
      'how long a request stays pending with a lost leader before another claims it (default 15s)',
      durationMs,
    );
}
