/**
 * `npm run bench:scheduler -- --json FILE [--sandboxes N] [--nodes N] [--replicas N] [--log raft|in-process]
 * [--transport nats [--clients N] [--window N]]`: 3 in-process
 * replicas of a Raft group (loopback transport, FileStorage in a temp dir with fsync on), 1,000 generated
 * nodes, 100,000 creates submitted as fast as the API takes them. Measures the time until all are committed
 * as placed, placements per second, p50/p99 from `create` to its resolution, batches per second and the mean
 * batch size. Seeds are fixed, so runs are comparable. `--log in-process` runs on the stand-in log (memory,
 * no Raft) for comparison.
 *
 * `--transport nats` then runs the same creates against 3 `trellis server --state scheduler` processes (file
 * storage, fsync on) and a nats-server, from `--clients` remote clients (`connect()`) with at most `--window`
 * creates in flight in all, and prints both results; each carries the CPU seconds its processes used
 * (bench process, and for NATS also the replicas and nats-server), since the machine may be shared.
 *
 * `--scale [--profile-longest FILE] [--mark-batches]`: one replica's state at 1M sandboxes (see scale() below);
 * with `--profile-longest` the snapshot stream's batches are CPU-profiled and the longest ones broken down by
 * function into FILE, ranked by on-CPU time as well as by wall time (the machine is shared); with
 * `--mark-batches` each streamed batch prints a start and an end line, to cut a `--trace-deopt` log by batch.
 */
import type { ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync, writeSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay, PerformanceObserver } from 'node:perf_hooks';
import { type PlacementRequest, planBatch } from '../placement/index.js';
import type { SchedulerApi, StatusItem } from '../scheduler/api.js';
import type { PlaceItem, SandboxSpec } from '../scheduler/commands.js';
import { concatFrames, isFramedSnapshot, SnapshotReader, snapshotFrames } from '../scheduler/snapshot.js';
import { applyCommand, SchedulerState, specDigest } from '../scheduler/state.js';
import { decodeSnapshot, encodeSnapshot } from '../scheduler/state-machine.js';
import { ThreadedRaftGroup } from '../scheduler/threads/group.js';
import { connect, type RemoteScheduler } from '../src/api/client.js';
import { assert } from '../src/lib/assert.js';
import { createRng } from '../src/lib/prng.js';
import { startTestCluster } from '../src/testing/cluster.js';
import { generateCluster, generateRequests } from '../src/testing/generate.js';
import { cliMain, spawnReplica, stopReplica } from '../src/testing/replica-process.js';
import { startNats } from '../src/testing/servers.js';

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i < 0 ? undefined : process.argv[i + 1];
}

/** User plus system CPU seconds since `from`: the figure that holds on a machine shared with other work. */
function cpuSecondsSince(from: NodeJS.CpuUsage): number {
  const d = process.cpuUsage(from);
  return (d.user + d.system) / 1e6;
}

/**
 * This process's minor page faults so far (`/proc/self/stat` field 10; 0 where there is no /proc): a first
 * touch of fresh memory is one, and on this benchmark's microVM each costs ~16 µs (docs/benchmarks.md).
 */
function minorFaults(of: 'self' | 'thread-self' = 'self'): number {
  if (!existsSync(`/proc/${of}/stat`)) return 0;
  const stat = readFileSync(`/proc/${of}/stat`, 'utf8');
  // Fields after the command name (which may hold spaces) start at field 3, so field 10 is index 7.
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[7]);
}

/**
 * The calling thread's time on a core and time waiting for one (`/proc/thread-self/schedstat`, ns), in ms:
 * `process.cpuUsage()` also counts V8's GC and compiler threads, and a batch's wall time on a shared machine
 * is partly the neighbours'.
 */
function threadSched(): { onCpuMs: number; waitMs: number } {
  if (!existsSync('/proc/thread-self/schedstat')) return { onCpuMs: 0, waitMs: 0 };
  const [run, wait] = readFileSync('/proc/thread-self/schedstat', 'utf8').split(' ');
  return { onCpuMs: Number(run) / 1e6, waitMs: Number(wait) / 1e6 };
}

if (process.argv.includes('--scale')) {
  await scale();
  process.exit(0);
}

/**
 * `--scale`: one replica's state machine holding 1,000,000 sandboxes on 10,000 nodes, built by applying
 * place commands directly (no log): heap, time to take and to restore a snapshot, and the latency of
 * planning and applying a 1,000-create batch at that size against the same nodes empty.
 */
async function scale(): Promise<void> {
  const nodeCount = Number(arg('nodes') ?? 10_000);
  const total = Number(arg('sandboxes') ?? 1_000_000);
  const specs = generateCluster(createRng(11), { nodes: nodeCount, notReadyShare: 0, gpuShare: 0 });
  let state = SchedulerState.empty();
  let index = 0;
  for (const spec of specs)
    state = applyCommand(state, { type: 'node.register', atMs: 1, spec }, ++index).state;
  const empty = state;
  const spec = { tenant: 'bench', resources: { cpu: 10, memory: 16, disk: 16 } };
  const digest = specDigest(spec);
  const batchOf = (base: SchedulerState, from: number, n: number) => {
    const plan = planBatch(
      base.index,
      Array.from({ length: n }, (_, i) => ({
        id: `x${from + i}`,
        tenant: 'bench',
        resources: spec.resources,
      })),
    );
    return plan.placements.map((p) => ({
      requestId: p.requestId,
      sandboxId: p.requestId,
      spec,
      specDigest: digest,
      nodeId: p.nodeId,
      gpuDevices: [],
    }));
  };
  const timeBatch = (base: SchedulerState, from: number): number => {
    const t0 = performance.now();
    const items = batchOf(base, from, 1000);
    applyCommand(base, { type: 'place', atMs: 2, items }, base.applied + 1);
    return performance.now() - t0;
  };
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;
  const emptyMs = median(Array.from({ length: 5 }, (_, k) => timeBatch(empty, 10_000_000 + k * 1000)));
  for (let done = 0; done < total; done += 10_000) {
    state = applyCommand(
      state,
      { type: 'place', atMs: 2, items: batchOf(state, done, Math.min(10_000, total - done)) },
      ++index,
    ).state;
  }
  // --steady: each streamed batch also retires the 1,000 oldest sandboxes (a node's `terminated` report), so
  // the replica holds `total` throughout, as the goal states it; without it the stream grows the state to ~3x.
  // A replica in service has applied status entries before: a few such batches run first, so the stream's
  // first batch is not the one that compiles (and deoptimises) the status and removal paths.
  const steady = process.argv.includes('--steady');
  const oldest = (r: number) => (r < total ? `x${r}` : `x${30_000_000 + (r - total)}`);
  const retire = steady
    ? (b: number): StatusItem[] =>
        Array.from({ length: 1000 }, (_, i) => ({
          sandboxId: oldest(b * 1000 + i),
          state: 'terminated' as const,
        }))
    : undefined;
  // A local, not a module constant: --scale runs from the top-level await above the module's declarations.
  const warmBatches = steady ? 20 : 0;
  for (let b = 0; b < warmBatches && retire !== undefined; b++) {
    state = applyCommand(
      state,
      { type: 'place', atMs: 2, items: batchOf(state, 30_000_000 + b * 1000, 1000) },
      ++index,
    ).state;
    state = applyCommand(state, { type: 'status', atMs: 2, items: retire(b) }, ++index).state;
  }
  (globalThis as { gc?: () => void }).gc?.();
  const heapMiB = Math.round(process.memoryUsage().heapUsed / 2 ** 20);
  let t0 = performance.now();
  let c0 = process.cpuUsage();
  const bytes = encodeSnapshot(state);
  const snapshotSeconds = (performance.now() - t0) / 1000;
  const snapshotCpuSeconds = cpuSecondsSince(c0);
  const sandboxCount = state.sandboxes.size;
  // Streaming first: its batches continue the state's own line, as a replica's apply does. The timed
  // batches after it are forks of that state (drafts from a version that already has a successor), which a
  // replica never makes; a fork's keys go into the line's shared key map, checked by its own key column
  // (scheduler/core/slot-table.ts).
  const streamed = await streamWhileApplying(state, batchOf, retire, warmBatches);
  const fullMs = median(Array.from({ length: 5 }, (_, k) => timeBatch(state, 20_000_000 + k * 1000)));
  // A replica restoring a snapshot does not also hold the state it came from: drop it before timing.
  state = SchedulerState.empty();
  (globalThis as { gc?: () => void }).gc?.();
  t0 = performance.now();
  c0 = process.cpuUsage();
  const restored = decodeSnapshot(bytes);
  const restoreSeconds = (performance.now() - t0) / 1000;
  const restoreCpuSeconds = cpuSecondsSince(c0);
  const restoreStepMsMax = await longestRestoreStep(bytes);
  const result = {
    sandboxes: sandboxCount,
    steady,
    restoredSandboxes: restored.sandboxes.size,
    nodes: nodeCount,
    heapMiB,
    snapshotMiB: Math.round(bytes.byteLength / 2 ** 20),
    snapshotSeconds: Number(snapshotSeconds.toFixed(2)),
    restoreSeconds: Number(restoreSeconds.toFixed(2)),
    snapshotCpuSeconds: Number(snapshotCpuSeconds.toFixed(2)),
    restoreCpuSeconds: Number(restoreCpuSeconds.toFixed(2)),
    ...streamed,
    restoreStepMsMax: Number(restoreStepMsMax.toFixed(1)),
    batch1000EmptyMs: Number(emptyMs.toFixed(1)),
    batch1000FullMs: Number(fullMs.toFixed(1)),
  };
  console.log(JSON.stringify(result));
  const jsonPath = arg('json');
  if (jsonPath !== undefined) writeFileSync(jsonPath, `${JSON.stringify(result, null, 2)}\n`);
}

/**
 * Writes a snapshot of `state` the way a replica does (writeSnapshot: one frame per event-loop turn) while
 * the same loop keeps applying 1,000-create batches onto newer versions, as a leader under load would.
 * Reports the writer's wall and CPU seconds, its longest frame, and the longest event-loop stall seen
 * meanwhile (perf_hooks' loop-delay histogram: the longest time anything waited for the loop).
 */
async function streamWhileApplying(
  state: SchedulerState,
  batchOf: (base: SchedulerState, from: number, n: number) => PlaceItem[],
  retire?: (batch: number) => StatusItem[],
  firstBatch = 0,
): Promise<Record<string, number | Record<string, number | string>[]>> {
  const loop = monitorEventLoopDelay({ resolution: 1 });
  // Garbage collections as V8 reports them (start, duration, kind), to tell a GC pause from apply's own work:
  // the longest batch is reported with the GC time that fell inside it.
  const gcs: { start: number; ms: number; kind: number }[] = [];
  const gcObserver = new PerformanceObserver((list) => {
    for (const e of list.getEntries())
      gcs.push({
        start: e.startTime,
        ms: e.duration,
        kind: (e as unknown as { detail?: { kind?: number } }).detail?.kind ?? 0,
      });
  });
  gcObserver.observe({ entryTypes: ['gc'] });
  let done = false;
  let live = state;
  let batches = 0;
  let batchMsMax = 0;
  let longest = { start: 0, end: 0, sandboxesBefore: 0, planMs: 0, applyMs: 0 };
  const batchMs: number[] = [];
  // Each batch is planned (planBatch on the index) and then applied: timed apart, so the longest batch says
  // which of the two it was, and with --profile-longest which functions ran inside it.
  const batchSpans: BatchSpan[] = [];
  const profiler = arg('profile-longest') === undefined ? undefined : await startProfiler();
  // --mark-batches: a line on stdout (written at once, as V8's --trace-* lines are) at each batch's start and
  // end, so a trace of deoptimisations or GCs can be cut by batch.
  const markBatches = process.argv.includes('--mark-batches');
  const applying = (async () => {
    while (!done) {
      const t = performance.now();
      const startUs = hrtimeUs();
      const sandboxesBefore = live.sandboxes.size;
      const faults0 = minorFaults();
      const threadFaults0 = minorFaults('thread-self');
      const sched0 = threadSched();
      const cpu0 = process.cpuUsage();
      if (markBatches) writeSync(1, `[bench] batch ${batches} start\n`);
      const items = batchOf(live, 30_000_000 + (firstBatch + batches) * 1000, 1000);
      const planned = performance.now();
      live = applyCommand(live, { type: 'place', atMs: 3, items }, live.applied + 1).state;
      if (retire !== undefined)
        live = applyCommand(
          live,
          { type: 'status', atMs: 3, items: retire(firstBatch + batches) },
          live.applied + 1,
        ).state;
      const end = performance.now();
      const cpu = process.cpuUsage(cpu0);
      const faults = minorFaults() - faults0;
      const sched = threadSched();
      batchMs.push(end - t);
      if (markBatches)
        writeSync(
          1,
          `[bench] batch ${batches} end: ${(sched.onCpuMs - sched0.onCpuMs).toFixed(1)} ms on CPU\n`,
        );
      batchSpans.push({
        startUs,
        endUs: hrtimeUs(),
        start: t,
        end,
        planMs: planned - t,
        applyMs: end - planned,
        cpuMs: (cpu.user + cpu.system) / 1000,
        mainOnCpuMs: sched.onCpuMs - sched0.onCpuMs,
        mainWaitMs: sched.waitMs - sched0.waitMs,
        faults,
        mainFaults: minorFaults('thread-self') - threadFaults0,
        batch: batches,
        sandboxesBefore,
      });
      if (end - t > batchMsMax)
        longest = { start: t, end, sandboxesBefore, planMs: planned - t, applyMs: end - planned };
      batchMsMax = Math.max(batchMsMax, end - t);
      batches++;
      await new Promise((resolve) => setImmediate(resolve));
    }
  })();
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  loop.enable();
  const frameTimes: number[] = [];
  let last = performance.now();
  const frames: Uint8Array[] = [];
  for (const frame of snapshotFrames(state)) {
    const now = performance.now();
    frameTimes.push(now - last);
    frames.push(frame);
    await new Promise((resolve) => setImmediate(resolve));
    last = performance.now();
  }
  const bytes = concatFrames(frames);
  loop.disable();
  const seconds = (performance.now() - t0) / 1000;
  const cpuSeconds = cpuSecondsSince(c0);
  done = true;
  await applying;
  const profile = await profiler?.stop();
  const onCpu =
    profile === undefined ? {} : writeLongestProfiles(profile, batchSpans, arg('profile-longest') as string);
  // Entries are delivered after the fact: let the observer's queue drain before reading it.
  await new Promise((resolve) => setTimeout(resolve, 50));
  gcObserver.disconnect();
  assert(bytes.length > 0, 'a snapshot was written', {});
  const inLongest = gcs.filter((g) => g.start < longest.end && g.start + g.ms > longest.start);
  const gcMsInLongest = inLongest.reduce((a, g) => a + g.ms, 0);
  // Node's kinds (perf_hooks.constants.NODE_PERFORMANCE_GC_*): 1 minor, 4 major, 8 incremental, 16 weak callbacks.
  const major = gcs.filter((g) => g.kind === 4);
  const sorted = [...batchMs].sort((a, b) => a - b);
  const faults = batchSpans.map((b) => b.faults);
  return {
    longestBatches: accountLongest(batchSpans, gcs, (b) => b.end - b.start),
    // On a shared machine a batch's wall time is partly the neighbours': the same by the main thread's CPU.
    longestBatchesOnCpu: accountLongest(batchSpans, gcs, (b) => b.mainOnCpuMs),
    mostFaultingBatches: accountLongest(batchSpans, gcs, (b) => b.mainFaults),
    batchFaultsTotal: faults.reduce((a, f) => a + f, 0),
    batchFaultsMax: Math.max(0, ...faults),
    batchApplyMsP50: Number((sorted[Math.floor(sorted.length / 2)] ?? 0).toFixed(1)),
    batchApplyMsP99: Number((sorted[Math.floor(sorted.length * 0.99)] ?? 0).toFixed(1)),
    gcMsInLongestBatch: Number(gcMsInLongest.toFixed(1)),
    gcCountInLongestBatch: inLongest.length,
    longestBatchSandboxesBefore: longest.sandboxesBefore,
    longestBatchPlanMs: Number(longest.planMs.toFixed(1)),
    longestBatchApplyMs: Number(longest.applyMs.toFixed(1)),
    planMsMax: Number(Math.max(...batchSpans.map((b) => b.planMs)).toFixed(1)),
    applyMsMax: Number(Math.max(...batchSpans.map((b) => b.applyMs)).toFixed(1)),
    ...onCpu,
    majorGcs: major.length,
    majorGcMsMax: Number(Math.max(0, ...major.map((g) => g.ms)).toFixed(1)),
    minorGcMsMax: Number(Math.max(0, ...gcs.filter((g) => g.kind === 1).map((g) => g.ms)).toFixed(1)),
    streamedSnapshotSeconds: Number(seconds.toFixed(2)),
    streamedSnapshotCpuSeconds: Number(cpuSeconds.toFixed(2)),
    snapshotFrameMsMax: Number(Math.max(...frameTimes).toFixed(1)),
    batchesAppliedMeanwhile: batches,
    batchApplyMsMax: Number(batchMsMax.toFixed(1)),
    eventLoopStallMsMax: Number((loop.max / 1e6).toFixed(1)),
  };
}

interface BatchSpan {
  startUs: number;
  endUs: number;
  /** performance.now() at the batch's start and end (the GC observer's clock). */
  start: number;
  end: number;
  planMs: number;
  /** User + system CPU of the process during the batch (V8's helper threads included). */
  cpuMs: number;
  /** The main thread's time on a core, and waiting in the run queue for one, during the batch. */
  mainOnCpuMs: number;
  mainWaitMs: number;
  /** Minor page faults taken during the batch, by the process and by the main thread. */
  faults: number;
  mainFaults: number;
  /** The batch's number in the stream (0 first). */
  batch: number;
  applyMs: number;
  sandboxesBefore: number;
}

/**
 * The longest batches by `key` (wall or CPU time), each with what it was made of: CPU (user + system), minor page faults and
 * their cost at the ~16 µs a fault measured on this machine, and the GC pauses that fell inside it by kind, so
 * that every long batch is attributed (faults, GC, or the batch's own work; wall − CPU is time off the core).
 */
function accountLongest(
  spans: readonly BatchSpan[],
  gcs: readonly { start: number; ms: number; kind: number }[],
  key: (b: BatchSpan) => number,
): Record<string, number | string>[] {
  // Locals, not module constants: --scale runs from the top-level await above their declarations.
  const accountedBatchesMax = 8;
  const faultUsEstimate = 16;
  const kindName: Record<number, string> = { 1: 'minor', 4: 'major', 8: 'incremental', 16: 'weak' };
  return [...spans]
    .sort((a, b) => key(b) - key(a))
    .slice(0, accountedBatchesMax)
    .map((b) => {
      const inside = gcs.filter((g) => g.start < b.end && g.start + g.ms > b.start);
      const byKind = new Map<string, number>();
      for (const g of inside) {
        const k = kindName[g.kind] ?? String(g.kind);
        byKind.set(k, (byKind.get(k) ?? 0) + g.ms);
      }
      return {
        ms: Number((b.end - b.start).toFixed(1)),
        batch: b.batch,
        sandboxesBefore: b.sandboxesBefore,
        cpuMs: Number(b.cpuMs.toFixed(1)),
        mainOnCpuMs: Number(b.mainOnCpuMs.toFixed(1)),
        mainWaitMs: Number(b.mainWaitMs.toFixed(1)),
        planMs: Number(b.planMs.toFixed(1)),
        applyMs: Number(b.applyMs.toFixed(1)),
        faults: b.faults,
        mainFaults: b.mainFaults,
        mainFaultMsEstimate: Number(((b.mainFaults * faultUsEstimate) / 1000).toFixed(1)),
        gcMs: Number(inside.reduce((a, g) => a + g.ms, 0).toFixed(1)),
        gcByKind: [...byKind].map(([k, ms]) => `${k} ${ms.toFixed(1)}`).join(', '),
      };
    });
}

/** The monotonic clock V8's CPU profiler stamps its samples with (CLOCK_MONOTONIC), in µs. */
function hrtimeUs(): number {
  return Number(process.hrtime.bigint() / 1000n);
}

interface CpuProfile {
  nodes: {
    id: number;
    callFrame: { functionName: string; url: string; lineNumber: number };
    children?: number[];
  }[];
  startTime: number;
  samples: number[];
  timeDeltas: number[];
}

/** Profile samples every 100 µs of this thread, through the inspector, until stop(). */
async function startProfiler(): Promise<{ stop(): Promise<CpuProfile> }> {
  const { Session } = await import('node:inspector/promises');
  const session = new Session();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.setSamplingInterval', { interval: 100 });
  await session.post('Profiler.start');
  return {
    async stop() {
      const { profile } = (await session.post('Profiler.stop')) as unknown as { profile: CpuProfile };
      session.disconnect();
      return profile;
    },
  };
}

/**
 * `--profile-longest FILE`: the CPU samples that fell inside each batch of the stream. On a shared machine a
 * batch's wall time is mostly the OS's (a gap between two samples of more than `offCpuGapUs` is time this
 * thread was off its core), so batches are ranked by their on-CPU time; for the longest by that measure and by
 * wall time, the samples are summed by function (self and inclusive, ms at the 100 µs interval) and written as
 * JSON: what a batch spent its time on, where a whole-run profile would drown one batch among two thousand.
 * Returns the longest on-CPU batch (ms) and where it was.
 */
function writeLongestProfiles(
  profile: CpuProfile,
  spans: readonly BatchSpan[],
  path: string,
): { onCpuMsMax: number; onCpuMsMaxSandboxesBefore: number; onCpuMsMaxGcMs: number } {
  // Locals, not module constants: --scale runs from the top-level await above their declarations.
  /** Batches whose samples are broken down by function, per ranking. */
  const profiledBatchesMax = 6;
  /** Functions listed per batch, by self and by inclusive time. */
  const profiledFunctionsMax = 25;
  /** A gap between two samples this long (10× the interval) is time the thread was not on a core. */
  const offCpuGapUs = 1000;
  const parent = new Map<number, number>();
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const name = (id: number) => {
    const f = (byId.get(id) as CpuProfile['nodes'][number]).callFrame;
    return `${f.functionName || '(anonymous)'} ${f.url.split('/').slice(-2).join('/')}:${f.lineNumber + 1}`;
  };
  const times: number[] = [];
  let t = profile.startTime;
  for (const d of profile.timeDeltas) {
    t += d;
    times.push(t);
  }
  /** Sample indexes inside a span (samples and spans are both in time order). */
  const samplesOf = (span: BatchSpan): number[] => {
    const out: number[] = [];
    let lo = 0;
    let hi = times.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((times[mid] as number) < span.startUs) lo = mid + 1;
      else hi = mid;
    }
    for (let i = lo; i < times.length && (times[i] as number) <= span.endUs; i++) out.push(i);
    return out;
  };
  const usOf = (i: number) => ((times[i + 1] ?? times[i]) as number) - (times[i] as number);
  const onCpuUs = spans.map((span) =>
    samplesOf(span).reduce((a, i) => (usOf(i) > offCpuGapUs ? a : a + usOf(i)), 0),
  );
  const top = (m: Map<string, number>) =>
    [...m]
      .sort((a, b) => b[1] - a[1])
      .slice(0, profiledFunctionsMax)
      .map(([fn, us]) => ({ fn, ms: Number((us / 1000).toFixed(1)) }));
  const breakdown = (k: number) => {
    const span = spans[k] as BatchSpan;
    const self = new Map<string, number>();
    const incl = new Map<string, number>();
    let offCpu = 0;
    for (const i of samplesOf(span)) {
      const us = usOf(i);
      if (us > offCpuGapUs) {
        offCpu += us;
        continue;
      }
      const leaf = profile.samples[i] as number;
      self.set(name(leaf), (self.get(name(leaf)) ?? 0) + us);
      const seen = new Set<string>();
      for (let id: number | undefined = leaf; id !== undefined; id = parent.get(id)) {
        const n = name(id);
        if (!seen.has(n)) incl.set(n, (incl.get(n) ?? 0) + us);
        seen.add(n);
      }
    }
    return {
      ms: Number(((span.endUs - span.startUs) / 1000).toFixed(1)),
      onCpuMs: Number(((onCpuUs[k] as number) / 1000).toFixed(1)),
      offCpuMs: Number((offCpu / 1000).toFixed(1)),
      planMs: Number(span.planMs.toFixed(1)),
      applyMs: Number(span.applyMs.toFixed(1)),
      sandboxesBefore: span.sandboxesBefore,
      self: top(self),
      inclusive: top(incl),
    };
  };
  const ranked = (key: (k: number) => number) =>
    spans
      .map((_, k) => k)
      .sort((a, b) => key(b) - key(a))
      .slice(0, profiledBatchesMax);
  const byOnCpu = ranked((k) => onCpuUs[k] as number);
  const byWall = ranked((k) => (spans[k] as BatchSpan).endUs - (spans[k] as BatchSpan).startUs);
  const out = { longestOnCpu: byOnCpu.map(breakdown), longestWall: byWall.map(breakdown) };
  writeFileSync(path, `${JSON.stringify(out, null, 2)}\n`);
  const first = out.longestOnCpu[0];
  return {
    onCpuMsMax: first?.onCpuMs ?? 0,
    onCpuMsMaxSandboxesBefore: first?.sandboxesBefore ?? 0,
    // GC samples inside it: they include incremental marking steps, which the GC observer does not report.
    onCpuMsMaxGcMs: first?.self.find((f) => f.fn.startsWith('(garbage collector)'))?.ms ?? 0,
  };
}

/** The longest single step of a frame-by-frame restore (SnapshotReader), in ms. */
async function longestRestoreStep(bytes: Uint8Array): Promise<number> {
  if (!isFramedSnapshot(bytes)) return Number.NaN;
  const reader = new SnapshotReader(bytes);
  let max = 0;
  for (;;) {
    const t = performance.now();
    if (!reader.step()) break;
    max = Math.max(max, performance.now() - t);
    await new Promise((resolve) => setImmediate(resolve));
  }
  reader.finish();
  return max;
}

const sandboxes = Number(arg('sandboxes') ?? 100_000);
const nodes = Number(arg('nodes') ?? 1000);
const jsonPath = arg('json');
const transport = arg('transport') ?? 'in-process';
if (transport !== 'in-process' && transport !== 'nats')
  throw new Error(`--transport in-process|nats, got ${transport}`);
const logKind = arg('log') === 'in-process' ? 'in-process' : 'raft';

// Small shapes only, so 100,000 of them fit on 1,000 nodes and every create can be placed.
const requests = generateRequests(createRng(7), {
  requests: sandboxes,
  tenants: 16,
  constraintShare: 0,
  gpuShare: 0,
}).map((r: PlacementRequest) => ({
  tenant: r.tenant,
  resources: { cpu: 100, memory: 128, disk: 256 },
  ...(r.constraints === undefined ? {} : { constraints: [...r.constraints] }),
}));

interface Run {
  placed: number;
  failed: number;
  placedSeconds: number;
  latenciesMs: Float64Array;
}

/**
 * Submits every create through `apis` (round robin) with at most `window` in flight (all at once when
 * undefined), and times them until the last one resolves.
 */
async function runCreates(apis: readonly SchedulerApi[], window?: number): Promise<Run> {
  const latenciesMs = new Float64Array(sandboxes);
  let placed = 0;
  let failed = 0;
  let next = 0;
  const startMs = performance.now();
  // One `then` per create and a count of those still out, not an async frame per create and Promise.all
  // over 100,000 promises: with every create in flight at once, whatever the client keeps per create
  // survives young-generation GCs and is copied by them, on the thread that also runs the replicas.
  let settle = (): void => {};
  let out = 0;
  const one = (i: number): Promise<void> => {
    const t0 = performance.now();
    const api = apis[i % apis.length] as SchedulerApi;
    out++;
    return api.create(requests[i] as SandboxSpec, { requestId: `b-${i}` }).then(
      () => {
        placed++;
        latenciesMs[i] = performance.now() - t0;
        if (--out === 0) settle();
      },
      () => {
        failed++;
        latenciesMs[i] = performance.now() - t0;
        if (--out === 0) settle();
      },
    );
  };
  const lane = async (): Promise<void> => {
    while (next < sandboxes) await one(next++);
  };
  if (window === undefined) {
    const done = new Promise<void>((resolve) => {
      settle = resolve;
    });
    for (let i = 0; i < sandboxes; i++) void one(i);
    if (out > 0) await done;
  } else {
    await Promise.all(Array.from({ length: window }, lane));
  }
  return { placed, failed, placedSeconds: (performance.now() - startMs) / 1000, latenciesMs };
}

/** User plus system CPU seconds a process has used, from /proc (Linux), or 0 when it is gone. */
function cpuSecondsOf(pid: number | undefined): number {
  if (pid === undefined) return 0;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the command; in clock ticks (100 Hz).
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return 0;
  }
}

function selfCpuSeconds(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

function summary(what: string, run: Run, batches: number, meanBatch: number, extra: Record<string, unknown>) {
  const sorted = [...run.latenciesMs].sort((a, b) => a - b);
  return {
    log: what,
    sandboxes,
    nodes,
    placed: run.placed,
    failed: run.failed,
    placedSeconds: Number(run.placedSeconds.toFixed(3)),
    placementsPerSec: Math.round(run.placed / run.placedSeconds),
    p50Ms: Number((sorted[Math.floor(sorted.length * 0.5)] ?? 0).toFixed(1)),
    p99Ms: Number((sorted[Math.floor(sorted.length * 0.99)] ?? 0).toFixed(1)),
    batchesPerSec: Number((batches / run.placedSeconds).toFixed(1)),
    meanBatch: Number(meanBatch.toFixed(1)),
    ...extra,
  };
}

/** The in-process group: 3 replicas of a Raft group in this process (or the stand-in log). */
async function inProcess(): Promise<Record<string, unknown>> {
  const dir = logKind === 'raft' ? await mkdtemp(join(tmpdir(), 'trellis-bench-sched-')) : undefined;
  const cluster = await startTestCluster({
    seed: 7,
    nodes,
    // --replicas 1: the leader's own work alone (no follower applying on this thread), for the bound.
    replicas: Number(arg('replicas') ?? 3),
    // --in-flight N: batches the leader keeps in Raft at once (default 4): with followers on other threads a
    // batch's commit waits for a follower that may still be applying the previous one.
    pipeline: {
      pendingTimeoutMs: 60_000,
      ...(arg('in-flight') === undefined ? {} : { inFlightBatchesMax: Number(arg('in-flight')) }),
    },
    log: logKind,
    ...(dir === undefined ? {} : { dir }),
    // --threads: replicas 1..N-1 (the followers) on worker threads, their apply and WAL off this thread.
    threads: process.argv.includes('--threads'),
    // --worker-nice N: the worker threads' priority lowered by N (Linux), so the leader's thread keeps a core.
    ...(arg('worker-nice') === undefined ? {} : { workerNice: Number(arg('worker-nice')) }),
  });
  // Leadership should not move during the run (an election would send every create in flight to a retry).
  let leaderChanges = 0;
  const offLeader = cluster.log.onLeaderChange(() => {
    leaderChanges++;
  });
  const threaded = cluster.log instanceof ThreadedRaftGroup ? cluster.log : undefined;
  const workerIds = Array.from({ length: (threaded?.size ?? 1) - 1 }, (_, k) => k + 1);
  const workers0 = await Promise.all(workerIds.map((i) => threaded?.threadCpuMs(i)));
  const cpu0 = selfCpuSeconds();
  const main0 = threadSched();
  const run = await runCreates([cluster.scheduler]);
  const cpuSeconds = selfCpuSeconds() - cpu0;
  // With --threads, each worker thread's own time on a core during the run (its apply lags: it may go on a
  // little after the last create is answered, which this does not count).
  const workers1 = await Promise.all(workerIds.map((i) => threaded?.threadCpuMs(i)));
  const workerCpuSeconds = workerIds.map((_, k) =>
    Number((((workers1[k]?.onCpuMs ?? 0) - (workers0[k]?.onCpuMs ?? 0)) / 1000).toFixed(2)),
  );
  // The main thread's own time on a core (cpuSeconds also counts V8's helper threads and, with --threads,
  // the followers' worker threads), and its time waiting for a core: what bounds the wall time.
  const main1 = threadSched();
  offLeader();
  const stats = cluster.scheduler.stats();
  const heapMiB = Math.round(process.memoryUsage().heapUsed / 2 ** 20);
  // With --expose-gc, what the group retains once every create is answered (heapMiB counts garbage too).
  const gc = (globalThis as { gc?: () => void }).gc;
  gc?.();
  const retained =
    gc === undefined ? {} : { heapRetainedMiB: Math.round(process.memoryUsage().heapUsed / 2 ** 20) };
  const result = summary(
    logKind === 'raft' ? 'raft, file storage, fsync' : 'in-process (no Raft, memory)',
    run,
    stats.batches,
    stats.meanBatch,
    {
      transport: 'in-process',
      replicas: cluster.log.size,
      threads: process.argv.includes('--threads'),
      workerNice: Number(arg('worker-nice') ?? 0),
      cpuSeconds: Number(cpuSeconds.toFixed(1)),
      mainThreadCpuSeconds: Number(((main1.onCpuMs - main0.onCpuMs) / 1000).toFixed(2)),
      mainThreadWaitSeconds: Number(((main1.waitMs - main0.waitMs) / 1000).toFixed(2)),
      ...(threaded === undefined ? {} : { workerCpuSeconds }),
      leaderChanges,
      heapMiB,
      ...retained,
    },
  );
  await cluster.close();
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  return result;
}

/** 3 `trellis server` processes and a nats-server; the creates come from remote clients over NATS. */
async function overNats(): Promise<Record<string, unknown>> {
  if (!existsSync(cliMain)) throw new Error(`${cliMain} missing: run npm run build first`);
  const clientsCount = Number(arg('clients') ?? 4);
  const window = Number(arg('window') ?? 2_000);
  const nats = await startNats();
  const root = await mkdtemp(join(tmpdir(), 'trellis-bench-nats-'));
  const ids = ['a', 'b', 'c'];
  const cluster = 'bench';
  const procs: ChildProcess[] = ids.map((id) =>
    spawnReplica({ id, peers: ids, natsUrl: nats.url, root, cluster, state: 'scheduler' }),
  );
  const clients: RemoteScheduler[] = [];
  try {
    for (let k = 0; k < clientsCount; k++) {
      clients.push(
        await connect({ servers: nats.url, cluster, timeoutMs: 120_000, attemptTimeoutMs: 30_000 }),
      );
    }
    const admin = clients[0] as RemoteScheduler;
    const specs = generateCluster(createRng(7), { nodes, notReadyShare: 0 });
    await admin.registerNode(specs[0] as (typeof specs)[number]); // waits for a leader
    await Promise.all(specs.slice(1).map((n) => admin.registerNode(n)));
    const natsPid = Number(readFileSync(join(nats.dir, 'nats.pid'), 'utf8').trim());
    const cpuOf = () =>
      selfCpuSeconds() + procs.reduce((a, p) => a + cpuSecondsOf(p.pid), 0) + cpuSecondsOf(natsPid);
    const cpu0 = cpuOf();
    const self0 = selfCpuSeconds();
    const run = await runCreates(clients, window);
    const cpuSeconds = cpuOf() - cpu0;
    const clientCpuSeconds = selfCpuSeconds() - self0;
    const stats = await admin.stats();
    return summary('raft over NATS, 3 processes, file storage, fsync', run, stats.batches, stats.meanBatch, {
      transport: 'nats',
      clients: clientsCount,
      window,
      cpuSeconds: Number(cpuSeconds.toFixed(1)),
      clientCpuSeconds: Number(clientCpuSeconds.toFixed(1)),
    });
  } finally {
    for (const c of clients) await c.close();
    await Promise.all(procs.map((p) => stopReplica(p)));
    await nats.stop();
    await rm(root, { recursive: true, force: true });
  }
}

const results = [await inProcess()];
console.log(JSON.stringify(results[0]));
if (transport === 'nats') {
  results.push(await overNats());
  console.log(JSON.stringify(results[1]));
}
const out = results.length === 1 ? results[0] : results;
if (jsonPath !== undefined) writeFileSync(jsonPath, `${JSON.stringify(out, null, 2)}\n`);
