/**
 * The cluster demo behind `npm start` (`trellis cluster-demo`): the whole path on the embedded default, no
 * server and no process. A 3-replica Raft group in process with simulated node workers (`createScheduler({
 * workers: { driver: 'sim' } })`), 200 generated nodes, and a few thousand sandboxes each taken through
 * create → running → exec one command → terminate, with a leadership move in the middle and a live progress
 * bar. Then a summary a person can read: how many were placed, ran and ended, what was refused or failed and
 * why, placement batch and end-to-end latency, placements per second, whether the replicas agree, and where
 * to look next.
 */
import { SingleBar } from 'cli-progress';
import Table from 'cli-table3';
import * as hdr from 'hdr-histogram-js';
import type { PlacementRequest } from '../../placement/index.js';
import type { SandboxSpec } from '../../scheduler/commands.js';
import { RaftGroupLog } from '../../scheduler/raft-group.js';
import type { Scheduler } from '../../scheduler/scheduler.js';
import { createScheduler } from '../embedded.js';
import { TrellisError } from '../lib/errors.js';
import { MemoryMetrics } from '../lib/metrics.js';
import { createRng } from '../lib/prng.js';
import { generateCluster, generateRequests } from '../testing/generate.js';

export interface ClusterDemoOptions {
  readonly seed?: number;
  /** Registered nodes, each with a simulated worker. Default 200. */
  readonly nodes?: number;
  /** Sandboxes taken through their lifecycle. Default 3,000. */
  readonly sandboxes?: number;
  /** Where the summary goes, line by line. Default stdout. */
  readonly out?: { write(text: string): unknown };
  /** Show a live progress bar on stderr (when it is a terminal). Default true. */
  readonly progress?: boolean;
}

export interface ClusterDemoSummary {
  readonly placed: number;
  readonly running: number;
  readonly execd: number;
  readonly terminated: number;
  /** Creates refused or sandboxes that failed, by error and reason. */
  readonly failed: Readonly<Record<string, number>>;
  readonly placementsPerSec: number;
  readonly placementBatchP50Ms: number | undefined;
  readonly placementBatchP99Ms: number | undefined;
  readonly endToEndP50Ms: number;
  readonly endToEndP99Ms: number;
  readonly leaderChanges: number;
  readonly seconds: number;
  readonly replicasEqual: boolean;
}

/** Lifecycles in flight at once: enough to fill batches, few enough to keep the demo's memory small. */
const inFlightMax = 256;

function specOf(r: PlacementRequest): SandboxSpec {
  return {
    tenant: r.tenant,
    resources: r.resources,
    ...(r.gpu === undefined ? {} : { gpu: r.gpu }),
    ...(r.priority === undefined ? {} : { priority: r.priority }),
    ...(r.constraints === undefined ? {} : { constraints: [...r.constraints] }),
    ...(r.spread === undefined ? {} : { spread: r.spread }),
    ...(r.antiAffinity === undefined ? {} : { antiAffinity: r.antiAffinity }),
    ...(r.imageId === undefined ? {} : { image: r.imageId }),
  } as SandboxSpec;
}

function reasonOf(err: unknown): string {
  if (!(err instanceof TrellisError)) return String(err);
  const reason = err.details.reason;
  if (typeof reason === 'string') return `${err.name} (${reason.split(':')[0]})`;
  if (err.name === 'ValidationError') return `${err.name} (${err.message.split(':')[0]})`;
  return err.name;
}

/** True once every replica has applied the same index and holds the same sandboxes. */
function replicasEqual(s: Scheduler): boolean {
  const states = s.replicas.map((r) => r.machine.state);
  const first = states[0];
  return (
    first !== undefined &&
    states.every((st) => st.applied === first.applied && st.sandboxes.equals(first.sandboxes))
  );
}

const ms = (x: number | undefined): string =>
  x === undefined ? 'n/a' : x < 10 ? x.toFixed(2) : x.toFixed(0);

/** Runs the demo and prints its summary; returns the figures too. */
export async function runClusterDemo(options: ClusterDemoOptions = {}): Promise<ClusterDemoSummary> {
  const seed = options.seed ?? 1;
  const out = options.out ?? process.stdout;
  const total = options.sandboxes ?? 3_000;
  const rng = createRng(seed);
  const metrics = new MemoryMetrics();
  // Nodes are not heartbeating in this demo (the in-process workers need no liveness check).
  const s = createScheduler({ workers: { driver: 'sim', seed }, metrics, pipeline: { nodeDownAfterMs: 0 } });
  const nodes = generateCluster(rng, { nodes: options.nodes ?? 200, gpuShare: 0.03, notReadyShare: 0 });
  for (const n of nodes) await s.registerNode(n, { requestId: `demo-node-${n.id}` });
  const requests = generateRequests(rng, { requests: total, tenants: 8 });
  const limited = requests[0]?.tenant ?? 't0';
  await s.setQuota(limited, { sandboxes: 50 });
  out.write(
    `trellis demo: 3 Raft replicas in this process, ${nodes.length} nodes with simulated workers, ${total} sandboxes through create → running → exec → terminate (seed ${seed}); tenant ${limited} limited to 50 at once\n`,
  );

  const failed = new Map<string, number>();
  const fail = (phase: string, err: unknown): void => {
    const key = `${phase}: ${reasonOf(err)}`;
    failed.set(key, (failed.get(key) ?? 0) + 1);
  };
  const e2e = hdr.build({
    lowestDiscernibleValue: 1,
    highestTrackableValue: 3_600_000,
    numberOfSignificantValueDigits: 3,
  });
  let placed = 0;
  let running = 0;
  let execd = 0;
  let terminated = 0;
  let done = 0;
  let leaderChanges = 0;
  const bar =
    options.progress !== false && process.stderr.isTTY
      ? new SingleBar({
          format: 'demo [{bar}] {value}/{total} done | running {running} | failed {failed}',
          stream: process.stderr,
        })
      : undefined;
  bar?.start(total, 0, { running: 0, failed: 0 });

  const lifecycle = async (i: number): Promise<void> => {
    const r = requests[i] as PlacementRequest;
    // A few malformed specs show that bad input is refused up front with the field named.
    const spec = i % 997 === 5 ? { ...specOf(r), resources: { ...r.resources, cpu: -1 } } : specOf(r);
    const id = `demo-${seed}-${i}`;
    const t0 = performance.now();
    let ran = false;
    try {
      await s.create(spec, { requestId: id, wait: 'running' });
      placed++;
      running++;
      ran = true;
      await s.exec(id, ['echo', 'hello from', id]);
      execd++;
    } catch (err) {
      fail(ran ? 'exec' : 'create', err);
    }
    try {
      await s.terminate(id, { requestId: `${id}-t` });
      terminated++;
    } catch (err) {
      // A create refused outright left nothing to end.
      if (!(err instanceof TrellisError && err.code === 'SCHED_UNKNOWN_SANDBOX')) fail('terminate', err);
    }
    e2e.recordValue(Math.max(1, Math.round(performance.now() - t0)));
    done++;
    bar?.update(done, { running, failed: [...failed.values()].reduce((a, b) => a + b, 0) });
  };

  const startMs = performance.now();
  const lanes: Promise<void>[] = [];
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < total) {
      const i = next++;
      if (i === Math.floor(total / 2) && s.log instanceof RaftGroupLog) {
        // Leadership moves by Raft transfer while lifecycles are in flight; their calls retry on the new
        // leader with the same request ids.
        const to = ((s.log.leader() ?? 0) + 1) % s.log.size;
        void s.log.transferLeadership(to).then(
          () => void leaderChanges++,
          () => undefined,
        );
      }
      await lifecycle(i);
    }
  };
  for (let k = 0; k < inFlightMax; k++) lanes.push(lane());
  await Promise.all(lanes);
  const seconds = (performance.now() - startMs) / 1_000;
  bar?.stop();
  const deadline = Date.now() + 10_000;
  while (!replicasEqual(s) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  const p50 = metrics.quantile('trellis_placement_batch_duration_seconds', 0.5);
  const p99 = metrics.quantile('trellis_placement_batch_duration_seconds', 0.99);
  const summary: ClusterDemoSummary = {
    placed,
    running,
    execd,
    terminated,
    failed: Object.fromEntries([...failed].sort((a, b) => b[1] - a[1])),
    placementsPerSec: placed / seconds,
    placementBatchP50Ms: p50 === undefined ? undefined : p50 * 1_000,
    placementBatchP99Ms: p99 === undefined ? undefined : p99 * 1_000,
    endToEndP50Ms: e2e.getValueAtPercentile(50),
    endToEndP99Ms: e2e.getValueAtPercentile(99),
    leaderChanges,
    seconds,
    replicasEqual: replicasEqual(s),
  };
  await s.close();
  printSummary(out, summary, total);
  return summary;
}

function printSummary(out: { write(text: string): unknown }, r: ClusterDemoSummary, total: number): void {
  const table = new Table({ style: { head: [], border: [] } });
  table.push(
    ['sandboxes', String(total)],
    ['placed', String(r.placed)],
    ['reached running', String(r.running)],
    ['exec ran', String(r.execd)],
    ['terminated', String(r.terminated)],
    ['failed or refused', String(total - r.running)],
    [
      'placement batch p50 / p99',
      `<= ${ms(r.placementBatchP50Ms)} / <= ${ms(r.placementBatchP99Ms)} ms (bucket bounds)`,
    ],
    [
      'end to end p50 / p99',
      `${ms(r.endToEndP50Ms)} / ${ms(r.endToEndP99Ms)} ms (create → running → exec → terminated)`,
    ],
    ['placements/s', `${r.placementsPerSec.toFixed(0)} over ${r.seconds.toFixed(1)} s`],
    ['leader changes', String(r.leaderChanges)],
    ['replicas', r.replicasEqual ? 'all 3 hold the same state' : 'DIVERGED'],
  );
  out.write(`${table.toString()}\n`);
  const reasons = Object.entries(r.failed);
  if (reasons.length > 0) {
    out.write('failed or refused, by reason:\n');
    for (const [why, n] of reasons) out.write(`  ${String(n).padStart(6)}  ${why}\n`);
  }
  out.write(
    [
      'where to look next:',
      '  trellis bench load          the same path across processes: nats-server, 3 `trellis server`, simulated workers (docs/benchmarks.md, Load)',
      '  trellis server / worker     run a cluster for real (docs/operations.md); --metrics-port for Prometheus and docs/grafana-dashboard.json',
      '  trellis demo                the placement engine alone, with zone fill and fragmentation',
      '  docs/architecture.md        how the pieces fit',
      '',
    ].join('\n'),
  );
}
