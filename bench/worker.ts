/**
 * Node worker drivers benchmark (issue 13): `npm run bench:worker -- --json FILE [--quick] [--drivers a,b]`.
 *
 * Per driver, through the real NodeWorker core (boots bounded at 2 per node, as in production):
 * create-to-running and terminate latency for 50 sequential sandboxes and for 20 created at once, and for
 * drivers that suspend, suspend and resume latency. For qemu also a cold boot beside the snapshot restore.
 * A latency is measured from the worker call to the status report (status batches of one, so batching adds
 * nothing). `sim` runs on virtual time: its figures are the latency model's, not this machine's.
 *
 * One JSON object per driver and mode:
 * {"driver","mode","createToRunningP50Ms","createToRunningP99Ms","terminateP50Ms","resumeP50Ms", ...extras}.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { NodeId, SandboxId } from '../src/lib/ids.js';
import { createRng } from '../src/lib/prng.js';
import { realTimers, type Timers, VirtualTimers } from '../src/lib/timers.js';
import type { Driver, MachineSpec } from '../src/worker/driver.js';
import { ProcessDriver } from '../src/worker/drivers/process.js';
import { QemuDriver } from '../src/worker/drivers/qemu.js';
import { SimDriver } from '../src/worker/drivers/sim.js';
import { NodeWorker } from '../src/worker/node-worker.js';
import type { StatusReport } from '../src/worker/protocol.js';
import { benchArgs, machineLine, percentile, table, writeJsonLines } from './lib/report.js';

const { values } = benchArgs({
  options: {
    json: { type: 'string' },
    quick: { type: 'boolean', default: false },
    drivers: { type: 'string', default: 'sim,process,qemu' },
  },
});
const quick = values.quick ?? false;
const sequentialCount = quick ? 10 : 50;
const concurrentCount = quick ? 5 : 20;
const suspendCount = quick ? 3 : 10;
const coldCount = quick ? 1 : 3;
const drivers = (values.drivers ?? '').split(',');
/** The sim driver runs on virtual time; its figures are the latency model's. */
const sim = new VirtualTimers();

type Row = Record<string, string | number>;

/** qemu's per-phase durations (overlay, spawn+connect, incoming, cont, save, quit), for "what dominates". */
const phases = new Map<string, number[]>();
function recordPhase(phase: string, ms: number): void {
  const list = phases.get(phase) ?? [];
  list.push(ms);
  phases.set(phase, list);
}
function phaseSummary(): string {
  return [...phases].map(([k, v]) => `${k}=${p(v, 50)}`).join(' ');
}

/** A worker whose status reports resolve per-sandbox waiters, timed on the worker's clock. */
class Harness {
  readonly worker: NodeWorker;
  readonly #waiters = new Map<string, (atMs: number) => void>();
  constructor(
    readonly driver: Driver,
    readonly timers: Timers,
  ) {
    this.worker = new NodeWorker({
      nodeId: 'bench' as NodeId,
      driver,
      timers,
      statusBatchMax: 1,
      statusSink: async (batch: readonly StatusReport[]) => {
        for (const r of batch) {
          if (r.state === 'failed') console.error(`  ${r.sandboxId} failed: ${r.reason}`);
          this.#waiters.get(`${r.sandboxId}/${r.state}`)?.(this.timers.now());
          if (r.state === 'failed') this.#waiters.get(`${r.sandboxId}/running`)?.(Number.NaN);
        }
      },
    });
  }
  /** Resolves with the clock time the sandbox reports `state`. */
  when(id: string, state: string): Promise<number> {
    return new Promise((resolve) => this.#waiters.set(`${id}/${state}`, resolve));
  }
  async timed(id: string, state: string, act: () => Promise<unknown>): Promise<number> {
    const reached = this.when(id, state);
    const startMs = this.timers.now();
    await act();
    await this.#drive();
    return (await reached) - startMs;
  }
  /** Virtual time must be moved; real time moves by itself. */
  async #drive(): Promise<void> {
    if (this.timers instanceof VirtualTimers) await this.timers.runAll();
  }
  async all<T>(work: Promise<T>[]): Promise<T[]> {
    await this.#drive();
    return Promise.all(work);
  }
}

function spec(id: string): MachineSpec {
  return { sandboxId: id as SandboxId, resources: { cpu: 1000, memory: 128, disk: 512 }, image: 'default' };
}

const p = (xs: number[], q: number): number =>
  Math.round(
    percentile(
      [...xs].sort((a, b) => a - b),
      q,
    ) * 10,
  ) / 10;

async function sequential(h: Harness, name: string): Promise<Row> {
  const create: number[] = [];
  const terminate: number[] = [];
  for (let i = 0; i < sequentialCount; i++) {
    const id = `seq${i}`;
    create.push(await h.timed(id, 'running', () => h.worker.create(spec(id))));
    terminate.push(await h.timed(id, 'terminated', () => h.worker.terminate(id as SandboxId)));
  }
  const row: Row = { driver: name, mode: `sequential-${sequentialCount}`, ...figures(create, terminate) };
  if (h.driver.capabilities.suspend) Object.assign(row, await suspendResume(h));
  return row;
}

async function concurrent(h: Harness, name: string): Promise<Row> {
  const ids = Array.from({ length: concurrentCount }, (_, i) => `con${i}`);
  const startMs = h.timers.now();
  const reached = ids.map((id) => h.when(id, 'running'));
  for (const id of ids) await h.worker.create(spec(id));
  const create = (await h.all(reached)).map((t) => t - startMs);
  const tStart = h.timers.now();
  const gone = ids.map((id) => h.when(id, 'terminated'));
  for (const id of ids) await h.worker.terminate(id as SandboxId);
  const terminate = (await h.all(gone)).map((t) => t - tStart);
  return {
    driver: name,
    mode: `concurrent-${concurrentCount}`,
    ...figures(create, terminate),
    resumeP50Ms: 'n/a',
  };
}

function figures(create: number[], terminate: number[]): Row {
  return {
    createToRunningP50Ms: p(create, 50),
    createToRunningP99Ms: p(create, 99),
    terminateP50Ms: p(terminate, 50),
    resumeP50Ms: 'n/a',
  };
}

async function suspendResume(h: Harness): Promise<Row> {
  const suspend: number[] = [];
  const resume: number[] = [];
  const id = 'sr0';
  await h.timed(id, 'running', () => h.worker.create(spec(id)));
  for (let i = 0; i < suspendCount; i++) {
    suspend.push(await h.timed(id, 'suspended', () => h.worker.suspend(id as SandboxId)));
    resume.push(await h.timed(id, 'running', () => h.worker.resume(id as SandboxId)));
  }
  await h.timed(id, 'terminated', () => h.worker.terminate(id as SandboxId));
  return { resumeP50Ms: p(resume, 50), resumeP99Ms: p(resume, 99), suspendP50Ms: p(suspend, 50) };
}

async function benchDriver(
  name: string,
  make: (dir: string) => Driver,
  timers: Timers,
  extra?: (dir: string) => Promise<Row>,
): Promise<Row[]> {
  const dir = await mkdtemp(join(tmpdir(), `trellis-bench-worker-${name}-`));
  const rows: Row[] = [];
  try {
    const driver = make(dir);
    if (driver instanceof QemuDriver) {
      await driver.prepare();
      const t0 = performance.now();
      await driver.template({ memoryMib: 128, vcpus: 1 });
      console.log(
        `  qemu template cold boot + save: ${Math.round(performance.now() - t0)} ms (accel ${driver.accel})`,
      );
    }
    const h = new Harness(driver, timers);
    phases.clear();
    const seq = await sequential(h, name);
    if (phases.size > 0) seq.phasesP50Ms = phaseSummary();
    rows.push(seq);
    rows.push(await concurrent(new Harness(driver, timers), name));
    if (extra !== undefined) rows.push(await extra(dir));
    await h.worker.close({ stopMachines: true });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  return rows;
}

/** qemu without the snapshot: every sandbox boots the kernel cold. */
async function qemuCold(dir: string): Promise<Row> {
  const driver = new QemuDriver({ dataDir: join(dir, 'cold'), snapshotRestore: false });
  const h = new Harness(driver, realTimers);
  const create: number[] = [];
  const terminate: number[] = [];
  for (let i = 0; i < coldCount; i++) {
    const id = `cold${i}`;
    create.push(await h.timed(id, 'running', () => h.worker.create(spec(id))));
    terminate.push(await h.timed(id, 'terminated', () => h.worker.terminate(id as SandboxId)));
  }
  await h.worker.close({ stopMachines: true });
  return { driver: 'qemu', mode: `cold-boot-sequential-${coldCount}`, ...figures(create, terminate) };
}

console.log(`worker drivers benchmark — ${machineLine()}`);
const rows: Row[] = [];
for (const name of drivers) {
  console.log(`driver ${name}…`);
  if (name === 'sim') {
    rows.push(...(await benchDriver(name, () => new SimDriver({ rng: createRng(13), timers: sim }), sim)));
  } else if (name === 'process') {
    rows.push(...(await benchDriver(name, (dir) => new ProcessDriver({ dataDir: dir }), realTimers)));
  } else if (name === 'qemu') {
    rows.push(
      ...(await benchDriver(
        name,
        (dir) => new QemuDriver({ dataDir: dir, onPhase: recordPhase }),
        realTimers,
        qemuCold,
      )),
    );
  }
}
console.log(table(rows));
for (const r of rows)
  if (r.phasesP50Ms !== undefined) console.log(`${r.driver} ${r.mode} phases p50 (ms): ${r.phasesP50Ms}`);
writeJsonLines(values.json, rows);
