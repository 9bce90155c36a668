/**
 * `trellis server --state scheduler`: this process runs one scheduler replica (src/api/replica-server.ts)
 * and serves the API on NATS until SIGTERM/SIGINT, then closes the adapter, the scheduler, Raft and NATS
 * in that order within `--stop-timeout`.
 */
import type { NatsConnection } from 'nats';
import type { Storage } from '../../../raft/storage/storage.js';
import { startSchedulerServer } from '../../api/replica-server.js';
import type { Logger } from '../../log.js';

export interface SchedulerStateOptions {
  readonly id: string;
  readonly peers: readonly string[];
  readonly cluster: string;
  readonly tickMs: number;
  readonly snapshotEntries: number;
  readonly stopTimeoutMs: number;
  readonly connection: NatsConnection;
  readonly storage: Storage;
  readonly log: Logger;
  /** Resolves on the first SIGTERM or SIGINT. */
  readonly stopping: Promise<void>;
  /** Runs `close`, giving up after `timeoutMs` (server.ts). */
  readonly stopWithin: (timeoutMs: number, log: Logger, close: () => Promise<void>) => Promise<void>;
}

/** Runs the replica until a stop signal; resolves once it is closed. */
export async function runSchedulerState(o: SchedulerStateOptions): Promise<void> {
  const server = await startSchedulerServer({
    id: o.id,
    peers: o.peers,
    connection: o.connection,
    cluster: o.cluster,
    storage: o.storage,
    tickMs: o.tickMs,
    snapshotEntries: o.snapshotEntries,
    onDrop: (reason, detail) => o.log.warn({ reason, detail }, 'dropped inbound raft frame'),
    onRefused: (reason, detail) => o.log.warn({ reason, detail }, 'refused an API frame'),
  });
  o.log.info({ peers: o.peers, state: 'scheduler' }, 'replica started');
  await o.stopping;
  o.log.info('stopping');
  await o.stopWithin(o.stopTimeoutMs, o.log, async () => {
    await server.close();
    await o.connection.drain();
  });
  o.log.info('stopped');
}
