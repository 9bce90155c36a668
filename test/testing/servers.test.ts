import { Redis } from 'ioredis';
import { connect, StringCodec } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type NatsCluster,
  type RunningServer,
  startNats,
  startNatsCluster,
  startRedis,
} from '../../src/testing/servers.js';

const sc = StringCodec();

describe('testing/servers - nats-server', () => {
  let nats: RunningServer;
  beforeAll(async () => {
    nats = await startNats();
  });
  afterAll(async () => {
    await nats.stop();
  });

  it('testing/servers - a real nats-server carries a publish to a subscriber', async () => {
    // Checks the helper gives a working server: one client subscribes, another publishes, the payload arrives.
    const sub = await connect({ servers: nats.url });
    const pub = await connect({ servers: nats.url });
    const subscription = sub.subscribe('trellis.test.roundtrip', { max: 1 });
    await sub.flush();
    pub.publish('trellis.test.roundtrip', sc.encode('hello'));
    let received = '';
    for await (const msg of subscription) received = sc.decode(msg.data);
    expect(received).toBe('hello');
    await Promise.all([sub.close(), pub.close()]);
  });

  it('testing/servers - a killed nats-server restarts on the same port', async () => {
    // Checks kill + restart (used by failure tests): after restart a new client can connect on the same URL.
    await nats.kill();
    await expect(connect({ servers: nats.url, reconnect: false, timeout: 500 })).rejects.toThrow();
    await nats.restart();
    const nc = await connect({ servers: nats.url });
    const reply = nc.subscribe('trellis.test.echo', {
      max: 1,
      callback: (_err, msg) => msg.respond(msg.data),
    });
    const answer = await nc.request('trellis.test.echo', sc.encode('ping'), { timeout: 2_000 });
    expect(sc.decode(answer.data)).toBe('ping');
    reply.unsubscribe();
    await nc.close();
  });
});

describe('testing/servers - nats cluster', () => {
  let cluster: NatsCluster;
  beforeAll(async () => {
    cluster = await startNatsCluster(3);
  });
  afterAll(async () => {
    await cluster.stop();
  });

  it('testing/servers - a message crosses the routes of a 3-node cluster', async () => {
    // Checks the routes are up: subscribe on the first server, publish on the third, the message arrives.
    const [first, , third] = cluster.urls;
    expect(cluster.urls).toHaveLength(3);
    const sub = await connect({ servers: first ?? '' });
    const pub = await connect({ servers: third ?? '' });
    const subscription = sub.subscribe('trellis.test.routed', { max: 1 });
    await sub.flush();
    // Interest propagates over routes asynchronously; publish until the message is seen.
    const got = (async () => {
      for await (const msg of subscription) return sc.decode(msg.data);
      return '';
    })();
    const timer = setInterval(() => pub.publish('trellis.test.routed', sc.encode('across')), 50);
    const received = await got;
    clearInterval(timer);
    expect(received).toBe('across');
    await Promise.all([sub.close(), pub.close()]);
  });
});

describe('testing/servers - redis-server', () => {
  let redis: RunningServer;
  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(async () => {
    await redis.stop();
  });

  it('testing/servers - a real redis-server stores and returns a value', async () => {
    // Checks the helper gives a working server: SET then GET over a real connection returns the value.
    const client = new Redis(redis.url);
    await client.set('trellis:test', 'value-1');
    expect(await client.get('trellis:test')).toBe('value-1');
    await client.quit();
  });
});
