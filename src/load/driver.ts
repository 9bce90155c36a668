/**
 * The load driver: takes `sandboxes` sandboxes through create → (running) → exec → terminate over NATS with
 * the remote clients a platform would use (`connect()`), several calls in flight per phase, at full speed or
 * at a fixed rate of creates. Every call carries a request id fixed per sandbox and phase, so a retry after a
 * timeout, a lost leader or a restarted nats-server is applied once; a transient failure is retried with the
 * same id for up to `retryForMs`, a definite one ends that sandbox with its reason.
 *
 * Latencies go into HDR histograms (hdr-histogram-js: the HdrHistogram port the Node ecosystem uses, with
 * fixed memory and 3 significant digits at any count — 100,000 samples per phase need no sample array), and
 * what the cluster acknowledged goes into the log the checker reads.
 */
import * as hdr from 'hdr-histogram-js';
import type { SchedulerApi } from '../../scheduler/api.js';
import type { SandboxSpec } from '../../scheduler/commands.js';
import { SandboxNotRunningError } from '../../scheduler/errors.js';
import type { Sandbox } from '../../scheduler/types.js';
import { assert } from '../lib/assert.js';
import { TrellisError } from '../lib/errors.js';
import type { AckLog } from './checker.js';

/** Error codes after which the same call, with the same request id, may still succeed. */
const transientCodes: ReadonlySet<string> = new Set([
  'OUTCOME_UNKNOWN',
  'UNAVAILABLE',
  'SCHED_NOT_LEADER',
  'SCHED_OVERLOADED',
  'SCHED_CLOSED',
  'DEADLINE_EXCEEDED',
  // The worker's bounded queue was full and nothing was recorded (src/worker/errors.ts): retry later.
  'WORKER_BUSY',
]);
/**
 * How long one create attempt waits for running. A waiting create whose answer is lost (its leader killed,
 * nats-server restarted) is only retried when its attempt ends: with the client's 60 s default a chaos run's
 * stragglers took 62 s each; a retry with the same id waits again, so a short wait loses nothing.
 */
export const createRunningWaitMs = 10_000;
/** States a sandbox passes through on its way to running: a wait that ended in one of them is retried. */
const onItsWayStates: ReadonlySet<string> = new Set(['pending', 'placed', 'starting']);

/**
 * The exec's command timeout. The client waits this plus its attempt timeout for an answer, so a lost
 * answer (a restarted nats-server) cost 32 s with the 30 s default; `true` ends at once, and running it
 * twice after a retry is harmless.
 */
export const execTimeoutMs = 3_000;

/** Pause between two retries of one call. */
const retryPauseMs = 100;
/** Highest latency the histograms track (longer ones are clamped): ten minutes. */
const latencyMsTrackedMax = 600_000;

export type Phase = 'create' | 'exec' | 'terminate';
export const phases: readonly Phase[] = ['create', 'exec', 'terminate'];

/** What an API with `exec` offers (the dispatcher's; feature-detected so the driver runs without it). */
interface ExecApi {
  exec(sandboxId: string, command: readonly string[], options?: { timeoutMs?: number }): Promise<unknown>;
}

function hasExec(api: SchedulerApi): api is SchedulerApi & ExecApi {
  return typeof (api as Partial<ExecApi>).exec === 'function';
}

export interface DriveOptions {
  readonly clients: readonly SchedulerApi[];
  readonly sandboxes: number;
  /** Creates per minute; undefined: as fast as the in-flight bounds allow. */
  readonly ratePerMin?: number;
  /** `running` once the dispatcher runs sandboxes on workers; `placed` without it. */
  readonly wait: 'placed' | 'running';
  /** Run one command in each sandbox (when the API has `exec`). */
  readonly exec: boolean;
  readonly inFlight: Readonly<Record<Phase, number>>;
  readonly spec: SandboxSpec;
  /** Prefix of every request id, unique per run. */
  readonly runId: string;
  /** How long one call is retried after its first attempt before the sandbox is given up (ms). */
  readonly retryForMs: number;
  readonly now?: () => number;
  /** Called after each sandbox finishes a phase. */
  readonly onProgress?: (p: Progress) => void;
}

export interface Progress {
  readonly started: number;
  readonly created: number;
  readonly execd: number;
  readonly terminated: number;
  readonly failed: number;
}

export interface PhaseStats {
  readonly count: number;
  readonly perSecond: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly maxMs: number;
}

export interface DriveResult {
  readonly acks: AckLog;
  readonly phases: Readonly<Record<Phase, PhaseStats>>;
  /** From the first create sent to the last create acknowledged (placed, or running with `wait`). */
  readonly allCreatedSeconds: number;
  readonly allTerminatedSeconds: number;
  readonly firstCreateAtMs: number;
  /** Sandboxes that ended with a definite error, by phase and code. */
  readonly failures: Readonly<Record<string, number>>;
  /** Calls retried after a transient failure, by phase and code (each is another round trip). */
  readonly retries: Readonly<Record<string, number>>;
  readonly execAvailable: boolean;
}

/** Releases at most `limit` holders at once, in arrival order. */
class Slots {
  #free: number;
  readonly #waiting: (() => void)[] = [];
  constructor(limit: number) {
    assert(Number.isInteger(limit) && limit >= 1, 'a positive slot count', { limit });
    this.#free = limit;
  }
  async take(): Promise<void> {
    if (this.#free > 0) {
      this.#free--;
      return;
    }
    await new Promise<void>((r) => this.#waiting.push(r));
  }
  give(): void {
    const next = this.#waiting.shift();
    if (next !== undefined) next();
    else this.#free++;
  }
}

class PhaseClock {
  readonly hist = hdr.build({
    lowestDiscernibleValue: 1,
    highestTrackableValue: latencyMsTrackedMax * 1_000,
    numberOfSignificantValueDigits: 3,
  });
  firstMs = Number.POSITIVE_INFINITY;
  lastMs = 0;
  count = 0;
  record(startMs: number, endMs: number): void {
    this.firstMs = Math.min(this.firstMs, startMs);
    this.lastMs = Math.max(this.lastMs, endMs);
    this.count++;
    // Microseconds, so sub-millisecond calls keep their resolution.
    this.hist.recordValue(
      Math.max(1, Math.min(latencyMsTrackedMax * 1_000, Math.round((endMs - startMs) * 1_000))),
    );
  }
  stats(): PhaseStats {
    const spanS = (this.lastMs - this.firstMs) / 1_000;
    const us = (q: number) => (this.count === 0 ? 0 : this.hist.getValueAtPercentile(q) / 1_000);
    return {
      count: this.count,
      perSecond: this.count === 0 || spanS <= 0 ? 0 : this.count / spanS,
      p50Ms: us(50),
      p99Ms: us(99),
      maxMs: this.count === 0 ? 0 : this.hist.maxValue / 1_000,
    };
  }
}

/** A create whose wait for running ended while the sandbox was still on its way (not failed or lost). */
function stillOnItsWay(err: unknown): boolean {
  if (!(err instanceof TrellisError) || err.code !== 'SCHED_NOT_RUNNING') return false;
  const state = (err.details as { state?: unknown } | undefined)?.state;
  return typeof state === 'string' && onItsWayStates.has(state);
}

class Outcome extends Error {
  constructor(readonly code: string) {
    super(code);
  }
}

/** Drives every sandbox through its phases; resolves once each has ended one way or another. */
export async function drive(o: DriveOptions): Promise<DriveResult> {
  assert(o.clients.length > 0, 'at least one client', { clients: o.clients.length });
  const now = o.now ?? (() => performance.timeOrigin + performance.now());
  // A command runs only in a running sandbox: without waiting for running there is nothing to exec in.
  const execAvailable = o.exec && o.wait === 'running' && o.clients.every(hasExec);
  const created = new Map<string, string | undefined>();
  const terminated = new Set<string>();
  const unknownAfterAck = new Set<string>();
  const terminateUnknown = new Set<string>();
  const failures: Record<string, number> = {};
  const retries: Record<string, number> = {};
  const clocks: Record<Phase, PhaseClock> = {
    create: new PhaseClock(),
    exec: new PhaseClock(),
    terminate: new PhaseClock(),
  };
  const slots: Record<Phase, Slots> = {
    create: new Slots(o.inFlight.create),
    exec: new Slots(o.inFlight.exec),
    terminate: new Slots(o.inFlight.terminate),
  };
  const progress = { started: 0, created: 0, execd: 0, terminated: 0, failed: 0 };
  let lastCreateAckMs = 0;
  let lastTerminateAckMs = 0;

  /** Calls `fn` until it answers or fails for good; transient failures retry with the same request id. */
  const persist = async <T>(phase: Phase, fn: () => Promise<T>): Promise<T> => {
    const giveUpAtMs = Date.now() + o.retryForMs;
    for (;;) {
      try {
        return await fn();
      } catch (err) {
        const code = err instanceof TrellisError ? err.code : 'ERROR';
        if (!(transientCodes.has(code) || stillOnItsWay(err)) || Date.now() > giveUpAtMs)
          throw new Outcome(code);
        const key = `${phase}:${code}`;
        retries[key] = (retries[key] ?? 0) + 1;
        await new Promise((r) => setTimeout(r, retryPauseMs));
      }
    }
  };
  const fail = (phase: Phase, code: string): void => {
    const key = `${phase}:${code}`;
    failures[key] = (failures[key] ?? 0) + 1;
    progress.failed++;
  };

  const lifecycle = async (i: number, api: SchedulerApi & Partial<ExecApi>): Promise<void> => {
    const id = `${o.runId}-${i}`;
    let sb: Sandbox | undefined;
    const t0 = now();
    try {
      sb = await persist('create', async () => {
        const out = await api.create(o.spec, {
          requestId: id,
          wait: o.wait,
          ...(o.wait === 'running' ? { runningWaitMs: createRunningWaitMs } : {}),
        });
        // Answered `pending` (no room before the call's deadline): still on its way, so asked again with the
        // same id, as a wait for running that ends pending is; not counted created before it is placed.
        if (out.state === 'pending')
          throw new SandboxNotRunningError(`sandbox ${out.id} is pending`, { details: { state: 'pending' } });
        return out;
      });
      const t1 = now();
      clocks.create.record(t0, t1);
      created.set(id, sb.nodeId);
      lastCreateAckMs = Math.max(lastCreateAckMs, t1);
      progress.created++;
    } catch (err) {
      fail('create', err instanceof Outcome ? err.code : 'ERROR');
    } finally {
      slots.create.give();
    }
    if (sb !== undefined && execAvailable && api.exec !== undefined) {
      const run = api.exec.bind(api);
      await slots.exec.take();
      const t2 = now();
      try {
        await persist('exec', () => run(id, ['true'], { timeoutMs: execTimeoutMs }));
        clocks.exec.record(t2, now());
        progress.execd++;
      } catch (err) {
        const code = err instanceof Outcome ? err.code : 'ERROR';
        if (code === 'SCHED_UNKNOWN_SANDBOX') unknownAfterAck.add(id);
        fail('exec', code);
      } finally {
        slots.exec.give();
      }
    }
    // Terminated whatever happened before: a create that failed for good may still have left a sandbox.
    await slots.terminate.take();
    const t3 = now();
    try {
      await persist('terminate', () => api.terminate(id, { requestId: `${id}-t` }));
      const t4 = now();
      clocks.terminate.record(t3, t4);
      terminated.add(id);
      lastTerminateAckMs = Math.max(lastTerminateAckMs, t4);
      progress.terminated++;
    } catch (err) {
      const code = err instanceof Outcome ? err.code : 'ERROR';
      if (code === 'SCHED_UNKNOWN_SANDBOX') {
        if (created.has(id)) unknownAfterAck.add(id);
        // Never created: nothing to end.
      } else {
        // No answer within the retry time: the terminate may have been applied (the checker must know).
        if (transientCodes.has(code)) terminateUnknown.add(id);
        fail('terminate', code);
      }
    } finally {
      slots.terminate.give();
    }
    o.onProgress?.(progress);
  };

  const firstCreateAtMs = now();
  const intervalMs = o.ratePerMin === undefined ? 0 : 60_000 / o.ratePerMin;
  const running: Promise<void>[] = [];
  for (let i = 0; i < o.sandboxes; i++) {
    if (intervalMs > 0) {
      const waitMs = firstCreateAtMs + i * intervalMs - now();
      if (waitMs > 1) await new Promise((r) => setTimeout(r, waitMs));
    }
    await slots.create.take();
    progress.started++;
    running.push(lifecycle(i, o.clients[i % o.clients.length] as SchedulerApi & Partial<ExecApi>));
    if (i % 256 === 0) o.onProgress?.(progress);
  }
  await Promise.all(running);
  o.onProgress?.(progress);
  const phaseStats = {
    create: clocks.create.stats(),
    exec: clocks.exec.stats(),
    terminate: clocks.terminate.stats(),
  };
  return {
    acks: { created, terminated, unknownAfterAck, terminateUnknown },
    phases: phaseStats,
    allCreatedSeconds: lastCreateAckMs === 0 ? 0 : (lastCreateAckMs - firstCreateAtMs) / 1_000,
    allTerminatedSeconds: lastTerminateAckMs === 0 ? 0 : (lastTerminateAckMs - firstCreateAtMs) / 1_000,
    firstCreateAtMs,
    failures,
    retries,
    execAvailable,
  };
}
