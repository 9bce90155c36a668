/**
 * Garbage on the API subjects, against the NATS adapter over a real nats-server: random bytes, wrong
 * envelopes, kinds, versions and shapes, huge frames, hostile field values, and frames without a reply
 * subject. Every answer must be a typed error reply; nothing may change state or stop the server.
 */
import { encode } from '@msgpack/msgpack';
import { type NatsConnection, connect as natsConnect } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createScheduler, type Scheduler } from '../../scheduler/scheduler.js';
import { connect, type RemoteScheduler } from '../../src/api/client.js';
import { type ApiServer, serveApi } from '../../src/api/nats-server.js';
import {
  apiFrameBytesMax,
  apiReplicaSubject,
  apiSubject,
  replyCodec,
  requestCodec,
} from '../../src/api/protocol.js';
import { createRng } from '../../src/lib/prng.js';
import { type RunningServer, startNats } from '../../src/testing/servers.js';

const cluster = 'garbage';
const seed = Number(process.env.TRELLIS_SEED ?? 0x5eed) >>> 0;

describe('api nats adapter - garbage', () => {
  let nats: RunningServer;
  let nc: NatsConnection;
  let serverConn: NatsConnection;
  let scheduler: Scheduler;
  let server: ApiServer;
  let client: RemoteScheduler;

  beforeAll(async () => {
    // max_payload above the API's own frame limit, so the adapter (not nats-server) refuses huge frames.
    nats = await startNats({ extraConfig: 'max_payload: 4194304' });
    scheduler = createScheduler();
    serverConn = await natsConnect({ servers: nats.url });
    server = await serveApi({ api: scheduler, connection: serverConn, cluster, replica: 'r1' });
    nc = await natsConnect({ servers: nats.url });
    client = await connect({ servers: nats.url, cluster });
    await client.registerNode({
      id: 'n1',
      capacity: { cpu: 4000, memory: 8192, disk: 100_000 },
      labels: {},
      state: 'ready',
    });
  });
  afterAll(async () => {
    await client?.close();
    await server?.close();
    await scheduler?.close();
    await nc?.close();
    await serverConn?.close();
    await nats?.stop();
  });

  /** Sends raw bytes and returns the decoded error reply's code and reason. */
  async function refusal(
    bytes: Uint8Array,
    subject = apiSubject(cluster),
  ): Promise<{ code: string; reason?: string }> {
    const msg = await nc.request(subject, bytes, { timeout: 5_000 });
    const reply = replyCodec.decode(msg.data);
    expect(reply.ok, `seed ${seed}`).toBe(false);
    if (reply.ok) throw new Error('unreachable');
    return {
      code: reply.error.code,
      ...(reply.error.reason === undefined ? {} : { reason: reply.error.reason }),
    };
  }

  const envelope = (body: unknown, kind = 'trellis.api.request', version = 1): Uint8Array =>
    encode([kind, version, body]);
  const soon = () => ({ atMs: Date.now() + 5_000, budgetMs: 5_000 });
  const validCall = { id: 'req-g', deadline: soon(), call: { op: 'stats' } };

  it('api nats adapter - random bytes, wrong envelopes, kinds, versions and shapes get typed CODEC errors', async () => {
    const before = await client.stats();
    const rng = createRng(seed);
    for (let i = 0; i < 200; i++) {
      const bytes = new Uint8Array(rng.int(0, 512)).map(() => rng.int(0, 256));
      const subject = i % 2 === 0 ? apiSubject(cluster) : apiReplicaSubject(cluster, 'r1');
      expect((await refusal(bytes, subject)).code, `seed ${seed}, frame ${i}`).toBe('CODEC');
    }
    const cases: [Uint8Array, string][] = [
      [encode({ not: 'an envelope' }), 'envelope'],
      [encode(['trellis.api.request', 1]), 'envelope'],
      [envelope(validCall, 'trellis.raft.message'), 'kind'],
      [envelope(validCall, 'trellis.api.request', 2), 'version'],
      [envelope(validCall, 'trellis.api.request', 0), 'version'],
      [envelope(validCall, 'trellis.api.request', '1' as unknown as number), 'version'],
      [envelope({ ...validCall, call: { op: 'drop-tables' } }), 'shape'],
      [envelope({ ...validCall, id: 'has spaces' }), 'shape'],
      [envelope({ ...validCall, id: 'x'.repeat(500) }), 'shape'],
      [envelope({ ...validCall, deadline: { atMs: -1, budgetMs: 5 } }), 'shape'],
      [envelope({ ...validCall, deadline: { atMs: 1, budgetMs: 1e12 } }), 'shape'],
      [envelope({ ...validCall, deadline: undefined }), 'shape'],
      [envelope({ ...validCall, extra: true }), 'shape'],
      [envelope({ id: 'r', deadline: soon(), call: { op: 'terminate', sandboxId: 7 } }), 'shape'],
      [envelope({ id: 'r', deadline: soon(), call: { op: 'list', filter: {}, limit: 1e9 } }), 'shape'],
      [envelope({ id: 'r', deadline: soon(), call: { op: 'node.heartbeat', nodeIds: 'n1' } }), 'shape'],
      [
        envelope({
          id: 'r',
          deadline: soon(),
          call: { op: 'events', after: { index: -1, count: 0 }, limit: 1 },
        }),
        'shape',
      ],
      [envelope(null), 'shape'],
      [new Uint8Array(0), 'malformed'],
    ];
    for (const [bytes, reason] of cases) expect(await refusal(bytes)).toEqual({ code: 'CODEC', reason });
    const after = await client.stats();
    expect(after.applied).toBe(before.applied);
    expect(after.sandboxes).toBe(0);
  });

  it('api nats adapter - a frame larger than the API limit is refused as too large', async () => {
    const huge = envelope({
      ...validCall,
      call: { op: 'create', spec: { blob: 'x'.repeat(apiFrameBytesMax + 10) } },
    });
    expect(await refusal(huge)).toEqual({ code: 'CODEC', reason: 'too-large' });
  });

  it("api nats adapter - well-formed frames with hostile values get the scheduler's typed errors and change nothing", async () => {
    const before = await client.stats();
    const call = (c: unknown) => requestCodec.encode({ id: 'req-h', deadline: soon(), call: c as never });
    const hostile = [
      { op: 'create', spec: { tenant: '../../etc', resources: { cpu: 1, memory: 1, disk: 1 } } },
      { op: 'create', spec: { tenant: 't', resources: { cpu: 1e300, memory: 1, disk: 1 } } },
      { op: 'create', spec: 'a string' },
      {
        op: 'node.register',
        spec: { id: 'n2', capacity: { cpu: -5, memory: 1, disk: 1 }, labels: {}, state: 'ready' },
      },
      { op: 'node.state', nodeId: 'n1', state: 'exploded' },
      { op: 'node.status', items: [{ sandboxId: 'x', state: 'dancing' }] },
      {
        op: 'node.reconcile',
        nodeId: 'n1',
        running: [
          { sandboxId: 'a', state: 'running' },
          { sandboxId: 'a', state: 'running' },
        ],
      },
      { op: 'quota.set', tenant: 't1', quota: { cpu: 'lots' } },
      { op: 'list', filter: { state: 'bogus' }, limit: 10 },
    ];
    for (const c of hostile) expect((await refusal(call(c))).code, JSON.stringify(c)).toBe('VALIDATION');
    const after = await client.stats();
    expect(after.applied).toBe(before.applied);
    expect((await client.nodes()).map((n) => n.state)).toEqual(['ready']);
  });

  it('api nats adapter - a request that arrives after its deadline (a stalled sender or replica) is dropped unapplied', async () => {
    const stale = requestCodec.encode({
      id: 'late-1',
      deadline: { atMs: Date.now() - 1_000, budgetMs: 5_000 },
      call: { op: 'create', spec: { tenant: 't1', resources: { cpu: 1, memory: 1, disk: 1 } } },
    });
    expect(await refusal(stale)).toEqual({ code: 'DEADLINE_EXCEEDED' });
    expect((await client.list()).filter((s) => s.requestId === 'late-1')).toEqual([]);
  });

  it('api nats adapter - frames without a reply subject are dropped, and the server keeps answering', async () => {
    const refusedBefore = server.counters.refused;
    nc.publish(
      apiSubject(cluster),
      requestCodec.encode({
        id: 'fire-forget',
        deadline: soon(),
        call: { op: 'create', spec: { tenant: 't1', resources: { cpu: 1, memory: 1, disk: 1 } } },
      }),
    );
    nc.publish(apiSubject(cluster), new Uint8Array([1, 2, 3]));
    await nc.flush();
    // The stats request is answered after the two published frames (one connection keeps order).
    const stats = await client.stats();
    expect(stats.sandboxes).toBe(0);
    expect(server.counters.refused).toBe(refusedBefore + 2);
    const sb = await client.create({ tenant: 't1', resources: { cpu: 100, memory: 64, disk: 64 } });
    expect(sb.state).toBe('placed');
  });
});
