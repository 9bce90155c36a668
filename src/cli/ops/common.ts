/**
 * What every command that drives a running cluster shares: the connection flags of src/cli/connect.ts
 * (plus `TRELLIS_NATS` and `TRELLIS_CLUSTER`), `--json`, `--timeout` (each call's deadline, retries
 * included), one way to open and close the remote client, and the output helpers.
 *
 * Tables are cli-table3's (well kept, used by many CLIs; handles column widths and wide characters), drawn
 * without borders in the habit of `nomad` and `kubectl`. `--json` prints one JSON document (JSON lines for
 * `watch`) for scripts.
 */
import Table from 'cli-table3';
import { type Command, InvalidArgumentError } from 'commander';
import type { NodeView } from '../../../placement/index.js';
import type { Sandbox } from '../../../scheduler/types.js';
import type { RemoteScheduler } from '../../api/client.js';
import { callTimeoutMsDefault } from '../../api/limits.js';
import { clusterId } from '../../lib/ids.js';
import { printable } from '../../lib/text.js';
import { durationMs, natsUrls } from '../args.js';
import { type ConnectionFlags, clientConnectTimeoutMs, withConnectionOptions } from '../connect-options.js';

export interface OpsFlags extends ConnectionFlags {
  json?: boolean;
  timeout: number;
}

/** Environment variables of the shared flags that connect.ts does not read itself, with their parsers. */
const flagEnv: Readonly<Record<string, readonly [string, (raw: string) => string]>> = {
  nats: ['TRELLIS_NATS', natsUrls],
  cluster: ['TRELLIS_CLUSTER', (raw) => clusterId(raw, 'TRELLIS_CLUSTER')],
};

/** Adds the connection flags, `--json` and `--timeout` to a cluster command. */
export function withOpsOptions(cmd: Command): Command {
  withConnectionOptions(cmd, clientConnectTimeoutMs)
    .option('--json', 'print JSON for scripts instead of a table')
    .option(
      '--timeout <duration>',
      'deadline of each call to the cluster, retries included (ms, or 5s, 2m)',
      durationMs,
      callTimeoutMsDefault,
    );
  return bindFlagEnv(cmd);
}

/**
 * connect.ts declares --nats and --cluster without env; a flag left at its default takes TRELLIS_NATS or
 * TRELLIS_CLUSTER (commander binds env only when an option is added, so this is done before the action runs).
 */
export function bindFlagEnv(cmd: Command): Command {
  cmd.hook('preAction', (c) => {
    for (const [key, [env, parse]] of Object.entries(flagEnv)) {
      const value = process.env[env];
      if (value !== undefined && value !== '' && c.getOptionValueSource(key) === 'default') {
        c.setOptionValueWithSource(key, parse(value), 'env');
      }
    }
  });
  return cmd;
}

/**
 * Connects to the cluster, runs `f` with the client, and closes the connection whatever happens. nats.js and
 * the client are loaded here, by a command that calls the cluster, not at every CLI start.
 */
export async function withClient<T>(o: OpsFlags, f: (client: RemoteScheduler) => Promise<T>): Promise<T> {
  const [{ connect }, { connectNats, resolveCredentials }] = await Promise.all([
    import('../../api/client.js'),
    import('../connect.js'),
  ]);
  const nc = await connectNats({
    servers: o.nats,
    name: 'trellis-cli',
    credentials: resolveCredentials(o, process.env),
    timeoutMs: o.connectTimeout,
  });
  try {
    const client = await connect({
      servers: o.nats.split(','),
      cluster: o.cluster,
      connection: nc,
      timeoutMs: Math.min(o.timeout, 600_000),
    });
    try {
      return await f(client);
    } finally {
      await client.close();
    }
  } finally {
    await nc.close();
  }
}

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

/** cli-table3 characters for a table without borders (people's tables, the load report). */
export const borderless = {
  top: '',
  'top-mid': '',
  'top-left': '',
  'top-right': '',
  bottom: '',
  'bottom-mid': '',
  'bottom-left': '',
  'bottom-right': '',
  left: '',
  'left-mid': '',
  mid: '',
  'mid-mid': '',
  right: '',
  'right-mid': '',
  middle: '  ',
};

/** Without the padding cli-table3 leaves at the end of each line (noise for `grep` and diffs). */
function trimLines(text: string): string {
  return text
    .split('\n')
    .map((l) => l.trimEnd())
    .join('\n');
}

/** A borderless, uncoloured table with a header row. */
export function printTable(head: readonly string[], rows: readonly (readonly (string | number)[])[]): void {
  const table = new Table({
    head: [...head],
    chars: borderless,
    style: { head: [], border: [], 'padding-left': 0, 'padding-right': 0 },
  });
  for (const row of rows) table.push(row.map((c) => printable(String(c))));
  process.stdout.write(`${trimLines(table.toString())}\n`);
}

/** `key value` lines for one record. */
export function printFields(fields: readonly (readonly [string, string | number])[]): void {
  const table = new Table({
    chars: borderless,
    style: { head: [], border: [], 'padding-left': 0, 'padding-right': 0 },
  });
  for (const [k, v] of fields) table.push([k, printable(String(v))]);
  process.stdout.write(`${trimLines(table.toString())}\n`);
}

/** A sandbox for scripts: the record with `node` (null when it holds none) beside `id` and `state`. */
export function sandboxJson(sb: Sandbox): Record<string, unknown> {
  const { id, state, nodeId, ...rest } = sb;
  return { id, state, node: nodeId ?? null, ...rest };
}

export function nodeJson(n: NodeView): Record<string, unknown> {
  return {
    id: n.id,
    state: n.state,
    capacity: n.spec.capacity,
    allocated: n.allocated,
    free: n.free,
    labels: n.spec.labels,
    ...(n.spec.gpu === undefined ? {} : { gpu: { ...n.spec.gpu, freeMilli: n.gpuFree } }),
  };
}

/** `k=v` for a repeatable `--label`, collected into a record. */
export function labelArg(raw: string, previous: Record<string, string> = {}): Record<string, string> {
  const at = raw.indexOf('=');
  const key = at < 0 ? '' : raw.slice(0, at).trim();
  const value = at < 0 ? '' : raw.slice(at + 1).trim();
  if (key === '' || value === '') throw new InvalidArgumentError(`${JSON.stringify(raw)} is not key=value`);
  if (Object.hasOwn(previous, key)) throw new InvalidArgumentError(`label ${key} is given twice`);
  return { ...previous, [key]: value };
}

/** A request id for `--request-id`: what a retry of the same command must pass again. */
export function requestIdArg(raw: string): string {
  if (!/^[A-Za-z0-9_-]{1,128}$/.test(raw)) {
    throw new InvalidArgumentError(
      `${JSON.stringify(raw)} is not a request id (1..128 letters, digits, '_' or '-')`,
    );
  }
  return raw;
}

/** A percentage with one decimal, or '-' when there is no capacity. */
export function percent(used: number, total: number): string {
  return total === 0 ? '-' : `${((100 * used) / total).toFixed(1)}%`;
}
