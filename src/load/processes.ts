/**
 * The processes a load run starts, each in its own process group (`detached`), so that stopping one kills it
 * and anything it started (`kill(-pgid)`), and a run that ends any way at all — done, failed, Ctrl-C, an
 * uncaught error — leaves nothing behind:
 * - `stopAll` (the normal path) sends SIGTERM to every group and SIGKILL after a grace period;
 * - the first SIGINT/SIGTERM runs the run's cleanup (`onInterrupt`), then exits 130;
 * - a synchronous `exit` hook SIGKILLs every group still alive (the last resort: it cannot wait).
 *
 * It also reads each process's CPU time and resident memory from /proc/<pid>/stat and /proc/<pid>/status.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { assert } from '../lib/assert.js';
import { UnavailableError } from '../lib/errors.js';

/** Lines of a process's output kept for the message when it dies unexpectedly. */
const tailLinesMax = 40;
/** How long a process may take to exit after SIGTERM before its group is killed. */
export const stopGraceMs = 5_000;
/** Polls of /proc while waiting for a SIGSTOP to take effect (5 ms apart: one second). */
const pausePollsMax = 200;

export interface Managed {
  readonly name: string;
  readonly child: ChildProcess;
  /** The process id, which is also its process group id. */
  readonly pid: number;
  readonly tail: readonly string[];
  /** Set once this harness itself kills or stops it: any other exit is the process's own doing. */
  ended: boolean;
}

/** Usage of one process at one moment: total CPU seconds so far and resident memory. */
export interface ProcUsage {
  readonly cpuSeconds: number;
  readonly rssBytes: number;
}

const groups = new Set<number>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // 'exit' handlers run only synchronous code: a crashed run must not leave servers behind.
  process.once('exit', () => {
    for (const pgid of groups) killGroup(pgid, 'SIGKILL');
  });
}

/** Sends `signal` to the whole process group; a group already gone is not an error. */
export function killGroup(pgid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pgid, signal);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
  }
}

export function exited(m: Managed): boolean {
  return m.child.exitCode !== null || m.child.signalCode !== null;
}

/**
 * Spawns `bin args` as the leader of a new process group, tracked until it exits. With `logFile`, its whole
 * output is appended there too (a restarted process appends to the same file), so a stalled run can be read
 * afterwards and not only from the last lines.
 */
export function spawnManaged(
  name: string,
  bin: string,
  args: readonly string[],
  env: NodeJS.ProcessEnv = process.env,
  logFile?: string,
): Managed {
  installExitHook();
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], env, detached: true });
  const pid = child.pid;
  if (pid === undefined) throw new UnavailableError(`could not start ${name} (${bin})`);
  groups.add(pid);
  const tail: string[] = [];
  const keep = (chunk: Buffer): void => {
    tail.push(chunk.toString('utf8'));
    if (tail.length > tailLinesMax) tail.shift();
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  if (logFile !== undefined) {
    const file = createWriteStream(logFile, { flags: 'a' });
    file.on('error', () => undefined); // a log that cannot be written must not end the run
    child.stdout?.pipe(file, { end: false });
    child.stderr?.pipe(file, { end: false });
    child.once('close', () => file.end());
  }
  child.once('exit', () => groups.delete(pid));
  return { name, child, pid, tail, ended: false };
}

/** Resolves once the process has exited (at once when it already has). */
export function whenExited(m: Managed): Promise<void> {
  if (exited(m)) return Promise.resolve();
  return new Promise((resolve) => m.child.once('exit', () => resolve()));
}

/** SIGKILLs the process's group (a crash) and waits for the exit. */
export async function crash(m: Managed): Promise<void> {
  m.ended = true;
  const gone = whenExited(m);
  killGroup(m.pid, 'SIGKILL');
  await gone;
}

/** SIGTERM, then SIGKILL of the group after `graceMs`; resolves once the process is gone. */
export async function stop(m: Managed, graceMs = stopGraceMs): Promise<void> {
  m.ended = true;
  if (exited(m)) {
    killGroup(m.pid, 'SIGKILL'); // anything it left in its group
    return;
  }
  const gone = whenExited(m);
  // A paused process cannot act on SIGTERM.
  killGroup(m.pid, 'SIGCONT');
  killGroup(m.pid, 'SIGTERM');
  const timer = setTimeout(() => killGroup(m.pid, 'SIGKILL'), graceMs);
  await gone;
  clearTimeout(timer);
  killGroup(m.pid, 'SIGKILL');
}

/** Every process group started here that has not exited yet. */
export function liveGroups(): readonly number[] {
  return [...groups];
}

/**
 * SIGSTOPs the process and waits until the kernel reports it stopped (state T): the signal is delivered
 * asynchronously, and work sent in between would still be served.
 */
export async function pause(m: Managed): Promise<void> {
  killGroup(m.pid, 'SIGSTOP');
  for (let i = 0; i < pausePollsMax; i++) {
    const stat = await readFile(`/proc/${m.pid}/stat`, 'utf8').catch(() => '');
    if (stat === '') return; // gone
    if (stat.slice(stat.lastIndexOf(')') + 2).startsWith('T')) return;
    await sleep(5);
  }
  throw new UnavailableError(`process ${m.name} (${m.pid}) did not stop after SIGSTOP`);
}

export function resume(m: Managed): void {
  killGroup(m.pid, 'SIGCONT');
}

/** Clock ticks per second of /proc/<pid>/stat's utime and stime (USER_HZ, 100 on Linux). */
const clockTicksPerSecond = 100;

/** CPU seconds and resident memory of `pid`, or undefined when it is gone. Linux only. */
export async function usageOf(pid: number): Promise<ProcUsage | undefined> {
  try {
    const [stat, status] = await Promise.all([
      readFile(`/proc/${pid}/stat`, 'utf8'),
      readFile(`/proc/${pid}/status`, 'utf8'),
    ]);
    // Fields after the command name (which may hold spaces) start at state, the 3rd field.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const utime = Number(fields[11]);
    const stime = Number(fields[12]);
    assert(Number.isFinite(utime) && Number.isFinite(stime), 'utime and stime are numbers', { pid, stat });
    const rss = /^VmRSS:\s+(\d+) kB$/m.exec(status);
    return { cpuSeconds: (utime + stime) / clockTicksPerSecond, rssBytes: Number(rss?.[1] ?? 0) * 1024 };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ESRCH')
      return undefined;
    throw err;
  }
}

/** True while a process with this pid exists (a zombie counts as gone). */
export async function alive(pid: number): Promise<boolean> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  if (stat === '') return false;
  return !stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
}
