import { connect, type NatsConnection, type Status, StringCodec } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { authorizationBlock, type NatsAuthPlan, planNatsUsers } from '../../src/nats/config.js';
import { type RunningServer, startNats } from '../../src/testing/servers.js';

const sc = StringCodec();

/** Publishes `subject` as `nc` and reports whether `observer` received it and whether `nc` saw a violation. */
async function tryPublish(
  nc: NatsConnection,
  observer: NatsConnection,
  subject: string,
): Promise<{ delivered: boolean; violation: boolean }> {
  let delivered = false;
  let violation = false;
  const sub = observer.subscribe(subject, { callback: () => (delivered = true) });
  await observer.flush();
  const statuses = (async () => {
    for await (const s of nc.status() as AsyncIterable<Status>) {
      if (s.type === 'error' && String(s.data).includes('PERMISSIONS_VIOLATION')) violation = true;
    }
  })();
  nc.publish(subject, sc.encode('x'));
  await nc.flush();
  await new Promise((r) => setTimeout(r, 200));
  sub.unsubscribe();
  void statuses;
  return { delivered, violation };
}

describe('src/nats/config - permissions enforced by a real nats-server', () => {
  let server: RunningServer;
  let plan: NatsAuthPlan;
  const conns: NatsConnection[] = [];
  const as = async (user: string): Promise<NatsConnection> => {
    const u = plan.users.find((x) => x.user === user);
    const nc = await connect({ servers: server.url, user, pass: u?.password ?? '' });
    conns.push(nc);
    return nc;
  };

  beforeAll(async () => {
    plan = planNatsUsers('c1', ['r1', 'r2'], ['n1', 'n2']);
    server = await startNats({ extraConfig: authorizationBlock(plan) });
  });
  afterAll(async () => {
    await Promise.all(conns.map((c) => c.close()));
    await server.stop();
  });

  it('src/nats/config - a worker may not publish on the raft or api subjects, nor as another node', async () => {
    // Connects as worker n1 and tries the subjects it must not use; a replica connection watches each one.
    const worker = await as('node-n1');
    const replica = await as('replica-r1');
    for (const subject of ['trellis.c1.raft.r1', 'trellis.c1.api', 'trellis.c1.node.n2.status']) {
      const r = await tryPublish(worker, replica, subject);
      expect(r.delivered, subject).toBe(false);
      expect(r.violation, subject).toBe(true);
    }
    // Its own status subject works.
    const own = await tryPublish(worker, replica, 'trellis.c1.node.n1.status');
    expect(own).toEqual({ delivered: true, violation: false });
  });

  it('src/nats/config - a replica may use its cluster subjects but not another cluster', async () => {
    // Replica r2 publishes Raft traffic to r1 (allowed) and to a foreign cluster (refused).
    const r2 = await as('replica-r2');
    const r1 = await as('replica-r1');
    expect(await tryPublish(r2, r1, 'trellis.c1.raft.r1')).toEqual({ delivered: true, violation: false });
    const foreign = await tryPublish(r2, r1, 'trellis.other.raft.r1');
    expect(foreign.violation).toBe(true);
  });

  it('src/nats/config - a client may call the api but not speak raft; a wrong password is refused', async () => {
    // The API client user can publish requests to the api subject only; bad credentials cannot connect at all.
    const client = await as('client-api');
    const replica = await as('replica-r1');
    expect((await tryPublish(client, replica, 'trellis.c1.api')).delivered).toBe(true);
    expect((await tryPublish(client, replica, 'trellis.c1.raft.r1')).violation).toBe(true);
    await expect(connect({ servers: server.url, user: 'replica-r1', pass: 'wrong' })).rejects.toThrow(
      /AUTHORIZATION_VIOLATION|Authorization/i,
    );
  });
});
