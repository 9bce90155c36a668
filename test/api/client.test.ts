/**
 * The remote client's call discipline over a real nats-server: leader hints, same-id retries, unknown
 * outcomes, unreachable clusters, and errors the client does not know. The server side is the embedded
 * scheduler served by the NATS adapter in this process (see remote-contract.test.ts).
 */
import { type NatsConnection, connect as natsConnect } from 'nats';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { SchedulerApi } from '../../scheduler/api.js';
import { createScheduler } from '../../scheduler/scheduler.js';
import { connect } from '../../src/api/client.js';
import { RemoteError } from '../../src/api/errors.js';
import { serveApi } from '../../src/api/nats-server.js';
import { apiReplicaSubject, apiSubject, replyCodec, requestCodec } from '../../src/api/protocol.js';
import { OutcomeUnknownError, UnavailableError, ValidationError } from '../../src/lib/errors.js';
import { type RunningServer, startNats } from '../../src/testing/servers.js';

const node = {
  id: 'n1',
  capacity: { cpu: 4000, memory: 8192, disk: 100_000 },
  labels: {},
  state: 'ready' as const,
};
const spec = { tenant: 't1', resources: { cpu: 100, memory: 64, disk: 64 } };

describe('api client', () => {
  let nats: RunningServer;
  let nc: NatsConnection;
  let n = 0;
  const fresh = () => `client${++n}`;

  beforeAll(async () => {
    nats = await startNats();
    nc = await natsConnect({ servers: nats.url });
  });
  afterAll(async () => {
    await nc.close();
    await nats.stop();
  });

  it('api client - a create whose reply is lost is OutcomeUnknownError, and a retry with its request id resolves it once', async () => {
    const cluster = fresh();
    const scheduler = createScheduler();
    await scheduler.registerNode(node);
    // The first create is applied, but its answer never leaves the server (as if the reply were lost).
    let swallow = true;
    const held: (() => void)[] = [];
    const lossy = new Proxy(scheduler, {
      get(target, prop) {
        if (prop === 'create') {
          return async (...args: Parameters<SchedulerApi['create']>) => {
            const sb = await target.create(...args);
            if (swallow) await new Promise<void>((r) => held.push(r));
            return sb;
          };
        }
        const v = Reflect.get(target, prop, target);
        return typeof v === 'function' ? v.bind(target) : v;
      },
    }) as SchedulerApi;
    const server = await serveApi({ api: lossy, connection: nc, cluster, replica: 'r1' });
    const client = await connect({ servers: nats.url, cluster, timeoutMs: 400, attemptTimeoutMs: 100 });
    const err = await client.create(spec, { requestId: 'lost-1' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OutcomeUnknownError);
    expect((err as OutcomeUnknownError).details.requestId).toBe('lost-1');
    swallow = false;
    const sb = await client.create(spec, { requestId: 'lost-1' });
    expect((await scheduler.list()).map((s) => s.id)).toEqual([sb.id]);
    for (const release of held) release();
    await client.close();
    await server.close();
    await scheduler.close();
  });

  it('api client - with no replica listening, a mutation fails as UnavailableError (not applied), not as unknown', async () => {
    // Attempts long enough that NATS's no-responders answer always beats the attempt's timeout, even on a
    // loaded machine (at 100 ms one attempt timed out in a CI run, which rightly made the outcome unknown).
    const client = await connect({
      servers: nats.url,
      cluster: fresh(),
      timeoutMs: 1_500,
      attemptTimeoutMs: 1_000,
    });
    const err = await client.terminate('sb-1').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UnavailableError);
    expect((err as UnavailableError).message).toMatch(/not applied/);
    await client.close();
  });

  it('api client - follows the leader hint: a follower forwards, then the client goes to the leader directly', async () => {
    const cluster = fresh();
    const scheduler = createScheduler();
    const c1 = await natsConnect({ servers: nats.url });
    const c2 = await natsConnect({ servers: nats.url });
    // r1 is a follower that knows r2 leads and is the only one in the queue group; r2 leads and serves
    // only its own subject. Both front the same scheduler.
    const follower = await serveApi({
      api: scheduler,
      connection: c1,
      cluster,
      replica: 'r1',
      leader: () => 'r2',
    });
    const leader = await serveApi({
      api: scheduler,
      connection: c2,
      cluster,
      replica: 'r2',
      leader: () => 'r2',
      joinQueue: false,
    });
    const client = await connect({ servers: nats.url, cluster });
    expect(client.leader).toBeUndefined();
    await client.registerNode(node);
    expect(follower.counters.forwarded).toBe(1);
    expect(client.leader).toBe('r2');
    for (let i = 0; i < 10; i++) await client.create(spec);
    // Every later call went straight to r2's own subject.
    expect(follower.counters.requests).toBe(1);
    expect(leader.counters.requests).toBe(11);
    // Sent to a follower's own subject, a call is refused with the hint rather than forwarded.
    const raw = await nc.request(
      apiReplicaSubject(cluster, 'r1'),
      requestCodec.encode({
        id: 'direct-1',
        deadline: { atMs: Date.now() + 1_000, budgetMs: 1_000 },
        call: { op: 'stats' },
      }),
      { timeout: 2_000 },
    );
    expect(replyCodec.decode(raw.data)).toMatchObject({
      ok: false,
      by: 'r1',
      leader: 'r2',
      error: { code: 'SCHED_NOT_LEADER' },
    });
    expect(follower.counters.forwarded).toBe(1);
    await client.close();
    await follower.close();
    await leader.close();
    await scheduler.close();
    await c1.close();
    await c2.close();
  });

  it('api client - an error code the client does not know arrives as RemoteError with code, name and details', async () => {
    const cluster = fresh();
    const sub = nc.subscribe(apiSubject(cluster), {
      callback: (_e, msg) =>
        msg.respond(
          replyCodec.encode({
            ok: false,
            by: 'future',
            error: {
              code: 'FUTURE_THING',
              name: 'FutureThingError',
              message: 'from the future',
              details: { n: 3 },
            },
          }),
        ),
    });
    await nc.flush();
    const client = await connect({ servers: nats.url, cluster });
    const err = await client.get('x').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RemoteError);
    expect(err).toMatchObject({
      code: 'FUTURE_THING',
      remoteName: 'FutureThingError',
      message: 'from the future',
    });
    expect((err as RemoteError).details).toEqual({ n: 3 });
    sub.unsubscribe();
    await client.close();
  });

  it('api client - a reply that does not match the protocol is a CodecError, not a crash', async () => {
    const cluster = fresh();
    const sub = nc.subscribe(apiSubject(cluster), {
      callback: (_e, msg) => msg.respond(replyCodec.encode({ ok: true, by: 'liar', result: { id: 42 } })),
    });
    await nc.flush();
    const client = await connect({ servers: nats.url, cluster });
    expect((await client.get('x').catch((e: unknown) => e)) as Error).toMatchObject({ code: 'CODEC' });
    sub.unsubscribe();
    await client.close();
  });

  it('api client - bad options and request ids are refused before anything is sent', async () => {
    await expect(connect({ servers: nats.url, cluster: 'bad cluster' })).rejects.toBeInstanceOf(
      ValidationError,
    );
    await expect(connect({ servers: nats.url, cluster: 'c', timeoutMs: -1 })).rejects.toMatchObject({
      code: 'CONFIG',
    });
    await expect(connect({ servers: 'nats://127.0.0.1:1', cluster: 'c' })).rejects.toBeInstanceOf(
      UnavailableError,
    );
    const client = await connect({ servers: nats.url, cluster: fresh() });
    await expect(client.terminate('sb', { requestId: 'not ok' })).rejects.toBeInstanceOf(ValidationError);
    await client.close();
  });
  it('api client - a create waiting for running that never runs ends SCHED_NOT_RUNNING before the deadline, not unknown', async () => {
    const cluster = fresh();
    // The embedded scheduler has no dispatcher here: a placed sandbox never reports running.
    const scheduler = createScheduler();
    await scheduler.registerNode(node);
    const server = await serveApi({ api: scheduler, connection: nc, cluster, replica: 'r1' });
    const client = await connect({ servers: nats.url, cluster, timeoutMs: 2_000 });
    // The caller's own wait is honoured: the answer is the refusal, not a timeout of the call.
    const err = await client.create(spec, { wait: 'running', runningWaitMs: 200 }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'SCHED_NOT_RUNNING' });
    // A caller that sends no wait of its own (an older client) is bounded by its deadline, and the answer
    // leaves before the deadline: before, the wait ended at the deadline itself, as the caller gave up.
    const budgetMs = 3_000;
    const raw = await nc.request(
      apiReplicaSubject(cluster, 'r1'),
      requestCodec.encode({
        id: 'wait-old-1',
        deadline: { atMs: Date.now() + budgetMs, budgetMs },
        call: { op: 'create', spec, wait: 'running' },
      }),
      { timeout: budgetMs },
    );
    expect(replyCodec.decode(raw.data)).toMatchObject({ ok: false, error: { code: 'SCHED_NOT_RUNNING' } });
    expect((await scheduler.list()).filter((sb) => sb.state === 'placed')).toHaveLength(2);
    await client.close();
    await server.close();
    await scheduler.close();
  });

  it('api client - a create that finds no room is answered pending before the deadline, not unknown', async () => {
    const cluster = fresh();
    // The pending deadline (30 s) outlasts the caller's: the replica answers with the committed record.
    const scheduler = createScheduler();
    await scheduler.registerNode(node);
    const server = await serveApi({ api: scheduler, connection: nc, cluster, replica: 'r1' });
    const client = await connect({ servers: nats.url, cluster, timeoutMs: 2_500 });
    const big = { tenant: 't1', resources: { cpu: 1_000_000, memory: 64, disk: 64 } };
    const sb = await client.create(big, { requestId: 'big-1' });
    expect(sb).toMatchObject({ id: 'big-1', state: 'pending' });
    expect(sb.reason).toMatch(/cpu/);
    // The same request id again (a retry) is the same pending sandbox, not a second one.
    expect(await client.create(big, { requestId: 'big-1' })).toMatchObject({ id: 'big-1', state: 'pending' });
    // Asked to wait for running, the answer says it is pending once the caller's wait is over.
    const err = await client
      .create(big, { requestId: 'big-2', wait: 'running', runningWaitMs: 500 })
      .catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'SCHED_NOT_RUNNING', details: { state: 'pending' } });
    const pending = (await scheduler.list()).filter((x) => x.state === 'pending').map((x) => x.id);
    expect(pending.sort()).toEqual(['big-1', 'big-2']);
    // Room appears: the pending sandbox is placed by the leader's wake-up, its caller long gone.
    await scheduler.registerNode({
      ...node,
      id: 'n-big',
      capacity: { cpu: 2_000_000, memory: 4096, disk: 4096 },
    });
    await vi.waitFor(async () => expect((await scheduler.get('big-1'))?.state).toBe('placed'), {
      timeout: 5_000,
    });
    await client.close();
    await server.close();
    await scheduler.close();
  });
});
