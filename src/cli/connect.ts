/**
 * How every `trellis` command that talks to NATS connects: the same flags (`--nats`, `--cluster`,
 * `--user/--password`, `--creds FILE`, `--connect-timeout`), the same environment variables, and one
 * connect loop that retries with backoff, says where it is waiting, and gives up after the timeout with
 * one line instead of hanging silently.
 *
 * Credentials, first match wins: the flags, then `TRELLIS_NATS_USER` / `TRELLIS_NATS_PASSWORD` /
 * `TRELLIS_NATS_CREDS`. A creds file is the `credentials.json` that `trellis nats-config` writes (the user
 * is then picked by `--user`, by the command's own role — `replica-<id>` for a server — or as the file's
 * only client), or a single `{ "user": …, "password": … }` object.
 */
import { readFileSync } from 'node:fs';
import { connect, type NatsConnection } from 'nats';
import { z } from 'zod';
import { ConfigError, UnavailableError } from '../lib/errors.js';
import type { Logger } from '../log.js';
import {
  type ConnectionFlags,
  clientConnectTimeoutMs,
  defaultNatsUrl,
  withConnectionOptions,
} from './connect-options.js';
import { NatsAuthError, UsageError } from './errors.js';

export { type ConnectionFlags, clientConnectTimeoutMs, defaultNatsUrl, withConnectionOptions };

/** First wait between connect attempts; it doubles up to `connectBackoffMsMax`. */
export const connectBackoffMsFirst = 250;
export const connectBackoffMsMax = 5_000;
/** One attempt's own timeout (the TCP connect and the server's greeting). */
export const connectAttemptMsMax = 2_000;

export interface Credentials {
  readonly user: string;
  readonly pass: string;
}

const credsFileSchema = z.union([
  z.object({
    cluster: z.string().optional(),
    users: z.array(z.object({ user: z.string(), password: z.string(), role: z.string().optional() })),
  }),
  z.object({ user: z.string(), password: z.string() }),
]);

function readCredsFile(file: string): z.output<typeof credsFileSchema> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read credentials file ${file}: ${(err as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new ConfigError(`credentials file ${file} is not JSON`);
  }
  const parsed = credsFileSchema.safeParse(json);
  if (!parsed.success) {
    throw new ConfigError(
      `credentials file ${file} is neither a 'trellis nats-config' credentials.json nor {"user","password"}`,
    );
  }
  return parsed.data;
}

/**
 * The credentials a command connects with, or undefined to connect without. `ownUser` is the user the
 * command is by role (a server's `replica-<id>`); without it, a creds file's only client user is taken.
 */
export function resolveCredentials(
  flags: Pick<ConnectionFlags, 'user' | 'password' | 'pass' | 'creds'>,
  env: NodeJS.ProcessEnv,
  ownUser?: string,
): Credentials | undefined {
  const user = flags.user ?? env.TRELLIS_NATS_USER;
  const password = flags.password ?? flags.pass ?? env.TRELLIS_NATS_PASSWORD;
  const file = flags.creds ?? env.TRELLIS_NATS_CREDS;
  if (file !== undefined && file !== '') {
    const creds = readCredsFile(file);
    if (!('users' in creds)) return { user: user ?? creds.user, pass: password ?? creds.password };
    const wanted = user ?? ownUser;
    const found =
      wanted === undefined ? onlyClient(creds.users, file) : creds.users.find((u) => u.user === wanted);
    if (found === undefined) throw new UsageError(`credentials file ${file} has no user ${wanted}`);
    return { user: found.user, pass: password ?? found.password };
  }
  if (user === undefined && password === undefined) return undefined;
  if (user === undefined) throw new UsageError('a NATS password was given without a user (--user)');
  if (password === undefined) {
    throw new UsageError(`NATS user ${user} needs a password (--password, TRELLIS_NATS_PASSWORD or --creds)`);
  }
  return { user, pass: password };
}

function onlyClient(
  users: readonly { user: string; password: string; role?: string | undefined }[],
  file: string,
): { user: string; password: string } {
  const clients = users.filter((u) => u.role === 'client');
  const [only] = clients;
  if (clients.length !== 1 || only === undefined) {
    throw new UsageError(
      `credentials file ${file} has ${clients.length} client users; pick one with --user (${clients
        .map((u) => u.user)
        .join(', ')})`,
    );
  }
  return only;
}

export interface ConnectOptions {
  readonly servers: string;
  /** The connection's name, as nats-server shows it in its monitoring. */
  readonly name: string;
  readonly credentials?: Credentials | undefined;
  /** Give up after this long without a connection. */
  readonly timeoutMs: number;
  /** Reconnect forever once connected (a server); a client command gives up with the connection. */
  readonly reconnectForever?: boolean;
  /** Where the waiting is logged; a client command waits silently. */
  readonly log?: Logger;
}

const authCodes = new Set(['AUTHORIZATION_VIOLATION', 'BAD_AUTHENTICATION', 'AUTHENTICATION_EXPIRED']);

/**
 * Connects, retrying with backoff while nats-server is unreachable; throws NatsAuthError at once when it
 * refuses the credentials (retrying cannot help) and UnavailableError once `timeoutMs` has passed.
 */
export async function connectNats(o: ConnectOptions): Promise<NatsConnection> {
  const deadline = Date.now() + o.timeoutMs;
  let backoffMs = connectBackoffMsFirst;
  for (let attempt = 1; ; attempt++) {
    const remainingMs = deadline - Date.now();
    try {
      return await connect({
        servers: o.servers.split(','),
        name: o.name,
        timeout: Math.max(1, Math.min(connectAttemptMsMax, remainingMs)),
        // nats.js otherwise captures a stack per request (and per timer): measurable CPU on a loaded replica.
        noAsyncTraces: true,
        ...(o.reconnectForever === true ? { maxReconnectAttempts: -1, reconnectTimeWait: 250 } : {}),
        ...(o.credentials === undefined ? {} : { user: o.credentials.user, pass: o.credentials.pass }),
      });
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      const why = err instanceof Error ? err.message : String(err);
      if (typeof code === 'string' && authCodes.has(code)) {
        throw new NatsAuthError(
          `nats-server at ${o.servers} refused ${o.credentials === undefined ? 'a connection without credentials' : `the credentials of user ${o.credentials.user}`} (${why})`,
          { cause: err },
        );
      }
      const waitMs = Math.min(backoffMs, deadline - Date.now());
      if (waitMs <= 0) {
        throw new UnavailableError(
          `could not reach NATS at ${o.servers} within ${o.timeoutMs} ms after ${attempt} attempts (${why})`,
          { cause: err },
        );
      }
      o.log?.warn(
        { nats: o.servers, attempt, retryInMs: waitMs, err: why },
        `waiting for NATS at ${o.servers}`,
      );
      await new Promise((r) => setTimeout(r, waitMs));
      backoffMs = Math.min(backoffMs * 2, connectBackoffMsMax);
    }
  }
}

/** The connection of a client command (`kv`, `members`): its credentials, its timeout, no logging. */
export function clientConnection(o: ConnectionFlags): Promise<NatsConnection> {
  return connectNats({
    servers: o.nats,
    name: 'trellis-cli',
    credentials: resolveCredentials(o, process.env),
    timeoutMs: o.connectTimeout,
  });
}
