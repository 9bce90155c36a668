/**
 * The gateway's delivery rules against a real redis-server, with the embedded scheduler behind a thin
 * wrapper that holds creates back (to see the back-pressure bound) or fails the first attempt of some with
 * NotLeaderError (an outcome the gateway cannot know): the wrapper changes when calls answer, never what.
 */
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { SchedulerApi } from '../../scheduler/api.js';
import { NotLeaderError } from '../../scheduler/errors.js';
import { createScheduler, type Scheduler } from '../../scheduler/scheduler.js';
import { gatewayConfig } from '../../src/gateway/config.js';
import { RedisGateway } from '../../src/gateway/gateway.js';
import { MemoryMetrics } from '../../src/lib/metrics.js';
import { type RunningServer, startRedis } from '../../src/testing/servers.js';
import { nodeSpec, readAll, sandboxSpec, waitFor } from './helpers.js';

const alwaysLeader = { id: 'r0', leading: () => true, onLeaderChange: () => () => {} };

/** `api` with its create passed through `gate` first. */
function gated(api: Scheduler, gate: (requestId: string) => Promise<void>): SchedulerApi {
  return new Proxy(api, {
    get(target, prop, receiver) {
      if (prop === 'create')
        return async (spec: Parameters<Scheduler['create']>[0], o: Parameters<Scheduler['create']>[1]) => {
          await gate(o?.requestId ?? '');
          return target.create(spec, o);
        };
      const v = Reflect.get(target, prop, receiver) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}

describe('gateway delivery', () => {
  let redis: RunningServer;
  let client: Redis;
  let scheduler: Scheduler;
  let gateway: RedisGateway | undefined;
  beforeAll(async () => {
    redis = await startRedis();
    client = new Redis(redis.url);
  });
  afterAll(async () => {
    client.disconnect();
    await redis.stop();
  });
  afterEach(async () => {
    await gateway?.close(1_000);
    gateway = undefined;
    await scheduler.close();
  });

  const pendingCount = async (stream: string): Promise<number> =>
    ((await client.xpending(stream, 'trellis')) as [number])[0];

  it('gateway delivery - never more requests read and unanswered than inFlightMax', async () => {
    // Creates are held until released: with 60 requests waiting and a bound of 5, the group's pending list
    // (entries delivered and unacknowledged) and the gateway's in-flight count stay at 5; released, all 60
    // complete.
    scheduler = createScheduler();
    await scheduler.registerNode(nodeSpec('n1'), { requestId: 'node-bp' });
    const held: (() => void)[] = [];
    const api = gated(scheduler, () => new Promise<void>((r) => held.push(r)));
    gateway = await RedisGateway.start({
      config: gatewayConfig({
        url: redis.url,
        requests: 'bp:req',
        events: 'bp:ev',
        deadLetter: 'bp:dl',
        inFlightMax: 5,
        readBlockMs: 50,
      }),
      api,
      replica: alwaysLeader,
    });
    const spec = JSON.stringify(sandboxSpec);
    for (let i = 0; i < 60; i++)
      await client.xadd('bp:req', '*', 'id', `bp-${i}`, 'type', 'create', 'reply', 'bp:rep', 'spec', spec);
    await waitFor(
      '5 held',
      async () => held.length,
      (n) => n === 5,
    );
    // A few more read loops pass while nothing is released: the bound holds.
    await new Promise((r) => setTimeout(r, 300));
    expect(held.length).toBe(5);
    expect(gateway.inFlight).toBe(5);
    expect(await pendingCount('bp:req')).toBe(5);
    let released = 0;
    const releaseAll = setInterval(() => {
      for (const r of held.splice(0)) {
        released++;
        r();
      }
    }, 5);
    try {
      await waitFor(
        '60 replies',
        () => readAll(client, 'bp:rep'),
        (x) => x.length === 60,
      );
    } finally {
      clearInterval(releaseAll);
    }
    expect(released).toBe(60);
    expect(await pendingCount('bp:req')).toBe(0);
  });

  it('gateway delivery - an unknown outcome is left pending, claimed again and answered once', async () => {
    // The first attempt of every third create fails NotLeaderError, as when the leader is lost mid-call:
    // the gateway must not answer it, and must retry it (XAUTOCLAIM after claimIdleMs, same request id).
    scheduler = createScheduler();
    await scheduler.registerNode(nodeSpec('n1'), { requestId: 'node-uo' });
    const attempts = new Map<string, number>();
    const api = gated(scheduler, async (id) => {
      const n = (attempts.get(id) ?? 0) + 1;
      attempts.set(id, n);
      if (n === 1 && Number(id.split('-')[1]) % 3 === 0) throw new NotLeaderError('lost leadership (test)');
    });
    const metrics = new MemoryMetrics();
    gateway = await RedisGateway.start({
      config: gatewayConfig({
        url: redis.url,
        requests: 'uo:req',
        events: 'uo:ev',
        deadLetter: 'uo:dl',
        claimIdleMs: 200,
        readBlockMs: 50,
      }),
      api,
      replica: alwaysLeader,
      metrics,
    });
    const spec = JSON.stringify(sandboxSpec);
    for (let i = 0; i < 30; i++)
      await client.xadd('uo:req', '*', 'id', `uo-${i}`, 'type', 'create', 'reply', 'uo:rep', 'spec', spec);
    const replies = await waitFor(
      '30 replies',
      () => readAll(client, 'uo:rep'),
      (x) => x.length >= 30,
    );
    await new Promise((r) => setTimeout(r, 500));
    expect((await readAll(client, 'uo:rep')).length).toBe(30);
    expect(new Set(replies.map(([, f]) => f.request)).size).toBe(30);
    expect(replies.every(([, f]) => f.status === 'placed')).toBe(true);
    for (let i = 0; i < 30; i += 3)
      expect(attempts.get(`uo-${i}`), `attempts of uo-${i}`).toBeGreaterThanOrEqual(2);
    expect(metrics.value('trellis_gateway_outcomes_unknown_total')).toBe(10);
    expect(metrics.value('trellis_gateway_entries_read_total', { source: 'claimed' })).toBeGreaterThanOrEqual(
      10,
    );
    expect(await pendingCount('uo:req')).toBe(0);
    expect((await scheduler.list()).length).toBe(30);
    // The lag gauges were sampled, and end at zero with nothing left to read.
    await waitFor(
      'lag sampled',
      async () => metrics.value('trellis_gateway_request_lag_entries'),
      (v) => v === 0,
    );
  });
});
