/**
 * One load run, end to end: start the cluster (cluster.ts), wait for every simulated node, drive the
 * sandboxes (driver.ts) with the chaos schedule beside it when asked (chaos.ts), drain, read every replica and
 * check (checker.ts), then report and stop every process. `npm run bench:load` and `trellis bench load` call
 * `runLoad`; the scaled-down test calls it too, so all three go through the same code and the same checker.
 *
 * Whatever happens — success, a failure, Ctrl-C — every process it started is stopped (processes.ts): the
 * normal path stops them in order, an interrupt runs the same stop, and an exit hook SIGKILLs any group left.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { type NatsConnection, connect as natsConnect } from 'nats';
import type { SchedulerApi } from '../../scheduler/api.js';
import { connect } from '../api/client.js';
import { assert } from '../lib/assert.js';
import { ConfigError } from '../lib/errors.js';
import { bootsConcurrentLimit } from '../worker/node-worker.js';
import { type ChaosLog, type ChaosOptions, runChaos } from './chaos.js';
import { type CheckResult, check } from './checker.js';
import {
  LoadCluster,
  type NatsTraffic,
  type NodeShape,
  natsTraffic,
  scrape,
  type UnexpectedExit,
} from './cluster.js';
import { loadDefaults, loadNodesMax, loadSandboxesMax } from './defaults.js';
import { type DriveResult, drive, type Phase, type Progress } from './driver.js';
import { alive, liveGroups, pause, resume, usageOf } from './processes.js';
import { histogramOf, type PromHistogram, quantileOf, sampleOf } from './prom-text.js';
import { type ReplicaView, readReplica, replicaStatus } from './replicas.js';

export { loadDefaults, loadNodesMax, loadSandboxesMax };

export interface LoadOptions {
  readonly nodes: number;
  readonly sandboxes: number;
  readonly replicas: number;
  /** Creates per minute; undefined: full speed. */
  readonly ratePerMin?: number;
  readonly chaos?: ChaosOptions;
  /** Where replicas and workers keep their data; a temporary directory (removed after) when absent. */
  readonly dataDir?: string;
  readonly wait: 'placed' | 'running';
  readonly exec: boolean;
  readonly clients: number;
  readonly inFlight: Readonly<Record<Phase, number>>;
  /** How long after the last sandbox the run waits for stragglers before checking. */
  readonly drainMs: number;
  readonly tickMs: number;
  /** Profile every replica's CPU (node --cpu-prof) into `<data>/profiles`. */
  readonly cpuProf: boolean;
  readonly cluster: string;
  /** Log level of every replica and worker (their output goes to `<data>/<name>.log`). */
  readonly logLevel: string;
  /** Progress lines and the live bar go here; silent when absent. */
  readonly onProgress?: (p: Progress & { readonly total: number }) => void;
  readonly log?: (line: string) => void;
}

/** Each sandbox asks for this; nodes are sized so every sandbox could be held at once (1.5x headroom). */
export const sandboxResources = { cpu: 250, memory: 256, disk: 1_024 } as const;

/** How long the driver retries one call (same request id) before it gives that sandbox up. */
export const callRetryMs = 120_000;

export interface ProcessFigures {
  readonly name: string;
  readonly cpuSeconds: number;
  /** CPU seconds over the run's wall time, in percent of one core. */
  readonly cpuPercent: number;
  readonly rssMaxMiB: number;
}

export interface LoadReport {
  readonly options: Omit<LoadOptions, 'onProgress' | 'log'>;
  readonly drive: Omit<DriveResult, 'acks'>;
  readonly check: CheckResult;
  readonly placementBatch: PromHistogram;
  readonly placementBatchP50Ms: number | undefined;
  readonly placementBatchP99Ms: number | undefined;
  readonly raftCommitsPerSecond: number;
  readonly raftEntryBytesMean: number | undefined;
  /** The highest Raft term when driving started and ended: each step is an election. */
  readonly raftTerms: { readonly first: number; readonly last: number };
  /**
   * Messages nats-server took in from each connection while driving, per sandbox (`out`: delivered to it),
   * by connection name, and in total; undefined when its monitoring port did not answer.
   */
  readonly natsMessagesPerSandbox:
    | {
        readonly in: number;
        readonly out: number;
        readonly byConnection: Record<string, { in: number; out: number }>;
      }
    | undefined;
  readonly processes: readonly ProcessFigures[];
  readonly chaos: ChaosLog | undefined;
  /** Processes that exited without the harness (or the chaos schedule) causing it: each is a failure. */
  readonly unexpectedExits: readonly UnexpectedExit[];
  readonly wallSeconds: number;
}

/** The `--json` figures the issue names. Running is null when the run only waited for placement. */
export function jsonSummary(r: LoadReport) {
  return {
    sandboxes: r.options.sandboxes,
    nodes: r.options.nodes,
    allRunningSeconds: r.options.wait === 'running' ? round(r.drive.allCreatedSeconds) : null,
    allTerminatedSeconds: round(r.drive.allTerminatedSeconds),
    placementBatchP99Ms: r.placementBatchP99Ms === undefined ? null : round(r.placementBatchP99Ms),
    lostAcked: r.check.lostAcked,
    doublePlaced: r.check.doublePlaced,
    overCommitted: r.check.overCommitted,
    stuck: r.check.stuck,
    failoverMaxMs: round(r.check.failoverMaxMs),
    unexpectedExits: r.unexpectedExits.length,
  };
}

const round = (x: number): number => Math.round(x * 1_000) / 1_000;

function validate(o: LoadOptions): void {
  const int = (name: string, v: number, lo: number, hi: number): void => {
    if (!Number.isSafeInteger(v) || v < lo || v > hi)
      throw new ConfigError(`${name} must be an integer in ${lo}..${hi}, got ${v}`);
  };
  int('nodes', o.nodes, 1, loadNodesMax);
  int('sandboxes', o.sandboxes, 1, loadSandboxesMax);
  int('replicas', o.replicas, 1, 7);
  int('clients', o.clients, 1, 256);
  if (o.ratePerMin !== undefined && !(o.ratePerMin > 0 && Number.isFinite(o.ratePerMin)))
    throw new ConfigError(`rate must be a positive number of creates per minute, got ${o.ratePerMin}`);
}

/** Node capacity that holds every sandbox of the run at once, with headroom, on `nodes` nodes. */
export function nodeShapeFor(sandboxes: number, nodes: number): NodeShape {
  const perNode = Math.ceil((1.5 * sandboxes) / nodes) + 1;
  return {
    cpu: perNode * sandboxResources.cpu,
    memory: perNode * sandboxResources.memory,
    disk: perNode * sandboxResources.disk,
  };
}

/**
 * Boots (and execs) one simulated node runs at once: as many as the sandboxes it has room for. With 16 execs a
 * node and none queued, the 100,000 run's execs on the fullest nodes were refused WORKER_BUSY and retried
 * 28,758 times. With the worker's
 * default of 2 (QEMU under TCG), bin-packing put the run's in-flight creates on the few fullest nodes and
 * their boot queues set the pace: about 1,024 / (sandboxes per node) nodes × 2 boots / ~0.2 s — 96/s at
 * 100,000 sandboxes (151 a node), 225/s at 30,000 (46 a node), 328/s at 10,000 (16 a node), as measured.
 */
export function simBootsConcurrentFor(shape: NodeShape): number {
  return Math.min(bootsConcurrentLimit, Math.max(2, Math.floor(shape.cpu / sandboxResources.cpu)));
}

/** Samples each process's CPU and memory once a second, and keeps each replica's last /metrics per pid. */
class Sampler {
  readonly #cluster: LoadCluster;
  readonly cpuFirst = new Map<string, number>();
  readonly cpuLast = new Map<string, number>();
  readonly rssMax = new Map<string, number>();
  /** Last /metrics text per replica process (name:pid), so a killed one's counts are kept. */
  readonly metrics = new Map<string, string>();
  #timer: NodeJS.Timeout | undefined;
  #busy = false;

  constructor(cluster: LoadCluster) {
    this.#cluster = cluster;
  }

  start(everyMs = 1_000): void {
    this.#timer = setInterval(() => void this.sample(), everyMs);
  }

  async sample(): Promise<void> {
    if (this.#busy) return;
    this.#busy = true;
    try {
      for (const m of this.#cluster.members) {
        const key = `${m.name}:${m.process.pid}`;
        const u = await usageOf(m.process.pid);
        if (u !== undefined) {
          if (!this.cpuFirst.has(key)) this.cpuFirst.set(key, u.cpuSeconds);
          this.cpuLast.set(key, u.cpuSeconds);
          this.rssMax.set(m.name, Math.max(this.rssMax.get(m.name) ?? 0, u.rssBytes));
        }
        if (m.role === 'replica') {
          const text = await scrape(m.metricsPort);
          if (text !== undefined) this.metrics.set(key, text);
        }
      }
    } finally {
      this.#busy = false;
    }
  }

  stop(): void {
    clearInterval(this.#timer);
  }

  processes(wallSeconds: number): ProcessFigures[] {
    return this.#cluster.members.map((m) => {
      let cpu = 0;
      for (const [key, last] of this.cpuLast)
        if (key.startsWith(`${m.name}:`)) cpu += last - (this.cpuFirst.get(key) ?? last);
      return {
        name: m.name,
        cpuSeconds: round(cpu),
        cpuPercent: wallSeconds > 0 ? Math.round((100 * cpu) / wallSeconds) : 0,
        rssMaxMiB: Math.round((this.rssMax.get(m.name) ?? 0) / 2 ** 20),
      };
    });
  }
}

async function waitForNodes(client: SchedulerApi, nodes: number, log: (l: string) => void): Promise<void> {
  const deadline = Date.now() + 120_000;
  for (;;) {
    const views = await client.nodes().catch(() => []);
    const ready = views.filter((v) => v.state === 'ready').length;
    if (ready >= nodes) return;
    if (Date.now() > deadline)
      throw new ConfigError(`only ${ready} of ${nodes} nodes registered within 120 s`);
    log(`waiting for nodes: ${ready}/${nodes} ready`);
    await sleep(500);
  }
}

/** Waits until no sandbox is in a non-final state on the leader, or `drainMs` passes. */
async function drain(client: SchedulerApi, drainMs: number): Promise<void> {
  const deadline = Date.now() + drainMs;
  while (Date.now() < deadline) {
    const left = await client.list().catch(() => undefined);
    if (left?.every((s) => s.state === 'failed')) return;
    await sleep(500);
  }
}

/**
 * Reads every replica once their applied indexes agree (or after `waitMs`, as they are). The replicas are read
 * one after another, and an entry committed meanwhile (a leader's timer: a node whose paused worker stopped
 * beating, a pending deadline) would leave the ones read first looking behind: the whole read is taken again
 * until every view was read at one applied index, or the deadline passes.
 */
async function readAll(nc: NatsConnection, cluster: LoadCluster, waitMs: number): Promise<ReplicaView[]> {
  const deadline = Date.now() + waitMs;
  for (;;) {
    await waitAgreed(nc, cluster, deadline);
    const views: ReplicaView[] = [];
    for (const id of cluster.replicaIds) {
      const v = await readReplica(nc, cluster.o.cluster, id).catch(() => undefined);
      if (v !== undefined) views.push(v);
    }
    const at = views[0]?.status.applied;
    if (views.every((v) => v.status.applied === at) || Date.now() > deadline) return views;
  }
}

/** Waits until every replica reports one applied index with nothing committed unapplied, or `deadline`. */
async function waitAgreed(nc: NatsConnection, cluster: LoadCluster, deadline: number): Promise<void> {
  for (;;) {
    const st = await Promise.all(
      cluster.replicaIds.map((id) => replicaStatus(nc, cluster.o.cluster, id, 2_000).catch(() => undefined)),
    );
    const applied = st.map((s) => s?.applied);
    if (
      (applied.every((a) => a !== undefined && a === applied[0]) &&
        st.every((s) => s?.commit === s?.applied)) ||
      Date.now() > deadline
    )
      return;
    await sleep(200);
  }
}

/** Runs the whole load; resolves with the report once every process is stopped. */
export async function runLoad(options: LoadOptions): Promise<LoadReport> {
  validate(options);
  const log = options.log ?? (() => undefined);
  const ownDir = options.dataDir === undefined;
  const dir = options.dataDir ?? (await mkdtemp(join(tmpdir(), 'trellis-load-')));
  const started = Date.now();
  const nodeShape = nodeShapeFor(options.sandboxes, options.nodes);
  const cluster = await LoadCluster.start({
    dir,
    cluster: options.cluster,
    replicas: options.replicas,
    nodes: options.nodes,
    nodeShape,
    bootsConcurrent: simBootsConcurrentFor(nodeShape),
    tickMs: options.tickMs,
    logLevel: options.logLevel,
    ...(options.cpuProf ? { replicaNodeArgs: ['--cpu-prof', '--cpu-prof-dir', join(dir, 'profiles')] } : {}),
  });
  log(`load: cluster up in ${dir} (pids ${cluster.members.map((m) => m.process.pid).join(' ')})`);
  let stopping: Promise<void> | undefined;
  const stopAll = (): Promise<void> => {
    stopping ??= cluster.stop();
    return stopping;
  };
  const onSignal = (): void => {
    log('interrupted: stopping every process');
    void stopAll().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const clients: SchedulerApi[] = [];
  let nc: NatsConnection | undefined;
  const sampler = new Sampler(cluster);
  try {
    nc = await natsConnect({
      servers: cluster.natsUrl,
      name: 'load-harness',
      maxReconnectAttempts: -1,
      reconnectTimeWait: 100,
    });
    for (let i = 0; i < options.clients; i++)
      clients.push(
        await connect({
          servers: cluster.natsUrl,
          cluster: options.cluster,
          timeoutMs: 30_000,
          name: `load-${i}`,
        }),
      );
    const first = clients[0];
    assert(first !== undefined, 'at least one client', { clients: options.clients });
    await waitForNodes(first, options.nodes, log);
    log(`load: ${options.nodes} nodes ready; driving ${options.sandboxes} sandboxes`);
    sampler.start();
    await sampler.sample();
    const startCommit = Math.max(
      ...[...sampler.metrics.entries()].map(
        ([k, t]) => sampleOf(t, `trellis_raft_commit_index{replica="${k.split(':')[0]}"}`) ?? 0,
      ),
    );
    const termOf = (): number =>
      Math.max(
        0,
        ...[...sampler.metrics.entries()].map(
          ([k, t]) => sampleOf(t, `trellis_raft_term{replica="${k.split(':')[0]}"}`) ?? 0,
        ),
      );
    const startTerm = termOf();
    const chaosLog: ChaosLog = { events: [], failoversMs: [] };
    let driving = true;
    const chaos =
      options.chaos === undefined
        ? Promise.resolve()
        : runChaos(nc, cluster, options.chaos, () => !driving, chaosLog);
    const trafficBefore = await natsTraffic(cluster.nats.metricsPort);
    const driveStarted = Date.now();
    let result: DriveResult;
    try {
      result = await drive({
        clients,
        sandboxes: options.sandboxes,
        ...(options.ratePerMin === undefined ? {} : { ratePerMin: options.ratePerMin }),
        wait: options.wait,
        exec: options.exec,
        inFlight: options.inFlight,
        spec: { tenant: 'load', resources: { ...sandboxResources } },
        runId: `l${started.toString(36)}`,
        retryForMs: callRetryMs,
        onProgress: (p) => options.onProgress?.({ ...p, total: options.sandboxes }),
      });
    } finally {
      driving = false;
      await chaos;
    }
    const driveSeconds = (Date.now() - driveStarted) / 1_000;
    const trafficAfter = await natsTraffic(cluster.nats.metricsPort);
    await sampler.sample();
    const endCommit = Math.max(
      ...[...sampler.metrics.entries()].map(
        ([k, t]) => sampleOf(t, `trellis_raft_commit_index{replica="${k.split(':')[0]}"}`) ?? 0,
      ),
    );
    const endTerm = termOf();
    sampler.stop();
    log(`load: driven in ${driveSeconds.toFixed(1)} s; draining (up to ${options.drainMs / 1_000} s)`);
    await drain(first, options.drainMs);
    // The workers' heartbeats are Raft entries: while they beat, the replicas read one after another are
    // never at the same index, and the ones read first look behind. Paused, nothing more is proposed, and a
    // follower that fell behind (elections under CPU starvation) gets a minute to catch up.
    const beating = cluster.workers.filter((w) => cluster.running(w));
    for (const w of beating) await pause(w.process);
    let views: ReplicaView[];
    try {
      views = await readAll(nc, cluster, 60_000);
    } finally {
      for (const w of beating) resume(w.process);
    }
    const checked = check(views, result.acks, chaosLog.failoversMs);
    const texts = [...sampler.metrics.values()];
    const placementBatch = histogramOf(texts, 'trellis_placement_batch_duration_seconds');
    const entryBytes = histogramOf(texts, 'trellis_raft_entry_bytes');
    const p50 = quantileOf(placementBatch, 0.5);
    const p99 = quantileOf(placementBatch, 0.99);
    const { acks: _acks, ...driveFigures } = result;
    return {
      options: { ...options, ...(ownDir ? {} : { dataDir: dir }) },
      drive: driveFigures,
      check: checked,
      placementBatch,
      placementBatchP50Ms: p50 === undefined ? undefined : p50 * 1_000,
      placementBatchP99Ms: p99 === undefined ? undefined : p99 * 1_000,
      raftCommitsPerSecond: driveSeconds > 0 ? Math.round((endCommit - startCommit) / driveSeconds) : 0,
      raftEntryBytesMean: entryBytes.count === 0 ? undefined : Math.round(entryBytes.sum / entryBytes.count),
      raftTerms: { first: startTerm, last: endTerm },
      natsMessagesPerSandbox: perSandbox(trafficBefore, trafficAfter, options.sandboxes),
      processes: sampler.processes(driveSeconds),
      chaos: options.chaos === undefined ? undefined : chaosLog,
      unexpectedExits: [...cluster.unexpectedExits],
      wallSeconds: (Date.now() - started) / 1_000,
    };
  } finally {
    sampler.stop();
    for (const c of clients) await c.close().catch(() => undefined);
    await nc?.close().catch(() => undefined);
    await stopAll();
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
    // The profiles stay for the person who asked for them.
    if (ownDir && !options.cpuProf) await rm(dir, { recursive: true, force: true });
  }
}

/** The messages of each connection between two `/connz` reads, per sandbox (restarted ones from zero). */
function perSandbox(
  before: NatsTraffic | undefined,
  after: NatsTraffic | undefined,
  sandboxes: number,
): LoadReport['natsMessagesPerSandbox'] {
  if (before === undefined || after === undefined) return undefined;
  const byConnection: Record<string, { in: number; out: number }> = {};
  let totalIn = 0;
  let totalOut = 0;
  const per = (n: number): number => Math.round((100 * n) / sandboxes) / 100;
  for (const [name, a] of after) {
    const b = before.get(name) ?? { in: 0, out: 0 };
    // A connection that restarted counts from zero again: its whole count is since then.
    const dIn = a.in >= b.in ? a.in - b.in : a.in;
    const dOut = a.out >= b.out ? a.out - b.out : a.out;
    totalIn += dIn;
    totalOut += dOut;
    byConnection[name] = { in: per(dIn), out: per(dOut) };
  }
  return { in: per(totalIn), out: per(totalOut), byConnection };
}

/** True when none of `pids` runs any more (for the stop test and a last check after a run). */
export async function allGone(pids: readonly number[]): Promise<boolean> {
  for (const pid of pids) if (await alive(pid)) return false;
  return liveGroups().length === 0;
}
