/**
 * One scheduler replica as a server process: a `RaftReplicaLog` (a `RaftNode` on the NATS transport and
 * file storage), the embedded `Scheduler` on a one-replica view of it, and the API adapter in front.
 *
 * The adapter does the routing between processes: a request taken from the queue group by a follower is
 * forwarded, whole, to the leader's API subject (with its shrunken deadline), so the Scheduler in this
 * process only ever runs calls while its replica leads, and serves `watch()` from its own applied state on
 * every replica (each keeps the catch-up ring; only the leader publishes).
 */
import { createHash } from 'node:crypto';
import type { NatsConnection } from 'nats';
import type { Storage } from '../../raft/storage/storage.js';
import { NatsTransport } from '../../raft/transport/nats.js';
import { raftMessageCodec } from '../../raft/wire.js';
import type { ReplicaGroup, ReplicaLog } from '../../scheduler/log.js';
import { RaftReplicaLog } from '../../scheduler/replica.js';
import { Scheduler, type SchedulerConfig } from '../../scheduler/scheduler.js';
import { stateDigest } from '../../scheduler/state-machine.js';
import type { GatewayConfig } from '../gateway/config.js';
import { type RedisGateway, startRedisGateway } from '../gateway/gateway.js';
import { type MetricsSink, trellisMetrics } from '../lib/metrics.js';
import { createRng } from '../lib/prng.js';
import type { Logger } from '../log.js';
import { natsCommandSink } from '../worker/command-sink.js';
import { serveMembership } from './membership.js';
import { type ApiServer, serveApi } from './nats-server.js';

export interface SchedulerServerOptions {
  readonly id: string;
  readonly peers: readonly string[];
  readonly connection: NatsConnection;
  readonly cluster: string;
  /** This replica's storage (opened, and locked, by the caller before anything else). */
  readonly storage: Storage;
  readonly tickMs?: number;
  /** Ticks without the leader before a campaign (random in [n, 2n)). Default: the Raft core's. */
  readonly electionTicks?: number;
  readonly snapshotEntries?: number;
  readonly pipeline?: SchedulerConfig['pipeline'];
  readonly onDrop?: (reason: string, detail: string) => void;
  /** Called for each API frame refused before it reached the scheduler. */
  readonly onRefused?: (reason: string, detail: string) => void;
  /** Where the replica's Raft node and pipeline record metrics (`--metrics-port`). Default: nothing. */
  readonly metrics?: MetricsSink;
  /** How long the dispatcher waits for a worker to answer one batch of commands. Default 5,000 ms. */
  readonly commandTimeoutMs?: number;
  /** The Redis streams gateway's settings (`--redis`): active on this replica while it leads. */
  readonly redis?: GatewayConfig;
  /** Where the Redis gateway logs. Default: nowhere. */
  readonly log?: Logger;
}

export interface SchedulerServer {
  readonly id: string;
  readonly log: RaftReplicaLog;
  readonly scheduler: Scheduler;
  readonly api: ApiServer;
  readonly gateway?: RedisGateway;
  close(): Promise<void>;
}

/** A one-replica `ReplicaGroup` over this process's replica log: it "leads" only while the replica does. */
export function singleReplicaGroup(log: ReplicaLog): ReplicaGroup {
  const leader = (): number | undefined => (log.leaderTerm() === undefined ? undefined : 0);
  return {
    size: 1,
    replica: () => log,
    leader,
    machine: () => log.machine,
    propose: (_i, data) => log.propose(data),
    readIndex: () => log.readIndex(),
    onLeaderChange: (listener) => log.onLeaderChange(() => listener(leader())),
  };
}

/** Starts the replica and its API adapter; the replica joins its group over `connection`. */
export async function startSchedulerServer(o: SchedulerServerOptions): Promise<SchedulerServer> {
  const nc = o.connection;
  const storage = o.storage;
  const transport = new NatsTransport({
    connection: nc,
    cluster: o.cluster,
    self: o.id,
    codec: raftMessageCodec,
    destination: (m) => m.to,
    ...(o.onDrop === undefined ? {} : { onDrop: o.onDrop }),
  });
  const log = new RaftReplicaLog({
    id: o.id,
    voters: o.peers,
    storage,
    transport,
    rng: createRng(process.pid),
    ...(o.tickMs === undefined ? {} : { tickMs: o.tickMs }),
    ...(o.snapshotEntries === undefined ? {} : { snapshotEntries: o.snapshotEntries }),
    // An append must fit one NATS message with its framing (as for the KV replica): the transport drops a
    // larger frame, so with the core's 1 MiB default a follower that fell behind was never caught up again
    // (found by bench:load: a follower stuck at applied 105,023 of 157,362 after many elections).
    core: {
      msgBytesMax: Math.min(512 << 10, Math.floor((nc.info?.max_payload ?? 1 << 20) / 2)),
      ...(o.electionTicks === undefined ? {} : { electionTicks: o.electionTicks }),
    },
    ...(o.metrics === undefined ? {} : { metrics: trellisMetrics(o.metrics) }),
  });
  const scheduler = new Scheduler({
    log: singleReplicaGroup(log),
    ...(o.pipeline === undefined ? {} : { pipeline: o.pipeline }),
    ...(o.metrics === undefined ? {} : { metrics: o.metrics }),
    // While this replica leads, committed placements go to the workers on their nodes' command subjects.
    dispatch: {
      sink: natsCommandSink(nc, o.cluster, {
        ...(o.commandTimeoutMs === undefined ? {} : { timeoutMs: o.commandTimeoutMs }),
      }),
      ...(o.metrics === undefined ? {} : { metrics: trellisMetrics(o.metrics) }),
    },
  });
  const api = await serveApi({
    api: scheduler,
    connection: nc,
    cluster: o.cluster,
    replica: o.id,
    leader: () => log.leaderId(),
    publishEvents: () => log.leaderTerm() !== undefined,
    ...(o.onRefused === undefined ? {} : { onRefused: o.onRefused }),
    membership: (op) => serveMembership(log.node, op),
    status: ({ digest }) => {
      const st = log.node.status();
      const state = log.machine.state;
      return {
        ...(digest
          ? {
              digest: createHash('sha256').update(stateDigest(state)).digest('hex'),
              digestApplied: state.applied,
            }
          : {}),
        replica: o.id,
        role: st.role,
        ...(st.leader === '' ? {} : { leader: st.leader }),
        term: st.term,
        commit: st.commit,
        commitTerm: st.commitTerm,
        applied: st.applied,
        replicas: [...st.conf.voters, ...st.conf.learners],
      };
    },
  });
  const gateway =
    o.redis === undefined
      ? undefined
      : await startRedisGateway({
          config: o.redis,
          api: scheduler,
          replica: {
            id: o.id,
            leading: () => log.leaderTerm() !== undefined,
            onLeaderChange: (listener) => log.onLeaderChange(listener),
          },
          ...(o.metrics === undefined ? {} : { metrics: o.metrics }),
          ...(o.log === undefined ? {} : { log: o.log }),
        }).catch(async (err: unknown) => {
          await api.close();
          await scheduler.close();
          await log.close();
          throw err;
        });
  return {
    id: o.id,
    log,
    scheduler,
    api,
    ...(gateway === undefined ? {} : { gateway }),
    async close() {
      await gateway?.close();
      await api.close();
      await scheduler.close();
      await log.close();
    },
  };
}
