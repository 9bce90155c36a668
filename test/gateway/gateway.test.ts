/**
 * The Redis gateway against a real redis-server (started here on a free loopback port) and the embedded
 * scheduler (an in-process Raft group): outcomes on reply streams, the dead-letter stream, the events
 * stream by log position, and a Redis restart in the middle of a run.
 */
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createScheduler, type Scheduler } from '../../scheduler/scheduler.js';
import { gatewayConfig } from '../../src/gateway/config.js';
import { RedisGateway } from '../../src/gateway/gateway.js';
import { MemoryMetrics } from '../../src/lib/metrics.js';
import { type RunningServer, startRedis } from '../../src/testing/servers.js';
import { collectEvents, type Fields, nodeSpec, readAll, sandboxSpec, waitFor } from './helpers.js';

const alwaysLeader = { id: 'r0', leading: () => true, onLeaderChange: () => () => {} };

describe('gateway - requests, dead letters and events', () => {
  let redis: RunningServer;
  let client: Redis;
  let scheduler: Scheduler;
  let gateway: RedisGateway | undefined;
  let metrics: MemoryMetrics;
  let n = 0;
  /** Fresh stream names per test, so tests sharing the server do not see each other's entries. */
  let names: { requests: string; events: string; deadLetter: string; reply: string };

  beforeAll(async () => {
    redis = await startRedis();
    client = new Redis(redis.url);
  });
  afterAll(async () => {
    client.disconnect();
    await redis.stop();
  });
  afterEach(async () => {
    await gateway?.close();
    gateway = undefined;
    await scheduler.close();
  });

  async function start(): Promise<void> {
    n++;
    names = {
      requests: `t${n}:requests`,
      events: `t${n}:events`,
      deadLetter: `t${n}:dead`,
      reply: `t${n}:replies`,
    };
    scheduler = createScheduler();
    metrics = new MemoryMetrics();
    await scheduler.registerNode(nodeSpec('n1'), { requestId: `node-${n}` });
    gateway = await RedisGateway.start({
      config: gatewayConfig({ url: redis.url, ...streams(), claimIdleMs: 200, readBlockMs: 100 }),
      api: scheduler,
      replica: alwaysLeader,
      metrics,
    });
  }

  const replies = () => readAll(client, names.reply);
  const streams = () => ({ requests: names.requests, events: names.events, deadLetter: names.deadLetter });

  it('gateway - each request gets one outcome: placed with its node, done, or rejected with its code', async () => {
    // Checks the reply stream shape for every request type and for refusals, and that a request re-sent
    // with the same id gets the same sandbox (the request id is the idempotency key).
    await start();
    const spec = JSON.stringify(sandboxSpec);
    await client.xadd(names.requests, '*', 'id', 'c1', 'type', 'create', 'reply', names.reply, 'spec', spec);
    await client.xadd(names.requests, '*', 'id', 'c1', 'type', 'create', 'reply', names.reply, 'spec', spec);
    const bad = JSON.stringify({ tenant: 't1', resources: { cpu: -1, memory: 1, disk: 1 } });
    await client.xadd(names.requests, '*', 'id', 'c2', 'type', 'create', 'reply', names.reply, 'spec', bad);
    await client.xadd(
      names.requests,
      '*',
      'id',
      'x1',
      'type',
      'terminate',
      'reply',
      names.reply,
      'sandbox',
      'nope',
    );
    const first = await waitFor('four replies', replies, (r) => r.length === 4);
    const byRequest = (id: string): Fields[] => first.filter(([, f]) => f.request === id).map(([, f]) => f);
    const [a, b] = byRequest('c1') as [Fields, Fields];
    expect(a).toMatchObject({ type: 'create', status: 'placed', node: 'n1', state: 'placed' });
    expect(b.sandbox).toBe(a.sandbox);
    expect(byRequest('c2')[0]).toMatchObject({ status: 'rejected', code: 'VALIDATION' });
    expect(byRequest('x1')[0]).toMatchObject({ status: 'rejected', code: 'SCHED_UNKNOWN_SANDBOX' });

    const sandbox = a.sandbox as string;
    await client.xadd(
      names.requests,
      '*',
      'id',
      't1',
      'type',
      'terminate',
      'reply',
      names.reply,
      'sandbox',
      sandbox,
    );
    const all = await waitFor('five replies', replies, (r) => r.length === 5);
    expect(all[4]?.[1]).toMatchObject({ request: 't1', type: 'terminate', status: 'done', sandbox });
    // A terminated sandbox leaves the state (or is on its way out); it is no longer placed.
    expect((await scheduler.get(sandbox))?.state ?? 'gone').not.toBe('placed');
    expect((await scheduler.list()).filter((s) => s.state === 'placed').length).toBe(0);
    const pending = (await client.xpending(names.requests, 'trellis')) as [number, ...unknown[]];
    expect(pending[0]).toBe(0);
    expect(metrics.value('trellis_gateway_entries_acked_total', { outcome: 'placed' })).toBe(2);
    expect(metrics.value('trellis_gateway_entries_acked_total', { outcome: 'rejected' })).toBe(2);
  });

  it('gateway - garbage entries go to the dead-letter stream with their reason; the gateway goes on', async () => {
    // Each malformed entry (missing fields, wrong types, huge values, bad reply streams, bad JSON) is
    // acknowledged with a dead-letter record naming its reason; a good request sent after them is served.
    await start();
    const r = names.reply;
    const garbage: [string, string[]][] = [
      ['missing-field', ['type', 'create', 'reply', r, 'spec', '{}']],
      ['missing-field', ['id', 'g2', 'type', 'create', 'reply', r]],
      ['missing-field', ['id', 'g3', 'type', 'terminate', 'reply', r]],
      ['bad-type', ['id', 'g4', 'type', 'explode', 'reply', r]],
      ['bad-field', ['id', 'has space', 'type', 'create', 'reply', r, 'spec', '{}']],
      ['bad-field', ['id', 'g6', 'type', 'suspend', 'reply', r, 'sandbox', 'a.b']],
      ['bad-json', ['id', 'g7', 'type', 'create', 'reply', r, 'spec', '{not json']],
      ['bad-json', ['id', 'g8', 'type', 'create', 'reply', r, 'spec', '[1,2]']],
      ['too-large', ['id', 'g9', 'type', 'create', 'reply', r, 'spec', 'x'.repeat(200_000)]],
      ['too-large', ['id', 'y'.repeat(5_000), 'type', 'create', 'reply', r]],
      ['bad-reply-stream', ['id', 'g11', 'type', 'create', 'reply', 'bad name', 'spec', '{}']],
      ['bad-reply-stream', ['id', 'g12', 'type', 'create', 'reply', names.events, 'spec', '{}']],
      ['bad-reply-stream', ['id', 'g13', 'type', 'create', 'reply', names.requests, 'spec', '{}']],
      ['unknown-field', ['id', 'g14', 'type', 'create', 'reply', r, 'spec', '{}', 'extra', '1']],
    ];
    for (const [, fields] of garbage) await client.xadd(names.requests, '*', ...fields);
    // A reply key that exists but is not a stream: refused before anything is acknowledged.
    await client.set(`${r}:string`, 'x');
    await client.xadd(
      names.requests,
      '*',
      'id',
      'g15',
      'type',
      'create',
      'reply',
      `${r}:string`,
      'spec',
      '{}',
    );
    const spec = JSON.stringify(sandboxSpec);
    await client.xadd(names.requests, '*', 'id', 'ok1', 'type', 'create', 'reply', r, 'spec', spec);

    const dead = await waitFor(
      'dead letters',
      () => readAll(client, names.deadLetter),
      (d) => d.length === 15,
    );
    const reasons = dead.map(([, f]) => f.reason);
    expect(reasons.slice(0, garbage.length)).toEqual(garbage.map(([reason]) => reason));
    expect(reasons[garbage.length]).toBe('bad-reply-stream');
    for (const [, f] of dead) {
      expect(f.entry).toMatch(/^\d+-\d+$/);
      expect((f.detail ?? '').length).toBeGreaterThan(0);
      expect((f.fields ?? '').length).toBeLessThanOrEqual(4_097);
    }
    const ok = await waitFor('the good request', replies, (x) => x.length === 1);
    expect(ok[0]?.[1]).toMatchObject({ request: 'ok1', status: 'placed' });
    const pending = (await client.xpending(names.requests, 'trellis')) as [number, ...unknown[]];
    expect(pending[0]).toBe(0);
    expect(metrics.value('trellis_gateway_dead_lettered_total', { reason: 'missing-field' })).toBe(3);
    expect(metrics.value('trellis_gateway_entries_acked_total', { outcome: 'dead-letter' })).toBe(15);
  });

  it('gateway - the events stream holds the committed events in order, each under its log position', async () => {
    // Compares the events stream with the events the attached replica applied (watched from before the
    // first request): the same events, in the same order, ids `index-n`, no gap.
    scheduler = createScheduler();
    const reference = collectEvents(scheduler.log.machine(0));
    n++;
    names = {
      requests: `t${n}:requests`,
      events: `t${n}:events`,
      deadLetter: `t${n}:dead`,
      reply: `t${n}:r`,
    };
    gateway = await RedisGateway.start({
      config: gatewayConfig({ url: redis.url, ...streams(), readBlockMs: 100 }),
      api: scheduler,
      replica: alwaysLeader,
    });
    await scheduler.registerNode(nodeSpec('n1'), { requestId: 'node-e' });
    const spec = JSON.stringify(sandboxSpec);
    for (let i = 0; i < 50; i++)
      await client.xadd(
        names.requests,
        '*',
        'id',
        `e${i}`,
        'type',
        'create',
        'reply',
        names.reply,
        'spec',
        spec,
      );
    await waitFor('50 replies', replies, (x) => x.length === 50);
    const stream = await waitFor(
      'events stream caught up',
      () => readAll(client, names.events),
      (s) => s.length > 0 && s[s.length - 1]?.[0] === reference.events[reference.events.length - 1]?.id,
    );
    reference.off();
    expect(stream.map(([id]) => id)).toEqual(reference.events.map((e) => e.id));
    expect(stream.map(([, f]) => JSON.parse(f.event as string))).toEqual(
      reference.events.map((e) => e.event),
    );
    expect(stream[0]?.[1]).toMatchObject({ kind: 'node' });
  });
});
