/**
 * Watch over NATS: the catch-up ring's positions and limits (pure), and the remote watch's recovery from
 * missed frames and its honest failure when the events are gone (real nats-server, the embedded scheduler
 * behind the adapter as in remote-contract.test.ts).
 */
import { type NatsConnection, connect as natsConnect } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createScheduler } from '../../scheduler/scheduler.js';
import type { SchedulerEvent } from '../../scheduler/types.js';
import { connect } from '../../src/api/client.js';
import { WatchGapError } from '../../src/api/errors.js';
import { EventRing } from '../../src/api/event-ring.js';
import { serveApi } from '../../src/api/nats-server.js';
import { type RunningServer, startNats } from '../../src/testing/servers.js';

const ev = (index: number, sandboxId: string): SchedulerEvent => ({
  kind: 'sandbox',
  index,
  atMs: 1,
  sandboxId,
  tenant: 't',
  from: 'none',
  to: 'placed',
});
const ids = (events: readonly SchedulerEvent[]) =>
  events.map((e) => (e.kind === 'sandbox' ? e.sandboxId : e.kind));

describe('api event ring', () => {
  it('api event ring - reads after a position, several events per entry, in pages', () => {
    const ring = new EventRing(0, 100);
    ring.push([ev(3, 'a'), ev(3, 'b'), ev(5, 'c')]);
    ring.push([ev(9, 'd')]);
    expect(ids(ring.read({ index: 0, count: 0 }, 10).events)).toEqual(['a', 'b', 'c', 'd']);
    expect(ids(ring.read({ index: 3, count: 1 }, 10).events)).toEqual(['b', 'c', 'd']);
    expect(ids(ring.read({ index: 4, count: 0 }, 10).events)).toEqual(['c', 'd']);
    const page = ring.read({ index: 0, count: 0 }, 2);
    expect(page).toMatchObject({ next: { index: 3, count: 2 }, more: true });
    expect(ring.read(page.next, 10)).toMatchObject({ next: { index: 9, count: 1 }, more: false });
    expect(ring.read({ index: 9, count: 1 }, 10)).toEqual({
      events: [],
      next: { index: 9, count: 1 },
      more: false,
    });
    expect(ring.end).toEqual({ index: 9, count: 1 });
  });

  it('api event ring - a reader from before what is held gets WatchGapError', () => {
    const late = new EventRing(7, 100);
    expect(late.floor).toEqual({ index: 8, count: 0 });
    expect(() => late.read({ index: 5, count: 0 }, 10)).toThrow(WatchGapError);
    expect(late.read({ index: 8, count: 0 }, 10).events).toEqual([]);
    const small = new EventRing(0, 3);
    for (let i = 1; i <= 10; i++) small.push([ev(i, `s${i}`)]);
    expect(small.size).toBe(3);
    expect(ids(small.read(small.floor, 10).events)).toEqual(['s8', 's9', 's10']);
    expect(() => small.read({ index: 6, count: 1 }, 10)).toThrow(WatchGapError);
  });
});

describe('api remote watch', () => {
  let nats: RunningServer;
  let nc: NatsConnection;
  beforeAll(async () => {
    nats = await startNats();
    nc = await natsConnect({ servers: nats.url });
  });
  afterAll(async () => {
    await nc.close();
    await nats.stop();
  });

  const node = {
    id: 'n1',
    capacity: { cpu: 64_000, memory: 65_536, disk: 1e6 },
    labels: {},
    state: 'ready' as const,
  };
  const spec = { tenant: 't1', resources: { cpu: 10, memory: 10, disk: 10 } };

  it('api remote watch - frames it never received are caught up from the publisher, none twice', async () => {
    const scheduler = createScheduler();
    let publishing = true;
    const server = await serveApi({
      api: scheduler,
      connection: nc,
      cluster: 'w1',
      replica: 'r1',
      publishEvents: () => publishing,
    });
    const client = await connect({ servers: nats.url, cluster: 'w1' });
    await client.registerNode(node);
    const watch = client.watch({ fromIndex: 1 });
    const made: string[] = [];
    for (let i = 0; i < 3; i++) made.push((await client.create(spec)).id);
    publishing = false; // as if these frames were lost on the way
    for (let i = 0; i < 4; i++) made.push((await client.create(spec)).id);
    publishing = true;
    for (let i = 0; i < 2; i++) made.push((await client.create(spec)).id);
    const seen: SchedulerEvent[] = [];
    while (seen.length < 1 + made.length) seen.push((await watch.next()).value as SchedulerEvent);
    expect(seen[0]).toMatchObject({ kind: 'node', nodeId: 'n1', change: 'registered' });
    expect(ids(seen.slice(1))).toEqual(made);
    await watch.return?.();
    await client.close();
    await server.close();
    await scheduler.close();
  });

  it('api remote watch - events no server holds any more end the watch with WatchGapError, not a silent skip', async () => {
    const scheduler = createScheduler();
    const first = await serveApi({ api: scheduler, connection: nc, cluster: 'w2', replica: 'r1' });
    const client = await connect({ servers: nats.url, cluster: 'w2' });
    await client.registerNode(node);
    const watch = client.watch({ fromIndex: 1 });
    expect((await watch.next()).value).toMatchObject({ kind: 'node' });
    await first.close();
    // Committed while no adapter followed the scheduler: a new adapter's ring starts after them.
    await scheduler.create(spec);
    const second = await serveApi({ api: scheduler, connection: nc, cluster: 'w2', replica: 'r2' });
    await client.create(spec);
    await expect(watch.next()).rejects.toBeInstanceOf(WatchGapError);
    await client.close();
    await second.close();
    await scheduler.close();
  });
});
