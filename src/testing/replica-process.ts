/**
 * Starts `trellis server` replicas as child processes (the built CLI under dist/), for integration tests and
 * benchmarks that need a real multi-process group. Logs go nowhere unless asked; stop with `stopReplica`
 * (SIGTERM, waits for the exit) or `child.kill('SIGKILL')` for a crash.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { dirname, join, sep } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
/** The built CLI entry (`npm run build` makes it), whether this module runs built or from source. */
export const cliMain = here.includes(`${sep}dist${sep}`)
  ? join(here, '..', 'cli', 'main.js')
  : join(here, '..', '..', 'dist', 'src', 'cli', 'main.js');

export interface ReplicaProcessOptions {
  readonly id: string;
  /** Voters on first start (for a joining replica: the current voters, without itself). */
  readonly peers: readonly string[];
  readonly natsUrl: string;
  /** The parent of the replica's data directory; the replica uses `<root>/<id>`. */
  readonly root: string;
  readonly cluster: string;
  readonly tickMs?: number;
  readonly snapshotEntries?: number;
  /** The CLI to run. Default: the built one beside this module. */
  readonly main?: string;
  readonly logLevel?: string;
  /** What the group replicates: `kv` (the default here, for the KV-based tests and benches) or `scheduler`. */
  readonly state?: 'kv' | 'scheduler';
  readonly extraArgs?: readonly string[];
}

export function spawnReplica(o: ReplicaProcessOptions): ChildProcess {
  const args = [
    o.main ?? cliMain,
    'server',
    '--id',
    o.id,
    '--peers',
    o.peers.join(','),
    '--nats',
    o.natsUrl,
    '--data',
    join(o.root, o.id),
    '--cluster',
    o.cluster,
    '--tick-ms',
    String(o.tickMs ?? 20),
    ...(o.snapshotEntries === undefined ? [] : ['--snapshot-entries', String(o.snapshotEntries)]),
    '--state',
    o.state ?? 'kv',
    ...(o.extraArgs ?? []),
  ];
  return spawn(process.execPath, args, {
    stdio: ['ignore', 'ignore', 'ignore'],
    env: { ...process.env, TRELLIS_LOG_LEVEL: o.logLevel ?? 'warn' },
  });
}

/** SIGTERM, then waits for the exit; resolves with the exit code. A replica already gone resolves at once. */
export async function stopReplica(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  child.kill('SIGTERM');
  return exited;
}

/**
 * SIGSTOP, then waits until the kernel reports the process stopped (state T in /proc/<pid>/stat): the
 * signal is delivered asynchronously, and a request sent in between would be served before the stall.
 * Linux only. Continue it with `child.kill('SIGCONT')`.
 */
export async function pauseProcess(child: ChildProcess): Promise<void> {
  child.kill('SIGSTOP');
  for (let i = 0; i < pauseWaitPollsMax; i++) {
    const stat = await readFile(`/proc/${child.pid}/stat`, 'utf8');
    if (stat.slice(stat.lastIndexOf(')') + 2).startsWith('T')) return;
    await sleep(5);
  }
  throw new Error(`process ${child.pid} did not stop after SIGSTOP`);
}
/** Polls of 5 ms `pauseProcess` makes before giving up (a second). */
const pauseWaitPollsMax = 200;
