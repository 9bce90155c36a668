/**
 * A worker's NATS credential against a real nats-server with the users of `trellis nats-config`: the
 * node user reaches the scheduler only through its own node-side API subject, where the replicas take
 * only the node-side calls about that node; only replica users may send commands to a node.
 */
import { type NatsConnection, connect as natsConnect, type Status } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createScheduler, type Scheduler } from '../../scheduler/scheduler.js';
import { connect, type RemoteScheduler } from '../../src/api/client.js';
import { type ApiServer, serveApi } from '../../src/api/nats-server.js';
import { authorizationBlock, type NatsAuthPlan, planNatsUsers } from '../../src/nats/config.js';
import { type RunningServer, startNats } from '../../src/testing/servers.js';
import { nodeCommandSubject, workerCommandCodec } from '../../src/worker/nats-binding.js';

const cluster = 'sec';
let nats: RunningServer;
let plan: NatsAuthPlan;
let scheduler: Scheduler;
let api: ApiServer;
const conns: NatsConnection[] = [];
const clients: RemoteScheduler[] = [];

async function as(user: string): Promise<NatsConnection> {
  const u = plan.users.find((x) => x.user === user);
  const nc = await natsConnect({ servers: nats.url, user, pass: u?.password ?? '' });
  conns.push(nc);
  return nc;
}

async function clientAs(user: string, node?: string): Promise<RemoteScheduler> {
  const c = await connect({
    servers: nats.url,
    cluster,
    connection: await as(user),
    timeoutMs: 3_000,
    attemptTimeoutMs: 1_000,
    ...(node === undefined ? {} : { node }),
  });
  clients.push(c);
  return c;
}

/** Whether a publish by `nc` on `subject` reached a subscriber, and whether nats-server refused it. */
async function tryPublish(nc: NatsConnection, observer: NatsConnection, subject: string) {
  let delivered = false;
  let violation = false;
  const sub = observer.subscribe(subject, { callback: () => (delivered = true) });
  await observer.flush();
  void (async () => {
    for await (const s of nc.status() as AsyncIterable<Status>)
      if (s.type === 'error' && String(s.data).includes('PERMISSIONS_VIOLATION')) violation = true;
  })();
  nc.publish(
    subject,
    workerCommandCodec.encode({ nodeId: 'n1', command: { type: 'terminate', sandboxId: 'x' } } as never),
  );
  await nc.flush();
  await new Promise((r) => setTimeout(r, 200));
  sub.unsubscribe();
  return { delivered, violation };
}

beforeAll(async () => {
  plan = planNatsUsers(cluster, ['r1'], ['n1', 'n2']);
  nats = await startNats({ extraConfig: authorizationBlock(plan) });
  scheduler = createScheduler();
  api = await serveApi({ api: scheduler, connection: await as('replica-r1'), cluster, replica: 'r1' });
});
afterAll(async () => {
  for (const c of clients) await c.close();
  await api?.close();
  await scheduler?.close();
  await Promise.all(conns.map((c) => c.close()));
  await nats?.stop();
});

describe('e2e credentials - node users', () => {
  it('e2e credentials - a node user registers, heartbeats, reports and reconciles its own node only', async () => {
    const n1 = await clientAs('node-n1', 'n1');
    const spec = {
      id: 'n1',
      capacity: { cpu: 4000, memory: 4096, disk: 10_000 },
      labels: {},
      state: 'ready' as const,
    };
    await n1.registerNode(spec);
    await n1.heartbeat(['n1']);
    const reconciled = await n1.reconcileNode('n1', []);
    expect(reconciled.lost).toEqual([]);
    expect((await n1.nodes()).map((n) => n.id)).toEqual(['n1']);
    // Speaking for another node, or making a client call, is refused by the replicas, and changes nothing.
    await expect(n1.registerNode({ ...spec, id: 'n2' })).rejects.toMatchObject({ code: 'VALIDATION' });
    await expect(n1.heartbeat(['n2'])).rejects.toMatchObject({ code: 'VALIDATION' });
    await expect(n1.reconcileNode('n2', [])).rejects.toMatchObject({ code: 'VALIDATION' });
    await expect(n1.create({ tenant: 't', resources: { cpu: 1, memory: 1, disk: 1 } })).rejects.toMatchObject(
      {
        code: 'VALIDATION',
      },
    );
    expect((await scheduler.nodes()).map((n) => n.id)).toEqual(['n1']);
    expect(await scheduler.list()).toEqual([]);
  });

  it('e2e credentials - a status report through a node subject cannot touch a sandbox on another node', async () => {
    await scheduler.registerNode({
      id: 'n2',
      capacity: { cpu: 4000, memory: 4096, disk: 10_000 },
      labels: { k: 'n2' },
      state: 'ready',
    });
    const sb = await scheduler.create({
      tenant: 't',
      resources: { cpu: 100, memory: 64, disk: 10 },
      constraints: [{ label: 'k', op: 'eq', value: 'n2' }],
    });
    expect(sb.nodeId).toBe('n2');
    const n1 = await clientAs('node-n1', 'n1');
    // The replica stamps n1 on the report; n1 does not hold the sandbox, so the item is ignored.
    await n1.reportStatus([{ sandboxId: sb.id, state: 'failed', reason: 'forged' }]);
    expect((await scheduler.get(sb.id))?.state).toBe('placed');
  });

  it('e2e credentials - only replica users may publish on a node command subject', async () => {
    const worker = await as('node-n1');
    const client = await as('client-api');
    const replica = await as('replica-r1');
    const subject = nodeCommandSubject(cluster, 'n1');
    for (const nc of [client, await as('node-n2')]) {
      const r = await tryPublish(nc, worker, subject);
      expect(r).toEqual({ delivered: false, violation: true });
    }
    expect((await tryPublish(replica, worker, subject)).delivered).toBe(true);
    // And a node user may not use the client API subjects at all.
    const viaClient = await tryPublish(worker, replica, `trellis.${cluster}.api`);
    expect(viaClient).toEqual({ delivered: false, violation: true });
  });
});
