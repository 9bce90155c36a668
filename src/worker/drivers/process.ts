/**
 * The `process` driver: a real child process stands in for the VM. Each sandbox has its own directory
 * under `dataDir/sandboxes/<id>/` holding `spec.json`, a real sparse disk file (`disk.img`, sized from
 * `resources.disk`, no blocks written), the `root/` directory its machine and every exec run in, and
 * `vm.pid`. The machine is `sleep infinity` in its own process group, so stop ends it and anything it
 * started; suspend and resume are SIGSTOP and SIGCONT on that group (same pid afterwards).
 *
 * Machines outlive a crashed worker (they are detached), and `list` finds them again from `vm.pid`,
 * checking that the pid still belongs to the sandbox (its working directory is the sandbox's `root/`), so a
 * recycled pid is never mistaken for a machine.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdir, open, readdir, readFile, readlink, rename, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { assert } from '../../lib/assert.js';
import { sandboxId as parseSandboxId, type SandboxId } from '../../lib/ids.js';
import {
  BoundedBuffer,
  type Driver,
  type DriverCapabilities,
  type ExecRequest,
  type ExecResult,
  execStdinBytesMax,
  type MachineReport,
  type MachineSpec,
  type MachineState,
  parseExecRequest,
} from '../driver.js';
import { DriverError, SandboxNotFoundError, SandboxStateError, WorkerClosedError } from '../errors.js';

/** How long a machine may take to end after SIGTERM before SIGKILL. */
export const processStopGraceMs = 2_000;
/** How long SIGKILL, SIGSTOP or SIGCONT may take to show in /proc before the driver gives up. */
export const processSignalWaitMs = 5_000;
const pollMs = 5;
const mib = 1024 * 1024;

export interface ProcessDriverOptions {
  /** Where sandbox directories live; created if missing. */
  readonly dataDir: string;
}

export class ProcessDriver implements Driver {
  readonly kind = 'process';
  readonly capabilities: DriverCapabilities = {
    suspend: true,
    suspendFreesMemory: false,
    snapshotRestore: false,
    persistent: true,
  };
  readonly execStdinBytesMax = execStdinBytesMax;
  readonly #root: string;
  /** Machines this object spawned: their exit is awaited through the handle rather than by polling. */
  readonly #children = new Map<SandboxId, ChildProcess>();
  #closed = false;

  constructor(options: ProcessDriverOptions) {
    this.#root = resolve(options.dataDir, 'sandboxes');
  }

  /** The sandbox's directory (for tests and operators). */
  sandboxDir(id: SandboxId): string {
    return join(this.#root, id);
  }
  /** The sparse file standing in for the sandbox's disk. */
  diskPath(id: SandboxId): string {
    return join(this.sandboxDir(id), 'disk.img');
  }

  async createDisk(spec: MachineSpec): Promise<void> {
    this.#open();
    const dir = this.sandboxDir(spec.sandboxId);
    if (await exists(join(dir, 'spec.json'))) return;
    try {
      await mkdir(join(dir, 'root'), { recursive: true });
      const disk = await open(this.diskPath(spec.sandboxId), 'w');
      try {
        await disk.truncate(spec.resources.disk * mib);
      } finally {
        await disk.close();
      }
      // spec.json is written last and by rename: its presence means the disk is complete.
      await writeFile(join(dir, 'spec.json.tmp'), JSON.stringify(spec));
      await rename(join(dir, 'spec.json.tmp'), join(dir, 'spec.json'));
    } catch (cause) {
      throw new DriverError('process', 'createDisk', errorText(cause), { cause });
    }
  }

  async boot(spec: MachineSpec): Promise<void> {
    this.#open();
    const id = spec.sandboxId;
    if (!(await exists(join(this.sandboxDir(id), 'spec.json')))) throw new SandboxNotFoundError(id);
    const state = await this.#state(id);
    if (state === 'running') return;
    if (state === 'suspended') throw new SandboxStateError(id, state, 'boot');
    const child = spawn('sleep', ['infinity'], {
      cwd: join(this.sandboxDir(id), 'root'),
      detached: true,
      stdio: 'ignore',
    });
    await new Promise<void>((resolveSpawn, reject) => {
      child.once('spawn', resolveSpawn);
      child.once('error', (cause) => reject(new DriverError('process', 'boot', errorText(cause), { cause })));
    });
    assert(child.pid !== undefined, 'a spawned child has a pid', { id });
    child.unref();
    this.#children.set(id, child);
    child.once('exit', () => {
      if (this.#children.get(id) === child) this.#children.delete(id);
    });
    await writeFile(join(this.sandboxDir(id), 'vm.pid'), String(child.pid));
  }

  async exec(id: SandboxId, request: ExecRequest): Promise<ExecResult> {
    this.#open();
    const req = parseExecRequest(request, this.execStdinBytesMax);
    const state = await this.#state(id);
    if (state === undefined) throw new SandboxNotFoundError(id);
    if (state !== 'running') throw new SandboxStateError(id, state, 'exec');
    return runBounded(req, join(this.sandboxDir(id), 'root'));
  }

  async stop(id: SandboxId): Promise<void> {
    const pid = await this.#livePid(id);
    if (pid !== undefined) await this.#end(id, pid);
    await rm(join(this.sandboxDir(id), 'vm.pid'), { force: true });
  }

  async destroy(id: SandboxId): Promise<void> {
    await this.stop(id);
    await rm(this.sandboxDir(id), { recursive: true, force: true });
  }

  async suspend(id: SandboxId): Promise<void> {
    this.#open();
    const state = await this.#state(id);
    if (state === 'suspended') return;
    if (state === undefined) throw new SandboxNotFoundError(id);
    if (state !== 'running') throw new SandboxStateError(id, state, 'suspend');
    await this.#signalAndWait(id, 'SIGSTOP', 'suspended');
  }

  async resume(id: SandboxId): Promise<void> {
    this.#open();
    const state = await this.#state(id);
    if (state === 'running') return;
    if (state === undefined) throw new SandboxNotFoundError(id);
    if (state !== 'suspended') throw new SandboxStateError(id, state, 'resume');
    await this.#signalAndWait(id, 'SIGCONT', 'running');
  }

  /**
   * The machines in the data directory and their states. A machine whose `vm.pid` is missing or names another
   * process (the file was damaged or edited while the worker was down) is found again by its working
   * directory, and its pid file rewritten, so a restarted worker still reports, stops and reaps it rather
   * than leaving a process nobody owns.
   */
  async list(): Promise<readonly MachineReport[]> {
    const names = await readdir(this.#root).catch(() => [] as string[]);
    const reports: MachineReport[] = [];
    let byRoot: Map<string, number> | undefined;
    for (const name of names) {
      let id: SandboxId;
      try {
        id = parseSandboxId(name);
      } catch {
        continue; // Not a sandbox directory; the driver never makes such names.
      }
      let state = await this.#state(id);
      if (state === 'stopped') {
        byRoot ??= await machinesByRoot();
        const pid = byRoot.get(join(this.sandboxDir(id), 'root'));
        if (pid !== undefined) {
          await writeFile(join(this.sandboxDir(id), 'vm.pid'), String(pid));
          state = await this.#state(id);
        }
      }
      if (state !== undefined) reports.push({ sandboxId: id, state });
    }
    return reports;
  }

  async close(): Promise<void> {
    this.#closed = true;
    for (const { sandboxId, state } of await this.list()) {
      if (state !== 'stopped') await this.stop(sandboxId);
    }
  }

  /** The pid of the sandbox's machine, when one is alive and really is that sandbox's. */
  async machinePid(id: SandboxId): Promise<number | undefined> {
    return this.#livePid(id);
  }

  #open(): void {
    if (this.#closed) throw new WorkerClosedError('the process driver is closed');
  }

  async #state(id: SandboxId): Promise<MachineState | undefined> {
    if (!(await exists(join(this.sandboxDir(id), 'spec.json')))) return undefined;
    const pid = await this.#livePid(id);
    if (pid === undefined) return 'stopped';
    return (await procState(pid)) === 'T' ? 'suspended' : 'running';
  }

  async #livePid(id: SandboxId): Promise<number | undefined> {
    const text = await readFile(join(this.sandboxDir(id), 'vm.pid'), 'utf8').catch(() => undefined);
    const pid = text === undefined ? Number.NaN : Number(text.trim());
    if (!Number.isInteger(pid) || pid <= 1) return undefined;
    const cwd = await readlink(`/proc/${pid}/cwd`).catch(() => undefined);
    if (cwd !== join(this.sandboxDir(id), 'root')) return undefined;
    const st = await procState(pid);
    return st === undefined || st === 'Z' ? undefined : pid;
  }

  async #end(id: SandboxId, pid: number): Promise<void> {
    const child = this.#children.get(id);
    const exited =
      child === undefined
        ? undefined
        : child.exitCode !== null || child.signalCode !== null
          ? Promise.resolve()
          : new Promise((r) => child.once('exit', r));
    killGroup(pid, 'SIGTERM');
    killGroup(pid, 'SIGCONT'); // A stopped process acts on SIGTERM only once continued.
    if (await this.#gone(id, exited, processStopGraceMs)) return;
    killGroup(pid, 'SIGKILL');
    if (await this.#gone(id, exited, processSignalWaitMs)) return;
    throw new DriverError('process', 'stop', `pid ${pid} still alive after SIGKILL`);
  }

  async #gone(id: SandboxId, exited: Promise<unknown> | undefined, waitMs: number): Promise<boolean> {
    if (exited !== undefined) {
      const timer = sleep(waitMs).then(() => false);
      return Promise.race([exited.then(() => true), timer]);
    }
    for (let waited = 0; waited < waitMs; waited += pollMs) {
      if ((await this.#livePid(id)) === undefined) return true;
      await sleep(pollMs);
    }
    return (await this.#livePid(id)) === undefined;
  }

  async #signalAndWait(id: SandboxId, signal: NodeJS.Signals, want: MachineState): Promise<void> {
    const pid = await this.#livePid(id);
    if (pid === undefined)
      throw new SandboxStateError(id, 'stopped', signal === 'SIGSTOP' ? 'suspend' : 'resume');
    killGroup(pid, signal);
    for (let waited = 0; waited < processSignalWaitMs; waited += pollMs) {
      if ((await this.#state(id)) === want) return;
      await sleep(pollMs);
    }
    throw new DriverError(
      'process',
      signal === 'SIGSTOP' ? 'suspend' : 'resume',
      `pid ${pid} did not become ${want}`,
    );
  }
}

/** Runs one exec: bounded output, stdin written then closed, the process group killed at the timeout. */
function runBounded(req: ExecRequest, cwd: string): Promise<ExecResult> {
  return new Promise((resolveRun) => {
    const out = new BoundedBuffer(req.outputBytesMax);
    const err = new BoundedBuffer(req.outputBytesMax);
    const [program, ...args] = req.command as [string, ...string[]];
    const child = spawn(program, args, { cwd, detached: true, stdio: ['pipe', 'pipe', 'pipe'] });
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      if (child.pid !== undefined) killGroup(child.pid, 'SIGKILL');
    }, req.timeoutMs);
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    child.stdin.on('error', () => {}); // The command may exit without reading its stdin.
    child.stdin.end(req.stdin === undefined ? undefined : Buffer.from(req.stdin));
    const finish = (exitCode: number | null, signal: string | null): void => {
      clearTimeout(timer);
      resolveRun({
        exitCode,
        signal,
        stdout: out.bytes(),
        stderr: err.bytes(),
        stdoutTruncated: out.truncated,
        stderrTruncated: err.truncated,
        timedOut,
      });
    };
    child.once('error', (cause) => {
      // The program could not be started (as a shell says for a missing command: exit 127).
      err.push(Buffer.from(`${program}: ${errorText(cause)}\n`));
      finish(127, null);
    });
    child.once('close', (code, signal) => finish(code, signal));
  });
}

function killGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // Already gone: the caller checks /proc, not this call, to know.
  }
}

/**
 * Live process-group leaders by working directory: a machine is `sleep infinity` leading its own group in
 * its sandbox's `root` (what `#livePid` checks), so this finds one whose pid file no longer names it.
 */
async function machinesByRoot(): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const name of await readdir('/proc').catch(() => [] as string[])) {
    const pid = Number(name);
    if (!Number.isInteger(pid) || pid <= 1) continue;
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
    if (stat === undefined) continue;
    // After the command name's ')': state, ppid, pgrp.
    const [state, , pgrp] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (state === 'Z' || Number(pgrp) !== pid) continue;
    const cwd = await readlink(`/proc/${pid}/cwd`).catch(() => undefined);
    if (cwd !== undefined) out.set(cwd, pid);
  }
  return out;
}

/** The one-letter state in /proc/<pid>/stat (R, S, T, Z, ...), or undefined when there is no such pid. */
async function procState(pid: number): Promise<string | undefined> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
  if (stat === undefined) return undefined;
  // The command name is in parentheses and may contain spaces; the state follows the last ')'.
  return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
}

async function exists(path: string): Promise<boolean> {
  return readFile(path).then(
    () => true,
    () => false,
  );
}

function errorText(cause: unknown): string {
  return cause instanceof Error ? cause.message : String(cause);
}
