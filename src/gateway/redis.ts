/**
 * The gateway's Redis connections (ioredis, the well-kept Node client: reconnects by itself, resends
 * commands a dropped connection left unanswered, TLS, ACL logins) and the one script it runs.
 *
 * Commands issued while Redis is unreachable wait for the reconnection (`maxRetriesPerRequest: null`):
 * the gateway's loops simply stall during an outage and go on after it, and every command they send is
 * safe to run twice (see `ackAndAdd`, and the explicit ids of the events stream), which is what makes the
 * client's resending harmless.
 */
import { isIP } from 'node:net';
import { Redis, type RedisOptions } from 'ioredis';
import { StandaloneConnector } from 'ioredis/built/connectors/index.js';
import type { GatewayConfig } from './config.js';

/** Longest wait between reconnection attempts. */
export const reconnectDelayMsMax = 1_000;
/** How long a connection attempt may take before it is retried. */
export const connectTimeoutMs = 5_000;

/**
 * ioredis's own connector, with one listener on every socket's errors for the socket's whole life. ioredis
 * listens with `once` and stops reporting errors at all once a connection has ended, so a socket that
 * errors twice (a TLS socket that failed verification, then read the server's alert) or after the gateway
 * gave up on it would throw from `emit` with no listener: an uncaught exception, the end of a server. The
 * first error still reaches ioredis, which drops the socket and reconnects on a new one; later errors of a
 * dropped socket have nobody to tell.
 */
class GuardedConnector extends StandaloneConnector {
  // ioredis hands every connector its whole options object, typed `unknown` in its constructor signature.
  constructor(options: unknown) {
    super(options as ConstructorParameters<typeof StandaloneConnector>[0]);
  }

  override async connect(onError: Parameters<StandaloneConnector['connect']>[0]) {
    const stream = await super.connect(onError);
    stream.on('error', ignoreSocketError);
    return stream;
  }
}

function ignoreSocketError(): void {}

/** A new connection to the configured Redis; `name` shows in CLIENT LIST. */
export function connectRedis(config: GatewayConfig, name: string): Redis {
  const url = new URL(config.url);
  const tls = url.protocol === 'rediss:';
  // SNI carries host names only (RFC 6066); for an IP address node checks the certificate without it.
  const host = url.hostname.replace(/^\[|\]$/g, '');
  const options: RedisOptions = {
    connectionName: name,
    Connector: GuardedConnector,
    maxRetriesPerRequest: null,
    connectTimeout: connectTimeoutMs,
    retryStrategy: (attempt) => Math.min(50 * attempt, reconnectDelayMsMax),
    ...(config.user === undefined ? {} : { username: config.user }),
    ...(config.password === undefined ? {} : { password: config.password }),
    ...(tls
      ? {
          tls: {
            ...(isIP(host) === 0 ? { servername: host } : {}),
            ...(config.tlsCa === undefined ? {} : { ca: config.tlsCa }),
          },
        }
      : {}),
  };
  return new Redis(config.url, options);
}

/**
 * Acknowledges a request entry and, only if this call is what acknowledged it, appends the outcome to its
 * target stream (the reply stream, or the dead-letter stream). Atomic, as every script is: two replicas
 * that both finished the same entry (the old leader and the one that claimed it) cannot both write an
 * outcome, and an outcome is never written without its acknowledgement or the other way round.
 *
 * KEYS: request stream, target stream. ARGV: group, entry id, target MAXLEN, then field/value pairs.
 * Returns 1 when it acknowledged and wrote, 0 when the entry was already acknowledged, and -1 (having done
 * nothing) when the target key holds something other than a stream: a script's writes are not rolled back
 * when a later command in it fails, so the XADD must not be able to fail after the XACK.
 */
export const ackAndAddScript = `
local kind = redis.call('TYPE', KEYS[2])['ok']
if kind ~= 'none' and kind ~= 'stream' then
  return -1
end
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', unpack(ARGV, 4))
  return 1
end
return 0
`;

type AckAndAdd = (
  requests: string,
  target: string,
  group: string,
  entryId: string,
  maxLen: number,
  ...fields: string[]
) => Promise<number>;

/** Registers the script on `redis` (sent once, then by its SHA) and returns a typed handle on it. */
export function ackAndAdd(redis: Redis): AckAndAdd {
  redis.defineCommand('trellisAckAndAdd', { numberOfKeys: 2, lua: ackAndAddScript });
  const command = (redis as unknown as { trellisAckAndAdd: AckAndAdd }).trellisAckAndAdd;
  return command.bind(redis);
}

/** One entry as XREADGROUP and XAUTOCLAIM return it: its id and its flat field list. */
export type StreamEntry = readonly [id: string, fields: readonly string[]];

/** The entries of an XREADGROUP reply for one stream (null when the block timed out). */
export function entriesOfRead(reply: unknown): StreamEntry[] {
  if (!Array.isArray(reply) || reply.length === 0) return [];
  const first = reply[0] as unknown;
  if (!Array.isArray(first) || !Array.isArray(first[1])) return [];
  return (first[1] as unknown[]).filter(isEntry);
}

/** The entries of an XAUTOCLAIM reply and the cursor to continue from (`0-0`: the scan is complete). */
export function entriesOfClaim(reply: unknown): { next: string; entries: StreamEntry[] } {
  if (!Array.isArray(reply) || typeof reply[0] !== 'string') return { next: '0-0', entries: [] };
  const entries = Array.isArray(reply[1]) ? (reply[1] as unknown[]).filter(isEntry) : [];
  return { next: reply[0], entries };
}

function isEntry(e: unknown): e is StreamEntry {
  // A claimed entry that was deleted meanwhile comes back with null fields (Redis 6.2); skip it.
  return Array.isArray(e) && typeof e[0] === 'string' && Array.isArray(e[1]);
}

/** True for Redis's answer to a command on a missing key or group (the stream was deleted, say). */
export function isNoGroupError(err: unknown): boolean {
  return err instanceof Error && /NOGROUP|no such key/i.test(err.message);
}
