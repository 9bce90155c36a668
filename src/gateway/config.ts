/**
 * The Redis gateway's settings: where Redis is (a `redis://` or `rediss://` URL, the latter for TLS), who
 * the gateway logs in as (an ACL user and password, given apart from the URL so they can come from the
 * environment and never appear in a log line), and the names of its streams and consumer group.
 *
 * Every value is checked once here, before anything connects: a bad one is a ConfigError naming it, which
 * the CLI prints as one line.
 */
import { z } from 'zod';
import { ConfigError } from '../lib/errors.js';
import { checkStreamName } from './entry.js';
import { inFlightMaxLimit } from './limits.js';

/** Events kept in the events stream by default (`MAXLEN ~`, so Redis trims in whole nodes, cheaply). */
export const eventsMaxLenDefault = 1_000_000;
/** Entries kept in each reply stream and in the dead-letter stream (`MAXLEN ~`). */
export const replyMaxLenDefault = 100_000;
/** Requests the gateway has read but not yet answered, at most: what the leader pipeline takes comfortably. */
export const inFlightMaxDefault = 512;
export { inFlightMaxLimit };
/** How long an entry stays pending with a consumer before another (or the same) claims it. */
export const claimIdleMsDefault = 15_000;
/** How long one blocking read waits for new entries before the loop looks at leadership again. */
export const readBlockMsDefault = 1_000;

export interface GatewayConfig {
  /** `redis://host:port[/db]` or `rediss://…` (TLS). Credentials in the URL are accepted but `user`/`password` win. */
  readonly url: string;
  readonly user?: string;
  readonly password?: string;
  /** PEM of the CA that signed the server's certificate (`rediss://` only); default: the system's CAs. */
  readonly tlsCa?: string;
  /** The stream requests arrive on. */
  readonly requests: string;
  /** The consumer group the replicas share on `requests`. */
  readonly group: string;
  /** The stream committed events are appended to. */
  readonly events: string;
  /** The stream malformed entries go to. */
  readonly deadLetter: string;
  readonly eventsMaxLen: number;
  readonly replyMaxLen: number;
  readonly inFlightMax: number;
  readonly claimIdleMs: number;
  readonly readBlockMs: number;
}

export const gatewayDefaults = {
  requests: 'trellis:requests',
  group: 'trellis',
  events: 'trellis:events',
  deadLetter: 'trellis:dead-letter',
  eventsMaxLen: eventsMaxLenDefault,
  replyMaxLen: replyMaxLenDefault,
  inFlightMax: inFlightMaxDefault,
  claimIdleMs: claimIdleMsDefault,
  readBlockMs: readBlockMsDefault,
} as const;

export type GatewayConfigInput = Partial<GatewayConfig> & { readonly url: string };

const name = z.string().min(1).max(256);
const inputSchema = z.strictObject({
  url: z.string().min(1).max(2_048),
  user: z.string().min(1).max(256).optional(),
  password: z.string().min(1).max(4_096).optional(),
  tlsCa: z
    .string()
    .min(1)
    .max(1 << 20)
    .optional(),
  requests: name.optional(),
  group: name.optional(),
  events: name.optional(),
  deadLetter: name.optional(),
  eventsMaxLen: z.int().min(1).max(1e9).optional(),
  replyMaxLen: z.int().min(1).max(1e9).optional(),
  inFlightMax: z.int().min(1).max(inFlightMaxLimit).optional(),
  claimIdleMs: z.int().min(1).max(86_400_000).optional(),
  readBlockMs: z.int().min(1).max(60_000).optional(),
});

/** The checked configuration, defaults filled in; ConfigError names the first bad value. */
export function gatewayConfig(input: GatewayConfigInput): GatewayConfig {
  const parsed = inputSchema.safeParse(input);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const path = issue?.path.join('.') ?? '';
    throw new ConfigError(`redis ${path === '' ? 'settings' : path}: ${issue?.message ?? 'invalid value'}`);
  }
  // Keys given as undefined (an unset flag) keep their default.
  const given = Object.fromEntries(Object.entries(parsed.data).filter(([, v]) => v !== undefined));
  const config = { ...gatewayDefaults, ...given } as GatewayConfig;
  checkRedisUrl(config.url);
  if (config.tlsCa !== undefined && !config.url.startsWith('rediss://'))
    throw new ConfigError('a redis TLS CA is only used with a rediss:// URL');
  const streams = [config.requests, config.events, config.deadLetter];
  for (const s of streams) {
    const problem = checkStreamName(s, new Set());
    if (problem !== undefined) throw new ConfigError(`redis stream ${JSON.stringify(s)}: ${problem}`);
  }
  if (new Set(streams).size !== streams.length)
    throw new ConfigError('redis requests, events and dead-letter streams must be three different streams');
  if (!/^[A-Za-z0-9_.:-]+$/.test(config.group))
    throw new ConfigError(`redis group ${JSON.stringify(config.group)}: letters, digits, _ . : - only`);
  return config;
}

/** Throws ConfigError unless `url` is a redis:// or rediss:// URL with a host. */
export function checkRedisUrl(url: string): void {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new ConfigError(`redis URL ${JSON.stringify(redactUrl(url))} is not a URL`);
  }
  if (u.protocol !== 'redis:' && u.protocol !== 'rediss:')
    throw new ConfigError(`redis URL must start with redis:// or rediss:// (TLS), got ${u.protocol}//`);
  if (u.hostname === '') throw new ConfigError('redis URL has no host');
  // ioredis would read query parameters as connection options; settings come from flags only.
  if (u.search !== '') throw new ConfigError('redis URL may not carry ?parameters; use the --redis-* flags');
  const db = u.pathname.replace(/^\//, '');
  if (db !== '' && !/^\d{1,2}$/.test(db))
    throw new ConfigError(`redis URL path must be a database number, got /${db.slice(0, 20)}`);
}

/** The URL without its password, for log lines. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password !== '') u.password = '***';
    return u.toString();
  } catch {
    return url.replace(/\/\/[^@/]*@/, '//***@');
  }
}
