/**
 * The `sim` driver: no machine at all, only a latency model. Disk creation, boot, stop, suspend and resume
 * each take a time drawn from a log-normal distribution (given by its median and p99, the two figures a
 * platform actually knows about its VMs), and fail at a configured rate. Randomness comes from a seeded
 * `Rng` and time from injected `Timers`, so a run with `VirtualTimers` is exact and replayable, and
 * thousands of simulated nodes live in one process (a machine is one small record in a map).
 *
 * Exec does not run anything: it takes `exec` time and answers exit code 0 with empty output.
 */
import { assert } from '../../lib/assert.js';
import type { SandboxId } from '../../lib/ids.js';
import type { Rng } from '../../lib/prng.js';
import { sleepOn, type Timers } from '../../lib/timers.js';
import type {
  Driver,
  DriverCapabilities,
  ExecRequest,
  ExecResult,
  MachineReport,
  MachineSpec,
} from '../driver.js';
import { execStdinBytesMax, parseExecRequest } from '../driver.js';
import { DriverError, SandboxNotFoundError, SandboxStateError, WorkerClosedError } from '../errors.js';

/** A log-normal latency given by its median and 99th percentile, in milliseconds. */
export interface LatencyDistribution {
  readonly medianMs: number;
  readonly p99Ms: number;
}

export interface SimLatencyModel {
  readonly disk: LatencyDistribution;
  readonly boot: LatencyDistribution;
  readonly stop: LatencyDistribution;
  readonly exec: LatencyDistribution;
  readonly suspend: LatencyDistribution;
  readonly resume: LatencyDistribution;
  /** Probability that one operation of that kind fails (with a reason naming the simulation). */
  readonly failureRate: { readonly disk: number; readonly boot: number; readonly resume: number };
}

/** Figures in the range of a snapshot-restoring microVM platform; override per run. */
export const defaultSimLatencyModel: SimLatencyModel = {
  disk: { medianMs: 25, p99Ms: 80 },
  boot: { medianMs: 180, p99Ms: 600 },
  stop: { medianMs: 5, p99Ms: 20 },
  exec: { medianMs: 3, p99Ms: 15 },
  suspend: { medianMs: 120, p99Ms: 400 },
  resume: { medianMs: 200, p99Ms: 500 },
  failureRate: { disk: 0.001, boot: 0.005, resume: 0.002 },
};

/** z of the 99th percentile of the standard normal distribution. */
const z99 = 2.3263478740408408;
/** A draw is capped at this multiple of the p99, so one unlucky sample cannot stall a simulation. */
const latencyTailCapOfP99 = 10;

/** Draws one latency from a log-normal distribution (Box–Muller on the seeded source). */
export function sampleLatencyMs(rng: Rng, dist: LatencyDistribution): number {
  assert(dist.medianMs >= 0 && dist.p99Ms >= dist.medianMs, 'latency p99 >= median >= 0', { ...dist });
  if (dist.medianMs === 0) return 0;
  const sigma = Math.log(dist.p99Ms / dist.medianMs) / z99;
  const u1 = 1 - rng.next();
  const u2 = rng.next();
  const z = Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
  return Math.min(dist.medianMs * Math.exp(sigma * z), dist.p99Ms * latencyTailCapOfP99);
}

type SimState = 'disk' | 'running' | 'suspended';

export interface SimDriverOptions {
  readonly rng: Rng;
  readonly timers: Timers;
  readonly model?: SimLatencyModel;
}

export class SimDriver implements Driver {
  readonly kind = 'sim';
  readonly capabilities: DriverCapabilities = {
    suspend: true,
    suspendFreesMemory: true,
    snapshotRestore: false,
    persistent: false,
  };
  readonly execStdinBytesMax = execStdinBytesMax;
  readonly #rng: Rng;
  readonly #timers: Timers;
  readonly #model: SimLatencyModel;
  readonly #machines = new Map<SandboxId, SimState>();
  #closed = false;

  constructor(options: SimDriverOptions) {
    this.#rng = options.rng;
    this.#timers = options.timers;
    this.#model = options.model ?? defaultSimLatencyModel;
  }

  async createDisk(spec: MachineSpec): Promise<void> {
    this.#open();
    if (this.#machines.has(spec.sandboxId)) return;
    await this.#wait(this.#model.disk);
    this.#maybeFail('createDisk', this.#model.failureRate.disk);
    this.#machines.set(spec.sandboxId, 'disk');
  }

  async boot(spec: MachineSpec): Promise<void> {
    this.#open();
    const state = this.#machines.get(spec.sandboxId);
    if (state === undefined) throw new SandboxNotFoundError(spec.sandboxId);
    if (state === 'running') return;
    if (state === 'suspended') throw new SandboxStateError(spec.sandboxId, state, 'boot');
    await this.#wait(this.#model.boot);
    this.#maybeFail('boot', this.#model.failureRate.boot);
    this.#machines.set(spec.sandboxId, 'running');
  }

  async exec(sandboxId: SandboxId, request: ExecRequest): Promise<ExecResult> {
    this.#open();
    parseExecRequest(request, this.execStdinBytesMax);
    this.#expect(sandboxId, 'running', 'exec');
    await this.#wait(this.#model.exec);
    const empty = new Uint8Array(0);
    return {
      exitCode: 0,
      signal: null,
      stdout: empty,
      stderr: empty,
      stdoutTruncated: false,
      stderrTruncated: false,
      timedOut: false,
    };
  }

  async stop(sandboxId: SandboxId): Promise<void> {
    const state = this.#machines.get(sandboxId);
    if (state === undefined || state === 'disk') return;
    await this.#wait(this.#model.stop);
    this.#machines.set(sandboxId, 'disk');
  }

  async destroy(sandboxId: SandboxId): Promise<void> {
    await this.stop(sandboxId);
    this.#machines.delete(sandboxId);
  }

  async suspend(sandboxId: SandboxId): Promise<void> {
    this.#open();
    if (this.#machines.get(sandboxId) === 'suspended') return;
    this.#expect(sandboxId, 'running', 'suspend');
    await this.#wait(this.#model.suspend);
    this.#machines.set(sandboxId, 'suspended');
  }

  async resume(sandboxId: SandboxId): Promise<void> {
    this.#open();
    if (this.#machines.get(sandboxId) === 'running') return;
    this.#expect(sandboxId, 'suspended', 'resume');
    await this.#wait(this.#model.resume);
    this.#maybeFail('resume', this.#model.failureRate.resume);
    this.#machines.set(sandboxId, 'running');
  }

  async list(): Promise<readonly MachineReport[]> {
    return [...this.#machines].map(([sandboxId, state]) => ({
      sandboxId,
      state: state === 'disk' ? 'stopped' : state,
    }));
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#machines.clear();
  }

  #open(): void {
    if (this.#closed) throw new WorkerClosedError('the sim driver is closed');
  }

  #expect(sandboxId: SandboxId, wanted: SimState, operation: string): void {
    const state = this.#machines.get(sandboxId);
    if (state === undefined) throw new SandboxNotFoundError(sandboxId);
    if (state !== wanted)
      throw new SandboxStateError(sandboxId, state === 'disk' ? 'stopped' : state, operation);
  }

  #wait(dist: LatencyDistribution): Promise<void> {
    return sleepOn(this.#timers, sampleLatencyMs(this.#rng, dist));
  }

  #maybeFail(operation: string, rate: number): void {
    if (this.#rng.chance(rate)) {
      throw new DriverError('sim', operation, `simulated ${operation} failure (rate ${rate})`);
    }
  }
}
