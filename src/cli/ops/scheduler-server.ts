/**
 * `trellis server --state scheduler`: this process runs one scheduler replica (src/api/replica-server.ts)
 * and serves the API on NATS until SIGTERM/SIGINT, then closes the adapter, the scheduler, Raft and NATS
 * in that order within `--stop-timeout`.
 */
import type { NatsConnection } from 'nats';
import type { Storage } from '../../../raft/storage/storage.js';
import type { RaftReplicaLog } from '../../../scheduler/replica.js';
import { startSchedulerServer } from '../../api/replica-server.js';
import type { GatewayConfig } from '../../gateway/config.js';
import type { MetricsSink } from '../../lib/metrics.js';
import { type Logger, throttledWarn } from '../../log.js';
import type { Readiness } from '../../metrics/http.js';
import { stopWithin } from '../stop.js';

export interface SchedulerStateOptions {
  readonly id: string;
  readonly peers: readonly string[];
  readonly cluster: string;
  readonly tickMs: number;
  /** Ticks without the leader before a campaign (`--election-ticks`); the core's default when absent. */
  readonly electionTicks?: number;
  readonly snapshotEntries: number;
  readonly stopTimeoutMs: number;
  readonly connection: NatsConnection;
  readonly storage: Storage;
  readonly log: Logger;
  /** Resolves on the first SIGTERM or SIGINT. */
  readonly stopping: Promise<void>;
  /** Where the replica records its metrics (`--metrics-port`). */
  readonly metrics?: MetricsSink;
  /** The Redis streams gateway (`--redis`), active while this replica leads. */
  readonly redis?: GatewayConfig;
  /** Tells `/readyz` how to judge this replica once it runs. */
  readonly setReadiness?: (readiness: () => Readiness) => void;
  /** A node silent this long is marked down (its sandboxes lost); 0 turns health checking off. */
  readonly nodeDownAfterMs?: number;
}

/** Polls of a new leader's commit index, 2 ms apart (5 s), for the log line of its first commit. */
const firstCommitPollsMax = 2_500;
const firstCommitPollMs = 2;

/**
 * Logs when a new leader first commits an entry of its term (its no-op, at least), which may already be so
 * when the role change is reported: with the role lines, the last step of a failover. Only when info is
 * logged.
 */
function logFirstCommit(node: RaftReplicaLog['node'], term: number, log: Logger): void {
  if (!log.isLevelEnabled('info')) return;
  const committed = (): boolean => {
    const st = node.status();
    if (st.commitTerm !== term) return false;
    log.info({ term, commit: st.commit }, 'raft first commit of the term');
    return true;
  };
  if (committed()) return;
  let polls = 0;
  const timer = setInterval(() => {
    const st = node.status();
    if (st.term !== term || st.role !== 'leader' || ++polls >= firstCommitPollsMax || committed())
      clearInterval(timer);
  }, firstCommitPollMs);
  timer.unref();
}

/** Runs the replica until a stop signal; resolves once it is closed. */
export async function runSchedulerState(o: SchedulerStateOptions): Promise<void> {
  const dropped = throttledWarn(o.log, 'dropped inbound raft frame');
  const refused = throttledWarn(o.log, 'refused an API frame');
  const server = await startSchedulerServer({
    id: o.id,
    peers: o.peers,
    connection: o.connection,
    cluster: o.cluster,
    storage: o.storage,
    tickMs: o.tickMs,
    ...(o.electionTicks === undefined ? {} : { electionTicks: o.electionTicks }),
    snapshotEntries: o.snapshotEntries,
    ...(o.nodeDownAfterMs === undefined || o.nodeDownAfterMs === 0
      ? {}
      : { pipeline: { nodeDownAfterMs: o.nodeDownAfterMs } }),
    onDrop: (reason, detail) => dropped({ reason, detail }),
    onRefused: (reason, detail) => refused({ reason, detail }),
    ...(o.metrics === undefined ? {} : { metrics: o.metrics }),
    ...(o.redis === undefined ? {} : { redis: o.redis, log: o.log }),
  });
  o.setReadiness?.(() =>
    server.log.leaderId() === undefined ? { ready: false, reason: 'no leader known' } : { ready: true },
  );
  o.log.info({ peers: o.peers, state: 'scheduler' }, 'replica started');
  // Each role change with its wall-clock time (pino's `time`): the load run's failovers are broken down from
  // these lines (campaign, pre-vote won, elected) against the harness's kill time.
  server.log.node.onRoleChange(({ role, leader, term }) => {
    const { commit, leadersGone } = server.log.node.status();
    o.log.info({ role, leader, term, commit, leadersGone }, 'raft role');
    if (role === 'leader') logFirstCommit(server.log.node, term, o.log);
  });
  await o.stopping;
  o.log.info('stopping');
  await stopWithin(o.stopTimeoutMs, o.log, async () => {
    await server.close();
    await o.connection.drain();
  });
  o.log.info('stopped');
}
