/**
 * `trellis worker`: runs the node worker (src/worker/node-worker.ts) of one node — or, with `--sim-nodes N`,
 * of N simulated nodes in one process — against a cluster over NATS.
 *
 * On start it connects (the shared connection flags, src/cli/connect.ts), registers each node through the
 * API client with a request id derived from the node id (a restart re-registering is harmless: the same
 * request is answered once, and a node that is already registered is taken as it is), reports what the
 * node really runs through `reconcileNode` and stops the orphans it is told about, then serves the node's
 * command subject, sends heartbeats every `--heartbeat-interval` and reports status batches through
 * `reportStatus` (and on the node's status subject).
 *
 * SIGTERM or SIGINT stops it cleanly: it stops taking commands, ends every machine it started (no orphan
 * process or VM), closes NATS and exits 0, within `--stop-timeout` whatever NATS does.
 */
import { createHash } from 'node:crypto';
import { mkdir, statfs } from 'node:fs/promises';
import { availableParallelism, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import type { NatsConnection } from 'nats';
import { DuplicateNodeError } from '../../placement/errors.js';
import { type NodeSpec, type Resources, resourceAmountMax } from '../../placement/index.js';
import { connect as connectApi, type RemoteScheduler } from '../api/client.js';
import { nodeItemsMax } from '../api/protocol.js';
import { TrellisError } from '../lib/errors.js';
import { type NodeId, nodeId as parseNodeId, type SandboxId } from '../lib/ids.js';
import { type MetricsSink, noopMetrics, type TrellisMetrics, trellisMetrics } from '../lib/metrics.js';
import { createRng } from '../lib/prng.js';
import { realTimers } from '../lib/timers.js';
import { createLogger, type Logger } from '../log.js';
import { type MetricsServer, startMetricsServer } from '../metrics/http.js';
import { PrometheusMetrics } from '../metrics/prometheus.js';
import type { Driver, DriverKind } from '../worker/driver.js';
import { ProcessDriver } from '../worker/drivers/process.js';
import { QemuDriver } from '../worker/drivers/qemu.js';
import { SimDriver } from '../worker/drivers/sim.js';
import { natsStatusSink, serveWorker, type WorkerBinding } from '../worker/nats-binding.js';
import { NodeWorker } from '../worker/node-worker.js';
import type { StatusReport } from '../worker/protocol.js';
import { mergedStatusSink, StatusMerger, statusMergeWindowMsDefault } from '../worker/status-merger.js';
import { connectNats, resolveCredentials } from './connect.js';
import { NatsAuthError, UsageError } from './errors.js';
import { exitNow, stopSignal, stopWithin } from './stop.js';
import type { WorkerFlags } from './worker-command.js';

export {
  heartbeatIntervalMsDefault,
  registerWorker,
  simNodesMax,
  workerConnectTimeoutMsDefault,
  workerLabelsMax,
  workerStopTimeoutMsDefault,
} from './worker-command.js';

/** Registrations (and reconciles) in flight at once while `--sim-nodes` brings many nodes up. */
export const registerConcurrentMax = 16;
/** Heartbeats between two checks for a node of this process that the scheduler marked down. */
export const downCheckEveryBeats = 10;
const mib = 1024 * 1024;

/** The node ids this process serves: the one given, or ID-0..ID-N-1 with --sim-nodes. */
function nodeIdsOf(o: WorkerFlags): NodeId[] {
  if (o.simNodes === undefined) return [o.nodeId];
  return Array.from({ length: o.simNodes }, (_, i) => parseNodeId(`${o.nodeId}-${i}`, 'node id'));
}

function driverKindOf(o: WorkerFlags): DriverKind {
  if (o.simNodes !== undefined) {
    if (o.driver !== undefined && o.driver !== 'sim') {
      throw new UsageError(`--sim-nodes runs simulated nodes; it cannot be used with --driver ${o.driver}`);
    }
    return 'sim';
  }
  if (o.driver === undefined) throw new UsageError('--driver is required (sim, process or qemu)');
  return o.driver;
}

/** Capacity from the flags, else this machine's CPUs, memory and the free disk under `dataDir`. */
async function capacityOf(o: WorkerFlags, dataDir: string): Promise<Resources> {
  const clamp = (n: number): number => Math.max(0, Math.min(resourceAmountMax, Math.floor(n)));
  let disk = o.disk;
  if (disk === undefined) {
    const fs = await statfs(dataDir);
    disk = clamp((fs.bavail * fs.bsize) / mib);
  }
  return {
    cpu: o.cpu ?? clamp(availableParallelism() * 1000),
    memory: o.memory ?? clamp(totalmem() / mib),
    disk,
  };
}

/**
 * The idempotent request id of a node's registration: derived from the node id, so every start of this
 * node's worker sends the same request (a hash keeps it within the request id's length for any node id).
 */
export function registerRequestId(nodeId: string): string {
  return `register-${createHash('sha256').update(nodeId).digest('hex').slice(0, 32)}`;
}

/** Times every driver operation into `trellis_driver_duration_seconds{driver,op,outcome}`. */
export function instrumentDriver(driver: Driver, metrics: TrellisMetrics): Driver {
  const timed = async <T>(op: string, run: () => Promise<T>): Promise<T> => {
    const startedNs = process.hrtime.bigint();
    const seconds = (): number => Number(process.hrtime.bigint() - startedNs) / 1e9;
    try {
      const out = await run();
      metrics.driverSeconds.observe(seconds(), { driver: driver.kind, op, outcome: 'ok' });
      return out;
    } catch (err) {
      metrics.driverSeconds.observe(seconds(), { driver: driver.kind, op, outcome: 'error' });
      throw err;
    }
  };
  return {
    kind: driver.kind,
    capabilities: driver.capabilities,
    execStdinBytesMax: driver.execStdinBytesMax,
    createDisk: (spec) => timed('createDisk', () => driver.createDisk(spec)),
    boot: (spec) => timed('boot', () => driver.boot(spec)),
    exec: (id, request) => timed('exec', () => driver.exec(id, request)),
    stop: (id) => timed('stop', () => driver.stop(id)),
    destroy: (id) => timed('destroy', () => driver.destroy(id)),
    suspend: (id) => timed('suspend', () => driver.suspend(id)),
    resume: (id) => timed('resume', () => driver.resume(id)),
    list: () => driver.list(),
    close: () => driver.close(),
  };
}

function makeDriver(kind: DriverKind, dir: string, seed: number, log: Logger): Driver {
  switch (kind) {
    case 'sim':
      return new SimDriver({ rng: createRng(seed), timers: realTimers });
    case 'process':
      return new ProcessDriver({ dataDir: dir });
    case 'qemu':
      return new QemuDriver({ dataDir: dir, logger: log });
  }
}

/**
 * Where a node's status batches go: the node's status subject (for the leader's dispatcher) and the API's
 * `reportStatus`. A transport failure rethrows, so the batcher keeps the batch and retries it; a definite
 * refusal (a sandbox the scheduler does not know) is logged and dropped, since resending cannot change it.
 */
function statusSinkOf(nc: NatsConnection, merger: StatusMerger, cluster: string, id: NodeId, log: Logger) {
  const publish = natsStatusSink(nc, cluster, id);
  // One reportStatus call carries the batches of every node of this process within the window.
  const report = mergedStatusSink(merger, id, (err) =>
    log.warn({ node: id, code: err.code, err: err.message }, 'status report refused'),
  );
  return async (batch: readonly StatusReport[]): Promise<void> => {
    await publish(batch);
    await report(batch);
  };
}

interface ServedNode {
  readonly worker: NodeWorker;
  readonly binding: WorkerBinding;
}

/** How long a node's registration and first reconcile are retried while the group has no leader. */
export const bringUpRetryMsMax = 120_000;
const bringUpRetryPauseMs = 250;
/** Codes after which the same call (same request id) may still succeed: the group is between leaders. */
const bringUpTransientCodes: ReadonlySet<string> = new Set([
  'UNAVAILABLE',
  'OUTCOME_UNKNOWN',
  'SCHED_NOT_LEADER',
  'DEADLINE_EXCEEDED',
]);

/**
 * Calls `fn` until it answers, retrying while the group is between leaders (the register carries a fixed
 * request id, so a retry is applied once). Without it a worker restarted during an election exited on its
 * first unanswered register (found by `bench:load --chaos`: the restarted worker's nodes never came back).
 */
async function untilAnswered<T>(what: string, fn: () => Promise<T>, log: Logger): Promise<T> {
  const giveUpAtMs = Date.now() + bringUpRetryMsMax;
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      const transient = err instanceof TrellisError && bringUpTransientCodes.has(err.code);
      if (!transient || Date.now() > giveUpAtMs) throw err;
      log.warn({ what, code: err.code, err: err.message }, 'no answer from the cluster yet; retrying');
      await new Promise((r) => setTimeout(r, bringUpRetryPauseMs));
    }
  }
}

/**
 * Registers the node (a node already registered is kept as it is), reconciles, stops its orphans. A new node
 * is registered `down` and made `ready` by the reconcile itself: registered `ready`, a sandbox placed on it
 * before the worker took its report would be called lost by that reconcile ("did not report it").
 */
async function bringUp(api: RemoteScheduler, spec: NodeSpec, worker: NodeWorker, log: Logger) {
  try {
    await untilAnswered(
      `register ${spec.id}`,
      () => api.registerNode(spec, { requestId: registerRequestId(spec.id) }),
      log,
    );
    log.info({ node: spec.id, capacity: spec.capacity }, 'node registered');
  } catch (err) {
    if (!(err instanceof DuplicateNodeError)) throw err;
    log.info({ node: spec.id }, 'node already registered; keeping its registration');
  }
  await untilAnswered(`reconcile ${worker.nodeId}`, () => reconcile(api, worker, log), log);
}

/** Reports what the node runs; stops what the scheduler says is not placed here (or no longer fits). */
async function reconcile(api: RemoteScheduler, worker: NodeWorker, log: Logger): Promise<void> {
  const result = await api.reconcileNode(worker.nodeId, await worker.report());
  const stop = [...result.orphans.map((x) => x.sandboxId), ...result.failed];
  if (stop.length > 0) await worker.stopOrphans(stop as SandboxId[]);
  log.info(
    {
      node: worker.nodeId,
      restored: result.restored.length,
      lost: result.lost.length,
      orphansStopped: stop.length,
    },
    'node reconciled',
  );
}

/** Runs `items` through `fn` with at most `limit` at once; the first failure rejects. */
async function eachLimited<T>(items: readonly T[], limit: number, fn: (t: T) => Promise<void>) {
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < items.length) {
      const item = items[next++] as T;
      await fn(item);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
}

export async function runWorker(o: WorkerFlags): Promise<void> {
  const kind = driverKindOf(o);
  const ids = nodeIdsOf(o);
  const dataDir = resolve(o.data);
  await mkdir(dataDir, { recursive: true });
  const capacity = await capacityOf(o, dataDir);
  const log = createLogger('worker', { node: o.nodeId, cluster: o.cluster });
  const credentials = resolveCredentials(o, process.env);
  const stopping = stopSignal();

  const sink: MetricsSink =
    o.metricsPort === undefined
      ? noopMetrics
      : new PrometheusMetrics({ defaultLabels: { process: 'worker' } });
  const metrics = trellisMetrics(sink);
  let ready = false;
  let metricsServer: MetricsServer | undefined;
  if (sink instanceof PrometheusMetrics && o.metricsPort !== undefined) {
    metricsServer = await startMetricsServer({
      metrics: sink,
      port: o.metricsPort,
      readiness: () => (ready ? { ready: true } : { ready: false, reason: 'registering or stopping' }),
    });
  }

  let connected = false;
  const nc = await Promise.race([
    connectNats({
      servers: o.nats,
      name: `trellis-worker-${o.nodeId}`,
      credentials,
      timeoutMs: o.connectTimeout,
      reconnectForever: true,
      log,
    }),
    // A signal while still waiting for NATS: nothing has started, so exit at once.
    stopping.then(async (): Promise<never> => {
      if (connected) return new Promise<never>(() => undefined);
      await metricsServer?.close();
      return exitNow(log, 0);
    }),
  ]);
  connected = true;
  const refused = apiRefusal(nc, o.cluster, credentials?.user);
  // One node speaks on its own node-side API subject, which its `node-<id>` user may use; --sim-nodes
  // speaks for many nodes and needs a client user.
  const api = await connectApi({
    servers: o.nats,
    cluster: o.cluster,
    connection: nc,
    ...(o.simNodes === undefined ? { node: o.nodeId } : {}),
  });

  const served: ServedNode[] = [];
  const stopAll = async (): Promise<void> => {
    ready = false;
    for (const s of served) await s.binding.stop();
    // Machines first (local, bounded by the driver), then the last statuses over the network.
    // The last batches go out merged too: the merge's window timer sends them.
    await Promise.all(served.map((s) => s.worker.close({ stopMachines: true })));
    await api.close();
    await nc.drain();
  };

  const merger = new StatusMerger({
    send: (items) => api.reportStatus(items),
    timers: realTimers,
    windowMs: statusMergeWindowMsDefault,
    itemsMax: nodeItemsMax,
  });
  let heartbeat: NodeJS.Timeout | undefined;
  const coming = (async () => {
    for (const [i, id] of ids.entries()) {
      const driver = instrumentDriver(makeDriver(kind, join(dataDir, id), o.seed + i, log), metrics);
      const worker = new NodeWorker({
        nodeId: id,
        driver,
        statusSink: statusSinkOf(nc, merger, o.cluster, id, log),
        ...(o.bootsConcurrent === undefined ? {} : { bootsConcurrentMax: o.bootsConcurrent }),
        ...(o.execsConcurrent === undefined ? {} : { execsConcurrentMax: o.execsConcurrent }),
      });
      served.push({ worker, binding: serveWorker(nc, o.cluster, worker, log) });
    }
    await eachLimited(served, registerConcurrentMax, (s) =>
      bringUp(api, { id: s.worker.nodeId, capacity, labels: o.label, state: 'down' }, s.worker, log),
    );
    heartbeat = startHeartbeats(api, ids, served, metrics, o.heartbeatInterval, log);
    ready = true;
    log.info({ nodes: ids.length, driver: kind }, 'worker serving');
  })();
  // A user that may not call the API fails at its first call, not after the call's whole deadline.
  const up = Promise.race([coming, refused]);

  // A failure while coming up (the cluster refused the registration, say) ends the worker with one line,
  // after stopping what it had started.
  const outcome = await Promise.race([
    up.then(
      () => stopping.then(() => ({ kind: 'signal' as const })),
      (err: unknown) => ({ kind: 'failed' as const, err }),
    ),
    stopping.then(() => ({ kind: 'signal' as const })),
  ]);
  clearInterval(heartbeat);
  log.info('stopping');
  await stopWithin(o.stopTimeout, log, stopAll);
  clearInterval(heartbeat);
  await metricsServer?.close();
  if (outcome.kind === 'failed') throw outcome.err;
  log.info('stopped');
  exitNow(log, 0);
}

/**
 * Rejects with NatsAuthError when nats-server refuses this connection a publish on the API subjects
 * (a `node-<id>` user of `trellis nats-config` may not call the API); otherwise never settles.
 */
function apiRefusal(nc: NatsConnection, cluster: string, user: string | undefined): Promise<never> {
  const apiPrefix = `trellis.${cluster}.api`;
  return new Promise<never>((_, reject) => {
    void (async () => {
      for await (const s of nc.status()) {
        const ctx = (s as { permissionContext?: { operation?: string; subject?: string } }).permissionContext;
        if (ctx?.operation !== 'publish' || ctx.subject?.startsWith(apiPrefix) !== true) continue;
        reject(
          new NatsAuthError(
            `nats-server does not let ${user === undefined ? 'this connection' : `user ${user}`} publish to ${ctx.subject}; the worker registers and reports through the API, so run it with a client user (docs/operations.md, Running a worker)`,
          ),
        );
        return;
      }
    })().catch(() => undefined);
  });
}

/** Sends one heartbeat for every node each interval (never two at once) and counts dropped frames. */
function startHeartbeats(
  api: RemoteScheduler,
  ids: readonly NodeId[],
  served: readonly ServedNode[],
  metrics: TrellisMetrics,
  intervalMs: number,
  log: Logger,
): NodeJS.Timeout {
  let inFlight = false;
  let failing = false;
  let beats = 0;
  const counted: Record<string, number> = {};
  const beat = async (): Promise<void> => {
    countDropped(served, counted, metrics);
    if (inFlight) return;
    inFlight = true;
    try {
      await api.heartbeat(ids);
      beats++;
      // After an outage, and every few beats, a node the scheduler marked down reconciles to come back.
      if (failing || beats % downCheckEveryBeats === 0) await reconcileDown(api, served, log);
      if (failing) log.info('heartbeats are answered again');
      failing = false;
    } catch (err) {
      if (!failing) log.warn({ err: (err as Error).message }, 'heartbeat failed; retrying every interval');
      failing = true;
    } finally {
      inFlight = false;
    }
  };
  void beat();
  return setInterval(() => void beat(), intervalMs);
}

/**
 * Reconciles this process's nodes that the scheduler marked `down` (missed heartbeats while cut off): a down
 * node's sandboxes were lost, and only `reconcileNode` makes it ready again. Nodes still up are left alone,
 * since reconciling a live node could call a placement that is on its way to the worker lost.
 */
async function reconcileDown(api: RemoteScheduler, served: readonly ServedNode[], log: Logger) {
  const mine = new Map(served.map((s) => [s.worker.nodeId as string, s.worker]));
  const down = (await api.nodes()).filter((n) => n.state === 'down' && mine.has(n.id));
  await eachLimited(down, registerConcurrentMax, async (n) => {
    const worker = mine.get(n.id);
    if (worker === undefined) return;
    log.warn({ node: n.id }, 'the scheduler marked this node down; reconciling');
    await reconcile(api, worker, log);
  });
}

/** Adds frames the bindings dropped since the last call to `trellis_invalid_messages_total`. */
function countDropped(
  served: readonly ServedNode[],
  counted: Record<string, number>,
  metrics: TrellisMetrics,
): void {
  const total: Record<string, number> = {};
  for (const s of served) {
    for (const [reason, n] of Object.entries(s.binding.dropped())) total[reason] = (total[reason] ?? 0) + n;
  }
  for (const [reason, n] of Object.entries(total)) {
    const delta = n - (counted[reason] ?? 0);
    if (delta > 0) metrics.invalidMessages.inc({ source: 'worker', reason }, delta);
    counted[reason] = n;
  }
}
