/**
 * `trellis server --redis URL [--redis-…]`: the Redis streams gateway's flags (src/gateway). Like every
 * server flag they can also come from `TRELLIS_REDIS_…` environment variables or the YAML config file
 * (`redis: rediss://…`, `redis-password: …`); the password is best given that way, since a flag shows in
 * the process list. Values are checked before the replica opens anything: a bad one is one error line.
 */
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { type GatewayConfig, gatewayConfig, inFlightMaxLimit } from '../gateway/config.js';
import { ConfigError } from '../lib/errors.js';
import { durationMs, intBetween, positiveInt } from './args.js';
import { UsageError } from './errors.js';

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

/** The gateway's checked settings, or undefined without `--redis`; ConfigError/UsageError on a bad one. */
export function redisGatewayConfig(o: RedisFlags): GatewayConfig | undefined {
  const others = [
    o.redisUser,
    o.redisPassword,
    o.redisTlsCa,
    o.redisRequests,
    o.redisGroup,
    o.redisEvents,
    o.redisDeadLetter,
    o.redisEventsMaxlen,
    o.redisInFlight,
    o.redisClaimIdle,
  ];
  if (o.redis === undefined) {
    if (others.some((v) => v !== undefined)) throw new UsageError('--redis-… settings need --redis <url>');
    return undefined;
  }
  if (o.state !== 'scheduler') throw new UsageError('--redis needs --state scheduler');
  const set = <K extends string, V>(key: K, value: V | undefined) =>
    (value === undefined ? {} : { [key]: value }) as Partial<Record<K, V>>;
  return gatewayConfig({
    url: o.redis,
    ...set('user', o.redisUser),
    ...set('password', o.redisPassword),
    ...set('tlsCa', o.redisTlsCa === undefined ? undefined : readCa(o.redisTlsCa)),
    ...set('requests', o.redisRequests),
    ...set('group', o.redisGroup),
    ...set('events', o.redisEvents),
    ...set('deadLetter', o.redisDeadLetter),
    ...set('eventsMaxLen', o.redisEventsMaxlen),
    ...set('inFlightMax', o.redisInFlight),
    ...set('claimIdleMs', o.redisClaimIdle),
  });
}

/** The CA file's PEM text; ConfigError when it cannot be read or holds no certificate. */
function readCa(file: string): string {
  let pem: string;
  try {
    pem = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read --redis-tls-ca ${file}: ${(err as Error).message}`);
  }
  if (!pem.includes('-----BEGIN CERTIFICATE-----'))
    throw new ConfigError(`--redis-tls-ca ${file} holds no PEM certificate`);
  return pem;
}
