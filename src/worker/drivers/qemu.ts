/**
 * The `qemu` driver: a real microVM per sandbox (`qemu-system-x86_64 -M microvm`), booted from the kernel
 * and initramfs that scripts/build-guest.sh makes from Debian packages, with a guest agent on the serial
 * console for exec (guest/init.sh describes the framing).
 *
 * Fast path, snapshot restore. For each machine shape (memory, vCPUs) a template VM is booted once over its
 * own overlay of the base image; once its agent is ready it is paused and its state saved (QMP `stop` +
 * `migrate "exec:cat > state"`), and the template overlay is frozen. Each sandbox's disk is a qcow2 overlay
 * on the frozen template overlay, so the disk the restored memory expects is exactly the disk at save time;
 * boot starts QEMU with `-S -incoming "exec:cat state"`, waits for the incoming migration, then `cont`.
 * Suspend saves the state next to the sandbox's overlay and ends QEMU (no memory held); resume restores it.
 *
 * Warm QEMU processes. Starting QEMU and connecting its sockets is the largest part of a restore (~140 ms of
 * ~250 idle). So per (shape, disk size) a few QEMU processes are started ahead, each over its own empty
 * overlay and waiting with `-incoming defer`; a create renames such an overlay into the sandbox directory (the
 * process keeps its open file) and the boot only runs `migrate-incoming` and `cont`. The overlay is hard-linked,
 * not moved: QEMU reopens its images by path when the restored VM is let run, so `warm/w<n>.qcow2` must stay
 * until that QEMU ends (`vm.warm` in the sandbox names it for removal then). A warm process names itself with
 * `-name trellis-warm-<tag>`; the sandbox records the tag (`vm.name`) so its QEMU is still recognised after a
 * worker restart, though its command line names the warm path. A warm process that was never adopted is
 * ended on close and, after a crash, by the next `prepare()` (its pid file `warm/w<n>.pid` says so; an adopted
 * one's pid file is removed when it is booted).
 *
 * Layout under `dataDir`: `templates/<shape>/{template.qcow2,state,ready}` and
 * `sandboxes/<id>/{spec.json,disk.qcow2,vm.pid,qemu.log,suspend.state}`. Sockets (QMP and the serial
 * console) live in a short run directory (unix socket paths are limited to 107 bytes); their paths are
 * kept in the sandbox directory so a restarted worker can reach a VM that outlived it.
 *
 * Acceleration: KVM only where the CPU exposes vmx/svm and /dev/kvm opens; otherwise TCG, said once in the
 * log (on these machines /dev/kvm is a software nested driver that stock kernels crash on).
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { closeSync, constants, existsSync, openSync, readFileSync } from 'node:fs';
import {
  chmod,
  link,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  rename,
  rm,
  stat,
  writeFile,
} from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { findBinary } from '../../binaries.js';
import { assert } from '../../lib/assert.js';
import { UnavailableError } from '../../lib/errors.js';
import { sandboxId as parseSandboxId, type SandboxId } from '../../lib/ids.js';
import type { Logger } from '../../log.js';
import { silentLogger } from '../../log.js';
import {
  type Driver,
  type DriverCapabilities,
  type ExecRequest,
  type ExecResult,
  type MachineReport,
  type MachineSpec,
  type MachineState,
  parseExecRequest,
  vcpusFor,
} from '../driver.js';
import { DriverError, SandboxNotFoundError, SandboxStateError, WorkerClosedError } from '../errors.js';
import { BoundedSlots } from '../slots.js';
import { LineSocket } from './qemu/lines.js';
import { Qmp } from './qemu/qmp.js';

const run = promisify(execFile);

/** A cold boot under TCG takes ~3 s idle and far longer on a loaded 2-core machine. */
export const qemuBootTimeoutMs = 120_000;
/** Saving or loading a state file (~60 MB for 128 MB of guest memory). */
export const qemuMigrateTimeoutMs = 120_000;
/** How long QEMU may take to exit after `quit` (then SIGKILL). */
export const qemuQuitGraceMs = 5_000;
/** Exec replies may lag the command's own timeout by this much (the console is slow under TCG). */
export const qemuExecGraceMs = 10_000;
/** Stdin travels base64 on one console line; keep it small. */
export const qemuExecStdinBytesMax = 64 << 10;
/** Guest memory is rounded up to a multiple of this, so few shapes need their own template. */
export const qemuMemoryStepMib = 128;
/**
 * Empty overlays kept ready per (backing file, size): a create renames one into the sandbox directory
 * instead of running qemu-img on the create path, and the spare is remade in the background.
 */
export const qemuSpareOverlaysMax = 2;
/** QEMU processes kept started and waiting for an incoming state, per (shape, disk size). */
export const qemuWarmVmsMax = 2;
const migratePollMs = 10;
const mib = 1024 * 1024;

export type Accel = 'kvm' | 'tcg';

export interface QemuDriverOptions {
  readonly dataDir: string;
  /** Built guest artifacts (vmlinux, initramfs.cpio, base.img); built on first use when missing. */
  readonly guestDir?: string;
  readonly accel?: Accel | 'auto';
  /** Restore from a template snapshot (default) or boot every sandbox cold. */
  readonly snapshotRestore?: boolean;
  /** Keep QEMU processes started ahead for restores (default true; only with snapshotRestore). */
  readonly warmVms?: boolean;
  /** QEMU boots or restores at once in this driver; the rest queue. CPU-bound under TCG. */
  readonly bootsConcurrentMax?: number;
  readonly logger?: Logger;
  /** Told how long each phase of a boot, restore, suspend or create took (the benchmark's breakdown). */
  readonly onPhase?: (phase: string, ms: number) => void;
}

interface Vm {
  readonly child: ChildProcess | undefined;
  readonly pid: number;
  readonly qmp: Qmp;
  readonly console: LineSocket;
  /** Where QMP and the serial console listen (kept in the sandbox directory for a restarted worker). */
  readonly sockets: { readonly qmp: string; readonly serial: string };
  /** Serialises exec requests: the agent serves one at a time. */
  execTail: Promise<unknown>;
}

/** A QEMU process started ahead over its own overlay, waiting for `migrate-incoming`. */
interface WarmVm {
  readonly vm: Vm;
  readonly name: string;
  readonly overlay: string;
  readonly logPath: string;
  readonly pidPath: string;
}

interface Shape {
  readonly memoryMib: number;
  readonly vcpus: number;
}

let accelDecision: { accel: Accel; reason: string } | undefined;

/** Decides KVM or TCG once per process and says why. */
export function detectAccel(): { accel: Accel; reason: string } {
  if (accelDecision !== undefined) return accelDecision;
  const cpu = existsSync('/proc/cpuinfo') ? readFileSync('/proc/cpuinfo', 'utf8') : '';
  const virt = /\b(vmx|svm)\b/.test(cpu);
  let kvmOpens = false;
  try {
    closeSync(openSync('/dev/kvm', constants.O_RDWR));
    kvmOpens = true;
  } catch {}
  accelDecision =
    virt && kvmOpens
      ? { accel: 'kvm', reason: 'the CPU has vmx/svm and /dev/kvm opens' }
      : {
          accel: 'tcg',
          reason: kvmOpens
            ? '/dev/kvm exists but the CPU exposes no vmx/svm (software nested KVM; guests crash on it)'
            : '/dev/kvm is not available',
        };
  return accelDecision;
}

/** The repository's scripts/build-guest.sh, found from this file in src/ or dist/src/. */
function buildScript(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    const candidate = join(dir, 'scripts', 'build-guest.sh');
    if (existsSync(candidate)) return candidate;
    dir = dirname(dir);
  }
  throw new UnavailableError('scripts/build-guest.sh not found next to the installed package');
}

/** Builds the guest artifacts into `dir` unless they are there already (the script checks its stamp). */
export async function ensureGuest(dir: string): Promise<void> {
  if (existsSync(join(dir, 'stamp'))) return;
  try {
    await run('bash', [buildScript(), dir], { maxBuffer: 1 << 20 });
  } catch (cause) {
    const stderr = (cause as { stderr?: string }).stderr ?? '';
    throw new UnavailableError(
      `building the qemu guest failed: ${stderr.trim().split('\n').slice(-3).join(' | ')}`,
      {
        cause,
      },
    );
  }
}

export function defaultGuestDir(): string {
  return join(dirname(dirname(buildScript())), '.cache', 'guest');
}

export class QemuDriver implements Driver {
  readonly kind = 'qemu';
  readonly capabilities: DriverCapabilities;
  readonly execStdinBytesMax = qemuExecStdinBytesMax;
  readonly #root: string;
  readonly #guestDir: string;
  readonly #accel: Accel;
  readonly #restore: boolean;
  readonly #log: Logger;
  readonly #boots: BoundedSlots;
  readonly #onPhase: (phase: string, ms: number) => void;
  readonly #vms = new Map<SandboxId, Vm>();
  readonly #templates = new Map<string, Promise<string>>();
  readonly #spares = new Map<string, string[]>();
  readonly #refills = new Map<string, Promise<void>>();
  readonly #warmOn: boolean;
  readonly #warm = new Map<string, WarmVm[]>();
  readonly #warmRefills = new Map<string, Promise<void>>();
  /** Warm processes given to a sandbox by createDisk and not yet booted. */
  readonly #adopted = new Map<SandboxId, WarmVm>();
  #runDir: string | undefined;
  #seq = 0;
  #qemu = '';
  #qemuImg = '';
  #khz = 0;
  #closed = false;

  constructor(options: QemuDriverOptions) {
    this.#root = resolve(options.dataDir);
    this.#guestDir = options.guestDir ?? defaultGuestDir();
    this.#log = options.logger ?? silentLogger();
    this.#restore = options.snapshotRestore ?? true;
    this.#warmOn = this.#restore && (options.warmVms ?? true);
    this.#onPhase = options.onPhase ?? (() => {});
    const wanted = options.accel ?? 'auto';
    if (wanted === 'auto') {
      const d = detectAccel();
      this.#accel = d.accel;
      this.#log.info({ accel: d.accel, reason: d.reason }, 'qemu acceleration chosen');
    } else {
      this.#accel = wanted;
    }
    this.#boots = new BoundedSlots('qemu boots', options.bootsConcurrentMax ?? 2, 100_000);
    this.capabilities = {
      suspend: true,
      suspendFreesMemory: true,
      snapshotRestore: this.#restore,
      persistent: true,
    };
  }

  get accel(): Accel {
    return this.#accel;
  }

  /** Finds QEMU, builds the guest if needed, makes the run directory. Idempotent; the first op calls it. */
  async prepare(): Promise<void> {
    if (this.#runDir !== undefined) return;
    this.#qemu = findBinary('qemu-system-x86_64', 'qemu-system-x86');
    this.#qemuImg = findBinary('qemu-img', 'qemu-utils');
    await ensureGuest(this.#guestDir);
    const cpu = readFileSync('/proc/cpuinfo', 'utf8').match(/cpu MHz\s*:\s*([\d.]+)/);
    this.#khz = cpu === null ? 0 : Math.round(Number(cpu[1]) * 1000);
    await mkdir(join(this.#root, 'sandboxes'), { recursive: true });
    // Spares left by a previous worker process are not tracked by this one: start the pool afresh, ending
    // the warm QEMU processes it left waiting.
    await endLeftoverWarm(join(this.#root, 'warm'));
    await mkdir(join(this.#root, 'warm'), { recursive: true });
    await rm(join(this.#root, 'spares'), { recursive: true, force: true });
    await mkdir(join(this.#root, 'spares'), { recursive: true });
    this.#runDir ??= await mkdtemp('/tmp/trq-');
  }

  sandboxDir(id: SandboxId): string {
    return join(this.#root, 'sandboxes', id);
  }
  diskPath(id: SandboxId): string {
    return join(this.sandboxDir(id), 'disk.qcow2');
  }

  async createDisk(spec: MachineSpec): Promise<void> {
    this.#open();
    await this.prepare();
    const dir = this.sandboxDir(spec.sandboxId);
    if (existsSync(join(dir, 'spec.json'))) return;
    await this.#wrap('createDisk', async () => {
      await mkdir(dir, { recursive: true });
      const sizeBytes = Math.max(spec.resources.disk * mib, await this.#baseBytes());
      const backing = this.#restore
        ? ['-F', 'qcow2', '-b', await this.#template(shapeOf(spec))]
        : ['-F', 'raw', '-b', join(this.#guestDir, 'base.img')];
      const t0 = performance.now();
      const warm = this.#takeWarm(spec, backing, sizeBytes);
      if (warm !== undefined) {
        // The sandbox's disk is a second name of the warm overlay (QEMU keeps the first; see the header).
        // A disk left by an earlier, interrupted create is replaced; a failure ends the warm process.
        const disk = this.diskPath(spec.sandboxId);
        try {
          await rm(disk, { force: true });
          await link(warm.overlay, disk);
        } catch (err) {
          await this.#quitWarm(warm);
          throw err;
        }
        await rename(warm.logPath, join(dir, 'qemu.log')).catch(() => undefined);
        this.#adopted.set(spec.sandboxId, warm);
      } else {
        await this.#overlay(backing, sizeBytes, this.diskPath(spec.sandboxId));
      }
      this.#onPhase('overlay', performance.now() - t0);
      await writeFile(join(dir, 'spec.json.tmp'), JSON.stringify(spec));
      await rename(join(dir, 'spec.json.tmp'), join(dir, 'spec.json'));
    });
  }

  async boot(spec: MachineSpec): Promise<void> {
    this.#open();
    await this.prepare();
    const id = spec.sandboxId;
    const state = await this.#state(id);
    if (state === undefined) throw new SandboxNotFoundError(id);
    if (state === 'running') return;
    if (state === 'suspended') throw new SandboxStateError(id, state, 'boot');
    await this.#boots.run(() =>
      this.#wrap('boot', async () => {
        if (this.#restore) {
          const state = join(this.#templateDir(shapeOf(spec)), 'state');
          const warm = this.#adopted.get(id);
          this.#adopted.delete(id);
          if (warm !== undefined && alive(warm.vm)) await this.#restoreWarm(id, warm, state);
          else await this.#restoreFrom(id, shapeOf(spec), state);
        } else {
          const vm = await this.#start(id, shapeOf(spec), this.diskPath(id), undefined);
          await this.#awaitReady(vm);
        }
      }),
    );
  }

  async exec(id: SandboxId, request: ExecRequest): Promise<ExecResult> {
    this.#open();
    const req = parseExecRequest(request, this.execStdinBytesMax);
    const state = await this.#state(id);
    if (state === undefined) throw new SandboxNotFoundError(id);
    if (state !== 'running') throw new SandboxStateError(id, state, 'exec');
    const vm = await this.#attach(id);
    const result = vm.execTail.then(() => this.#execOn(vm, req));
    vm.execTail = result.catch(() => undefined);
    return result;
  }

  async stop(id: SandboxId): Promise<void> {
    const warm = this.#adopted.get(id);
    if (warm !== undefined) {
      this.#adopted.delete(id);
      await this.#quitWarm(warm);
    }
    await this.#wrap('stop', async () => {
      const pid = await this.#livePid(id);
      if (pid !== undefined) await this.#quit(id, pid);
      await rm(join(this.sandboxDir(id), 'vm.pid'), { force: true });
      await this.#dropWarmLink(id);
    });
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
    await this.#wrap('suspend', async () => {
      const vm = await this.#attach(id);
      await vm.execTail; // Let a running exec finish before the VM is frozen.
      const target = join(this.sandboxDir(id), 'suspend.state');
      const t0 = performance.now();
      await this.#save(vm, `${target}.tmp`);
      const t1 = performance.now();
      this.#onPhase('save', t1 - t0);
      await this.#quit(id, vm.pid);
      this.#onPhase('quit', performance.now() - t1);
      await rename(`${target}.tmp`, target);
      await rm(join(this.sandboxDir(id), 'vm.pid'), { force: true });
      await this.#dropWarmLink(id);
    });
  }

  async resume(id: SandboxId): Promise<void> {
    this.#open();
    await this.prepare();
    const state = await this.#state(id);
    if (state === 'running') return;
    if (state === undefined) throw new SandboxNotFoundError(id);
    if (state !== 'suspended') throw new SandboxStateError(id, state, 'resume');
    const spec = await this.#spec(id);
    await this.#boots.run(() =>
      this.#wrap('resume', async () => {
        const saved = join(this.sandboxDir(id), 'suspend.state');
        await this.#restoreFrom(id, shapeOf(spec), saved);
        // Only once the VM runs again is the saved state let go; a crash before this leaves it suspended.
        await rm(saved, { force: true });
      }),
    );
  }

  /**
   * The machines in the data directory and their states. A QEMU whose `vm.pid` is missing or names another
   * process (the file was damaged or edited while the worker was down) is found again by its command line
   * (the sandbox's disk, or its warm name), and its pid file rewritten, so a restarted worker still reports,
   * stops and reaps it rather than leaving a VM nobody owns.
   */
  async list(): Promise<readonly MachineReport[]> {
    const names = await readdir(join(this.#root, 'sandboxes')).catch(() => [] as string[]);
    const reports: MachineReport[] = [];
    let cmdlines: [number, string][] | undefined;
    for (const name of names) {
      let id: SandboxId;
      try {
        id = parseSandboxId(name);
      } catch {
        continue;
      }
      let state = await this.#state(id);
      if (state === 'stopped' || state === 'suspended') {
        cmdlines ??= await liveCmdlines();
        const vmName = await readFile(join(this.sandboxDir(id), 'vm.name'), 'utf8').catch(() => undefined);
        const disk = this.diskPath(id);
        const found = cmdlines.find(
          ([, c]) => c.includes(disk) || (vmName !== undefined && c.includes(`\0${vmName.trim()}\0`)),
        );
        if (found !== undefined) {
          await writeFile(join(this.sandboxDir(id), 'vm.pid'), String(found[0]));
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
      if (state === 'running') await this.stop(sandboxId);
    }
    await Promise.all(this.#refills.values());
    await Promise.all(this.#warmRefills.values());
    const waiting = [...this.#adopted.values(), ...[...this.#warm.values()].flat()];
    this.#adopted.clear();
    this.#warm.clear();
    await Promise.all(waiting.map((w) => this.#quitWarm(w)));
    await rm(join(this.#root, 'spares'), { recursive: true, force: true });
    await rm(join(this.#root, 'warm'), { recursive: true, force: true });
    if (this.#runDir !== undefined) await rm(this.#runDir, { recursive: true, force: true });
  }

  /** Puts an empty overlay of `sizeBytes` over `backing` at `target`: a ready spare when there is one. */
  async #overlay(backing: readonly string[], sizeBytes: number, target: string): Promise<void> {
    const key = `${backing.join(' ')}|${sizeBytes}`;
    const spare = this.#spares.get(key)?.shift();
    if (spare !== undefined) await rename(spare, target);
    else await this.#qemuImgCreate(backing, sizeBytes, target);
    this.#refill(key, backing, sizeBytes);
  }

  /** Remakes the spares of one kind in the background (one refill per kind at a time). */
  #refill(key: string, backing: readonly string[], sizeBytes: number): void {
    if (this.#refills.has(key) || this.#closed) return;
    const refill = (async () => {
      try {
        while (!this.#closed && (this.#spares.get(key)?.length ?? 0) < qemuSpareOverlaysMax) {
          const path = join(this.#root, 'spares', `${this.#seq++}.qcow2`);
          await this.#qemuImgCreate(backing, sizeBytes, path);
          const ready = this.#spares.get(key) ?? [];
          ready.push(path);
          this.#spares.set(key, ready);
        }
      } catch (err) {
        // Spares are an optimisation: a create without one runs qemu-img itself.
        this.#log.warn(
          { err: err instanceof Error ? err.message : String(err) },
          'qemu spare overlay failed',
        );
      } finally {
        this.#refills.delete(key);
      }
    })();
    this.#refills.set(key, refill);
  }

  async #qemuImgCreate(backing: readonly string[], sizeBytes: number, target: string): Promise<void> {
    await run(this.#qemuImg, ['create', '-q', '-f', 'qcow2', ...backing, target, String(sizeBytes)]);
  }

  /** The pids of the warm QEMU processes waiting now (tests check they are used and ended). */
  warmPids(): number[] {
    return [...this.#warm.values()].flat().map((w) => w.vm.pid);
  }

  /** The QEMU pid of a running sandbox (tests check the process really ends). */
  machinePid(id: SandboxId): Promise<number | undefined> {
    return this.#livePid(id);
  }

  /** Boots the template of a shape cold, if not done yet; returns its frozen overlay. Timed by the bench. */
  async template(shape: Shape): Promise<string> {
    await this.prepare();
    return this.#template(shape);
  }

  #open(): void {
    if (this.#closed) throw new WorkerClosedError('the qemu driver is closed');
  }

  async #wrap<T>(operation: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (cause) {
      if (cause instanceof DriverError || cause instanceof UnavailableError) throw cause;
      throw new DriverError('qemu', operation, cause instanceof Error ? cause.message : String(cause), {
        cause,
      });
    }
  }

  /** The base image is raw, so its virtual size is its file size (no qemu-img process per create). */
  async #baseBytes(): Promise<number> {
    return (await stat(join(this.#guestDir, 'base.img'))).size;
  }

  #templateDir(shape: Shape): string {
    return join(this.#root, 'templates', `m${shape.memoryMib}-c${shape.vcpus}`);
  }

  #template(shape: Shape): Promise<string> {
    const key = `m${shape.memoryMib}-c${shape.vcpus}`;
    let made = this.#templates.get(key);
    if (made === undefined) {
      made = this.#makeTemplate(shape);
      this.#templates.set(key, made);
      made.catch(() => this.#templates.delete(key)); // A failed template build is tried again next time.
    }
    return made;
  }

  async #makeTemplate(shape: Shape): Promise<string> {
    const dir = this.#templateDir(shape);
    const overlay = join(dir, 'template.qcow2');
    if (existsSync(join(dir, 'ready'))) return overlay;
    await rm(dir, { recursive: true, force: true });
    await mkdir(dir, { recursive: true });
    await run(this.#qemuImg, [
      'create',
      '-q',
      '-f',
      'qcow2',
      '-F',
      'raw',
      '-b',
      join(this.#guestDir, 'base.img'),
      overlay,
    ]);
    const startedMs = performance.now();
    const vm = await this.#start(undefined, shape, overlay, undefined, dir);
    try {
      await this.#awaitReady(vm);
      const bootMs = performance.now() - startedMs;
      await this.#save(vm, join(dir, 'state'));
      this.#log.info({ shape, bootMs: Math.round(bootMs) }, 'qemu template booted and saved');
    } finally {
      await this.#quitVm(vm);
    }
    await chmod(overlay, 0o444); // Frozen: every sandbox overlay depends on it being what the state saw.
    await writeFile(join(dir, 'ready'), '');
    return overlay;
  }

  /** Starts QEMU restoring `stateFile` over the sandbox's overlay, then lets it run. */
  async #restoreFrom(id: SandboxId, shape: Shape, stateFile: string): Promise<void> {
    const t0 = performance.now();
    const vm = await this.#start(id, shape, this.diskPath(id), stateFile);
    const t1 = performance.now();
    this.#onPhase('spawn+connect', t1 - t0);
    await this.#awaitIncoming(vm);
    const t2 = performance.now();
    this.#onPhase('incoming', t2 - t1);
    await vm.qmp.execute('cont');
    this.#onPhase('cont', performance.now() - t2);
  }

  /** A warm process for this sandbox's shape and disk size, if one waits; starts refilling either way. */
  #takeWarm(spec: MachineSpec, backing: readonly string[], sizeBytes: number): WarmVm | undefined {
    if (!this.#warmOn) return undefined;
    const shape = shapeOf(spec);
    const key = `m${shape.memoryMib}-c${shape.vcpus}|${sizeBytes}`;
    const ready = this.#warm.get(key) ?? [];
    let taken: WarmVm | undefined;
    while (taken === undefined && ready.length > 0) {
      const next = ready.shift() as WarmVm;
      if (alive(next.vm)) taken = next;
      else void this.#quitWarm(next);
    }
    this.#refillWarm(key, shape, backing, sizeBytes);
    return taken;
  }

  /** Starts warm processes of one kind in the background up to the bound (one refill per kind at a time). */
  #refillWarm(key: string, shape: Shape, backing: readonly string[], sizeBytes: number): void {
    if (this.#warmRefills.has(key) || this.#closed) return;
    const refill = (async () => {
      try {
        while (!this.#closed && (this.#warm.get(key)?.length ?? 0) < qemuWarmVmsMax) {
          const warm = await this.#startWarm(shape, backing, sizeBytes);
          if (this.#closed) {
            await this.#quitWarm(warm);
            return;
          }
          const ready = this.#warm.get(key) ?? [];
          ready.push(warm);
          this.#warm.set(key, ready);
        }
      } catch (err) {
        // Warm processes are an optimisation: a create without one starts QEMU itself.
        this.#log.warn({ err: err instanceof Error ? err.message : String(err) }, 'qemu warm start failed');
      } finally {
        this.#warmRefills.delete(key);
      }
    })();
    this.#warmRefills.set(key, refill);
  }

  async #startWarm(shape: Shape, backing: readonly string[], sizeBytes: number): Promise<WarmVm> {
    const warmDir = join(this.#root, 'warm');
    const n = this.#seq++;
    const overlay = join(warmDir, `w${n}.qcow2`);
    await this.#qemuImgCreate(backing, sizeBytes, overlay);
    const name = `trellis-warm-${process.pid}-${n}-${Math.random().toString(36).slice(2, 10)}`;
    const logPath = join(warmDir, `w${n}.log`);
    const pidPath = join(warmDir, `w${n}.pid`);
    const vm = await this.#start(undefined, shape, overlay, deferIncoming, warmDir, {
      name,
      logPath,
      pidPath,
    });
    return { vm, name, overlay, logPath, pidPath };
  }

  /** Restores `stateFile` into a warm process already holding the sandbox's overlay, then lets it run. */
  async #restoreWarm(id: SandboxId, warm: WarmVm, stateFile: string): Promise<void> {
    const dir = this.sandboxDir(id);
    const { vm } = warm;
    await writeFile(join(dir, 'vm.name'), warm.name);
    await writeFile(join(dir, 'vm.warm'), warm.overlay);
    await writeFile(join(dir, 'sockets.json'), JSON.stringify(vm.sockets));
    await writeFile(join(dir, 'vm.pid'), String(vm.pid));
    // No longer a waiting process: a restarted worker must not end it as a leftover.
    await rm(warm.pidPath, { force: true });
    this.#vms.set(id, vm);
    const t1 = performance.now();
    this.#onPhase('spawn+connect', 0);
    await vm.qmp.execute('migrate-incoming', { uri: `exec:cat ${shellQuote(stateFile)}` });
    await this.#awaitIncoming(vm);
    const t2 = performance.now();
    this.#onPhase('incoming', t2 - t1);
    await vm.qmp.execute('cont');
    this.#onPhase('cont', performance.now() - t2);
  }

  /** Once a sandbox's QEMU has ended, the warm path its image was opened by is no longer needed. */
  async #dropWarmLink(id: SandboxId): Promise<void> {
    const dir = this.sandboxDir(id);
    const warmPath = await readFile(join(dir, 'vm.warm'), 'utf8').catch(() => undefined);
    if (warmPath?.startsWith(join(this.#root, 'warm'))) await rm(warmPath, { force: true });
    await rm(join(dir, 'vm.warm'), { force: true });
    await rm(join(dir, 'vm.name'), { force: true });
  }

  async #quitWarm(warm: WarmVm): Promise<void> {
    await this.#quitVm(warm.vm);
    await rm(warm.overlay, { force: true });
    await rm(warm.logPath, { force: true });
    await rm(warm.pidPath, { force: true });
  }

  /** Waits until an incoming migration has finished (the VM is then paused, ready for `cont`). */
  async #awaitIncoming(vm: Vm): Promise<void> {
    const deadline = Date.now() + qemuMigrateTimeoutMs;
    for (;;) {
      const status = (await vm.qmp.execute('query-status')) as { status: string };
      if (status.status !== 'inmigrate') {
        if (status.status !== 'paused' && status.status !== 'prelaunch') {
          throw new Error(`restore ended in status ${status.status}`);
        }
        return;
      }
      if (Date.now() > deadline) throw new Error('restore did not finish in time');
      await sleep(migratePollMs);
    }
  }

  async #awaitReady(vm: Vm): Promise<void> {
    const line = await vm.console.waitFor(
      (l) => l.includes('@@TRELLIS-READY'),
      qemuBootTimeoutMs,
      'guest ready line',
    );
    if (!line.includes('disk=ok')) throw new Error(`guest could not mount its disk (${line.trim()})`);
  }

  /** Pauses the VM and writes its state to `file` through QEMU's exec migration. */
  async #save(vm: Vm, file: string): Promise<void> {
    await vm.qmp.execute('stop');
    await vm.qmp.execute('migrate', { uri: `exec:cat > ${shellQuote(file)}` });
    const deadline = Date.now() + qemuMigrateTimeoutMs;
    for (;;) {
      const info = (await vm.qmp.execute('query-migrate')) as { status?: string; 'error-desc'?: string };
      if (info.status === 'completed') return;
      if (info.status === 'failed' || info.status === 'cancelled') {
        throw new Error(`saving the VM state failed: ${info['error-desc'] ?? info.status}`);
      }
      if (Date.now() > deadline) throw new Error('saving the VM state did not finish in time');
      await sleep(migratePollMs);
    }
  }

  /** Spawns QEMU (detached, so a worker crash does not take it down) and connects QMP and the console. */
  async #start(
    id: SandboxId | undefined,
    shape: Shape,
    disk: string,
    incoming: string | undefined,
    dirOverride?: string,
    warm?: { name: string; logPath: string; pidPath: string },
  ): Promise<Vm> {
    assert(this.#runDir !== undefined, 'prepare() ran before a VM starts');
    const dir = dirOverride ?? this.sandboxDir(id as SandboxId);
    const n = this.#seq++;
    const qmpPath = join(this.#runDir, `${n}.qmp`);
    const serialPath = join(this.#runDir, `${n}.ser`);
    const logPath = warm?.logPath ?? join(dir, 'qemu.log');
    const log = openSync(logPath, 'a');
    const args = this.#args(shape, disk, qmpPath, serialPath, incoming);
    if (warm !== undefined) args.push('-name', warm.name, '-pidfile', warm.pidPath);
    const child = spawn(this.#qemu, args, { cwd: dir, detached: true, stdio: ['ignore', log, log] });
    closeSync(log);
    child.unref();
    await new Promise<void>((ok, fail) => {
      child.once('spawn', ok);
      child.once('error', fail);
    });
    const pid = child.pid as number;
    const alive = (): boolean => child.exitCode === null && child.signalCode === null;
    try {
      const qmp = await Qmp.connect(qmpPath, qemuBootTimeoutMs, alive);
      const console = await LineSocket.connect(serialPath, qemuBootTimeoutMs, alive);
      const sockets = { qmp: qmpPath, serial: serialPath };
      const vm: Vm = { child, pid, qmp, console, sockets, execTail: Promise.resolve() };
      if (id !== undefined) {
        await writeFile(join(dir, 'vm.pid'), String(pid));
        await writeFile(join(dir, 'sockets.json'), JSON.stringify(sockets));
        this.#vms.set(id, vm);
      }
      return vm;
    } catch (err) {
      child.kill('SIGKILL');
      throw new Error(`qemu did not come up: ${await logTail(logPath)}`, { cause: err });
    }
  }

  #args(
    shape: Shape,
    disk: string,
    qmpPath: string,
    serialPath: string,
    incoming: string | undefined,
  ): string[] {
    // init_on_free zeroes freed pages, and the agent drops its caches before it says ready, so the saved
    // state carries fewer non-zero pages (migration sends a zero page as a flag) and restores faster.
    const append = [
      'console=ttyS0',
      'quiet',
      'loglevel=1',
      'panic=-1',
      'reboot=t',
      'cryptomgr.notests',
      'init_on_free=1',
    ];
    if (this.#khz > 0) append.push(`tsc_early_khz=${this.#khz}`);
    const args = [
      '-M',
      'microvm',
      '-accel',
      this.#accel,
      '-cpu',
      this.#accel === 'kvm' ? 'host' : 'qemu64,+arat',
      '-m',
      String(shape.memoryMib),
      '-smp',
      String(shape.vcpus),
      '-nodefaults',
      '-no-user-config',
      '-display',
      'none',
      '-no-reboot',
      '-kernel',
      join(this.#guestDir, 'vmlinux'),
      '-initrd',
      join(this.#guestDir, 'initramfs.cpio'),
      '-append',
      append.join(' '),
      '-chardev',
      `socket,id=ser0,path=${serialPath},server=on,wait=off`,
      '-serial',
      'chardev:ser0',
      '-drive',
      `file=${disk},format=qcow2,if=none,id=disk0`,
      '-device',
      'virtio-blk-device,drive=disk0',
      '-qmp',
      `unix:${qmpPath},server=on,wait=off`,
    ];
    if (incoming === deferIncoming) args.push('-S', '-incoming', 'defer');
    else if (incoming !== undefined) args.push('-S', '-incoming', `exec:cat ${shellQuote(incoming)}`);
    return args;
  }

  /** The live VM of a sandbox: this process's, or one a previous worker left (reconnects its sockets). */
  async #attach(id: SandboxId): Promise<Vm> {
    const known = this.#vms.get(id);
    if (known !== undefined) return known;
    const pid = await this.#livePid(id);
    if (pid === undefined) throw new SandboxStateError(id, 'stopped', 'reach its VM');
    const sockets = JSON.parse(await readFile(join(this.sandboxDir(id), 'sockets.json'), 'utf8')) as {
      qmp: string;
      serial: string;
    };
    const alive = (): boolean => existsSync(`/proc/${pid}`);
    const qmp = await Qmp.connect(sockets.qmp, 5_000, alive);
    const console = await LineSocket.connect(sockets.serial, 5_000, alive);
    const vm: Vm = { child: undefined, pid, qmp, console, sockets, execTail: Promise.resolve() };
    this.#vms.set(id, vm);
    return vm;
  }

  async #execOn(vm: Vm, req: ExecRequest): Promise<ExecResult> {
    const tag = `e${this.#seq++}`;
    const script = Buffer.from(req.command.map(shellQuote).join(' ')).toString('base64');
    const stdin =
      req.stdin === undefined || req.stdin.byteLength === 0 ? '-' : Buffer.from(req.stdin).toString('base64');
    const timeoutS = Math.max(1, Math.ceil(req.timeoutMs / 1000));
    const startedMs = performance.now();
    const reply = vm.console.waitFor(
      (l) => l.startsWith(`@@TRELLIS-EXIT ${tag} `),
      req.timeoutMs + qemuExecGraceMs,
      'exec reply',
    );
    vm.console.write(`X ${tag} ${timeoutS} ${req.outputBytesMax} ${script} ${stdin}`);
    const parts = (await reply).trim().split(' ');
    const [, , rc, outBytes, errBytes, out, err] = parts;
    const decode = (b64: string | undefined): Uint8Array =>
      new Uint8Array(b64 === undefined || b64 === '-' ? Buffer.alloc(0) : Buffer.from(b64, 'base64'));
    const exitCode = Number(rc);
    const elapsedMs = performance.now() - startedMs;
    return {
      exitCode,
      signal: null,
      stdout: decode(out),
      stderr: decode(err),
      stdoutTruncated: Number(outBytes) > req.outputBytesMax,
      stderrTruncated: Number(errBytes) > req.outputBytesMax,
      // The guest's `timeout -s KILL` ends the command; the shell then reports 128 + 9.
      timedOut: exitCode === 137 && elapsedMs >= req.timeoutMs,
    };
  }

  async #state(id: SandboxId): Promise<MachineState | undefined> {
    const dir = this.sandboxDir(id);
    if (!existsSync(join(dir, 'spec.json'))) return undefined;
    if ((await this.#livePid(id)) !== undefined) return 'running';
    return existsSync(join(dir, 'suspend.state')) ? 'suspended' : 'stopped';
  }

  async #spec(id: SandboxId): Promise<MachineSpec> {
    return JSON.parse(await readFile(join(this.sandboxDir(id), 'spec.json'), 'utf8')) as MachineSpec;
  }

  /** The QEMU pid of a sandbox when alive and really its QEMU (its command line names the sandbox disk). */
  async #livePid(id: SandboxId): Promise<number | undefined> {
    const text = await readFile(join(this.sandboxDir(id), 'vm.pid'), 'utf8').catch(() => undefined);
    const pid = text === undefined ? Number.NaN : Number(text.trim());
    if (!Number.isInteger(pid) || pid <= 1) return undefined;
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.includes(this.diskPath(id))) return pid;
    // A VM restored into a warm process: its command line names the spare path and its warm name.
    const name = await readFile(join(this.sandboxDir(id), 'vm.name'), 'utf8').catch(() => undefined);
    return name !== undefined && cmdline.includes(`\0${name.trim()}\0`) ? pid : undefined;
  }

  async #quit(id: SandboxId, pid: number): Promise<void> {
    const vm = this.#vms.get(id);
    this.#vms.delete(id);
    if (vm !== undefined) return this.#quitVm(vm);
    killGroup(pid, 'SIGTERM');
    for (let waited = 0; waited < qemuQuitGraceMs; waited += migratePollMs) {
      if (!existsSync(`/proc/${pid}`)) return;
      await sleep(migratePollMs);
    }
    killGroup(pid, 'SIGKILL');
  }

  /** Asks QEMU to quit, waits for its exit, kills it when it does not. */
  async #quitVm(vm: Vm): Promise<void> {
    const child = vm.child;
    const exited =
      child === undefined || child.exitCode !== null || child.signalCode !== null
        ? undefined
        : new Promise<void>((r) => child.once('exit', () => r()));
    await vm.qmp.execute('quit', undefined, qemuQuitGraceMs).catch(() => undefined);
    vm.qmp.close();
    vm.console.close();
    if (exited !== undefined) {
      const done = await Promise.race([exited.then(() => true), sleep(qemuQuitGraceMs).then(() => false)]);
      if (!done) {
        killGroup(vm.pid, 'SIGKILL');
        await exited;
      }
      return;
    }
    for (let waited = 0; waited < qemuQuitGraceMs; waited += migratePollMs) {
      if (!existsSync(`/proc/${vm.pid}`)) return;
      await sleep(migratePollMs);
    }
    killGroup(vm.pid, 'SIGKILL');
  }
}

/** `#start`'s incoming argument for a warm process: wait for `migrate-incoming`. */
const deferIncoming = '\0defer';

function alive(vm: Vm): boolean {
  if (vm.child !== undefined) return vm.child.exitCode === null && vm.child.signalCode === null;
  return existsSync(`/proc/${vm.pid}`);
}

/**
 * Ends the warm QEMU processes a previous worker process left waiting in `warm/` (those still with a pid
 * file) and removes their files; adopted ones (no pid file) keep their overlay, which their VM has open.
 */
async function endLeftoverWarm(warmDir: string): Promise<void> {
  const names = await readdir(warmDir).catch(() => [] as string[]);
  for (const name of names.filter((n) => n.endsWith('.pid'))) {
    const pid = Number((await readFile(join(warmDir, name), 'utf8').catch(() => '')).trim());
    if (Number.isInteger(pid) && pid > 1) {
      const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
      if (cmdline.includes('trellis-warm-')) killGroup(pid, 'SIGKILL');
    }
    const stem = name.slice(0, -'.pid'.length);
    for (const ext of ['.pid', '.qcow2', '.log']) await rm(join(warmDir, stem + ext), { force: true });
  }
}

/** Memory rounded up to the template step (at least one step), vCPUs from millicores. */
export function shapeOf(spec: MachineSpec): Shape {
  const memoryMib = Math.max(
    qemuMemoryStepMib,
    Math.ceil(spec.resources.memory / qemuMemoryStepMib) * qemuMemoryStepMib,
  );
  return { memoryMib, vcpus: vcpusFor(spec.resources) };
}

function shellQuote(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`;
}

function killGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {}
}

async function logTail(path: string): Promise<string> {
  const text = await readFile(path, 'utf8').catch(() => '');
  const lines = text.trim().split('\n').slice(-3).join(' | ');
  return lines === '' ? 'no output' : lines;
}

/** The command lines of this machine's live QEMU processes (pid, NUL-separated arguments). */
async function liveCmdlines(): Promise<[number, string][]> {
  const out: [number, string][] = [];
  for (const name of await readdir('/proc').catch(() => [] as string[])) {
    const pid = Number(name);
    if (!Number.isInteger(pid) || pid <= 1) continue;
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.startsWith('qemu-system') || cmdline.includes('/qemu-system')) out.push([pid, cmdline]);
  }
  return out;
}
