/**
 * `trellis server --redis URL [--redis-…]`: the Redis streams gateway's flags (src/gateway). Like every
 * server flag they can also come from `TRELLIS_REDIS_…` environment variables or the YAML config file
 * (`redis: rediss://…`, `redis-password: …`); the password is best given that way, since a flag shows in
 * the process list. Values are checked before the replica opens anything: a bad one is one error line.
 */
import { readFileSync } from 'node:fs';
import { type GatewayConfig, gatewayConfig } from '../gateway/config.js';
import { ConfigError } from '../lib/errors.js';
import { UsageError } from './errors.js';
import type { RedisFlags } from './redis-flags.js';

export { type RedisFlags, withRedisOptions } from './redis-flags.js';

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
