/**
 * The SchedulerApi contract against the remote client over a real nats-server. Until the replica-local
 * design lands (issue 12 item 1), the server side is the embedded scheduler (three in-process Raft
 * replicas) served by the NATS adapter in this test process; the client reaches it only through NATS.
 */
import { connect as natsConnect } from 'nats';
import { afterAll, beforeAll } from 'vitest';
import { createScheduler } from '../../scheduler/scheduler.js';
import { connect } from '../../src/api/client.js';
import { serveApi } from '../../src/api/nats-server.js';
import { type RunningServer, startNats } from '../../src/testing/servers.js';
import { schedulerContract } from './contract.js';

let nats: RunningServer;
let clusters = 0;
beforeAll(async () => {
  nats = await startNats();
});
afterAll(async () => {
  await nats.stop();
});

schedulerContract('remote client', async () => {
  // A cluster id per test, so no test hears another's subjects.
  const cluster = `contract${++clusters}`;
  const scheduler = createScheduler();
  const serverConn = await natsConnect({ servers: nats.url });
  const server = await serveApi({ api: scheduler, connection: serverConn, cluster, replica: 'r1' });
  const client = await connect({ servers: nats.url, cluster });
  return {
    api: client,
    async close() {
      await client.close();
      await server.close();
      await scheduler.close();
      await serverConn.close();
    },
  };
});
