import { connect, type NatsConnection } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SchedulerEvent } from '../../scheduler/types.js';
import { EventPublisher, eventsSubject, subscribeEvents } from '../../src/nats/events.js';
import { startTestCluster, type TestCluster } from '../../src/testing/cluster.js';
import { type RunningServer, startNats } from '../../src/testing/servers.js';
import { until } from '../helpers/until.js';

describe('src/nats/events - committed events on a real nats-server', () => {
  let server: RunningServer;
  let cluster: TestCluster;
  let pub: NatsConnection;
  let sub: NatsConnection;

  beforeAll(async () => {
    server = await startNats();
    [pub, sub] = await Promise.all([connect({ servers: server.url }), connect({ servers: server.url })]);
    cluster = await startTestCluster({ nodes: 20, seed: 3 });
  });
  afterAll(async () => {
    await cluster.close();
    await Promise.all([pub.close(), sub.close()]);
    await server.stop();
  });

  it('src/nats/events - every committed placement reaches a follower, in log order; garbage is dropped', async () => {
    // Creates 25 sandboxes with a publisher running; a follower must see 25 placements with rising indexes,
    // and a garbage message on the subject must be counted, not delivered.
    const seen: SchedulerEvent[] = [];
    const follower = subscribeEvents(sub, 'c1', (e) => seen.push(e));
    await sub.flush();
    const publisher = new EventPublisher(cluster.scheduler, pub, 'c1');
    pub.publish(eventsSubject('c1'), new Uint8Array([0xc1, 0x00]));
    const created = await Promise.all(
      Array.from({ length: 25 }, (_, i) =>
        cluster.scheduler.create(
          { tenant: 't1', resources: { cpu: 100, memory: 128, disk: 256 } },
          { requestId: `req-${i}` },
        ),
      ),
    );
    const placed = (): SchedulerEvent[] => seen.filter((e) => e.kind === 'sandbox' && e.to === 'placed');
    await until(() => placed().length === 25, '25 placement events');
    expect(new Set(placed().map((e) => (e.kind === 'sandbox' ? e.sandboxId : '')))).toEqual(
      new Set(created.map((s) => s.id)),
    );
    const indexes = seen.map((e) => e.index);
    expect(indexes).toEqual([...indexes].sort((a, b) => a - b));
    await until(() => follower.dropped() === 1, 'the garbage message counted');
    await publisher.stop();
    follower.subscription.unsubscribe();
  });
});
