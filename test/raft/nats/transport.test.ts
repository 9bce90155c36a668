import { encode } from '@msgpack/msgpack';
import { connect, type NatsConnection } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { NatsTransport, raftSubject } from '../../../raft/transport/nats.js';
import { createCodec } from '../../../src/lib/codec.js';
import { createRng } from '../../../src/lib/prng.js';
import { zodDecoder } from '../../../src/lib/validate.js';
import { type RunningServer, startNats } from '../../../src/testing/servers.js';
import { until } from '../../helpers/until.js';

// A stand-in Raft message: the transport is generic over the message codec.
const messageSchema = z.strictObject({
  to: z.string(),
  from: z.string(),
  term: z.number().int(),
  seq: z.number().int(),
});
type Msg = z.output<typeof messageSchema>;
const codec = createCodec<Msg>({
  kind: 'test.raft.msg',
  version: 1,
  frameBytesMax: 1 << 20,
  decoders: { 1: zodDecoder(messageSchema) },
});

describe('raft/transport/nats - with a real nats-server', () => {
  let server: RunningServer;
  let ncA: NatsConnection;
  let ncB: NatsConnection;
  let raw: NatsConnection;
  let a: NatsTransport<Msg>;
  let b: NatsTransport<Msg>;
  const gotB: Msg[] = [];
  const unreachableA: string[] = [];

  beforeAll(async () => {
    server = await startNats();
    const opts = { servers: server.url, reconnectTimeWait: 50, maxReconnectAttempts: -1 };
    [ncA, ncB, raw] = await Promise.all([connect(opts), connect(opts), connect({ servers: server.url })]);
    a = new NatsTransport({
      connection: ncA,
      cluster: 'c1',
      self: 'a',
      codec,
      destination: (m) => m.to,
      probeIntervalMs: 100,
    });
    b = new NatsTransport({
      connection: ncB,
      cluster: 'c1',
      self: 'b',
      codec,
      destination: (m) => m.to,
      probeIntervalMs: 100,
    });
    b.onMessage((m) => gotB.push(m));
    a.onUnreachable((peer) => unreachableA.push(peer));
    await Promise.all([ncA.flush(), ncB.flush()]);
  });
  afterAll(async () => {
    await Promise.all([a.close(), b.close()]);
    await Promise.all([ncA.close(), ncB.close(), raw.close()]);
    await server.stop();
  });

  it('raft/transport/nats - delivers messages, coalesced into one NATS message per peer per tick', async () => {
    // Sends 200 messages to b in one tick and counts, with a raw subscriber, the NATS messages on b's subject.
    let natsMessages = 0;
    const spy = raw.subscribe(raftSubject('c1', 'b'), {
      callback: (_e, msg) => (natsMessages += msg.data.length > 0 ? 1 : 0),
    });
    await raw.flush();
    gotB.length = 0;
    const sent = Array.from({ length: 200 }, (_, i) => ({ to: 'b', from: 'a', term: 1, seq: i }));
    a.send(sent);
    await until(() => gotB.length === 200, '200 messages');
    expect(gotB).toEqual(sent);
    // The spy is another connection: its copy may arrive after b's, so wait for it before counting.
    await until(() => natsMessages > 0, 'the spy sees the batch');
    await raw.flush();
    expect(natsMessages).toBe(1);
    expect(a.stats().batchesSent).toBe(1);
    spy.unsubscribe();
  });

  it('raft/transport/nats - counts and drops garbage of every kind, and keeps working', async () => {
    // Publishes random bytes, a wrong envelope, another cluster's batch, a bad frame and an oversized payload on
    // b's subject; each is counted under its reason, and a valid message afterwards still arrives.
    const subject = raftSubject('c1', 'b');
    const rng = createRng(11);
    const frame = codec.encode({ to: 'b', from: 'x', term: 1, seq: 1 });
    raw.publish(
      subject,
      Uint8Array.from({ length: 64 }, () => rng.int(0, 256)),
    );
    raw.publish(subject, encode({ hello: 'world' }));
    raw.publish(subject, encode(['trellis.raft.batch', 1, { cluster: 'other', from: 'x', frames: [frame] }]));
    raw.publish(subject, encode(['trellis.raft.batch', 9, { cluster: 'c1', from: 'x', frames: [] }]));
    raw.publish(
      subject,
      encode([
        'trellis.raft.batch',
        1,
        { cluster: 'c1', from: 'x', frames: [encode(['test.raft.msg', 1, { to: 'b' }])] },
      ]),
    );
    raw.publish(
      subject,
      encode(['trellis.raft.batch', 1, { cluster: 'c1', from: 'x', frames: ['not bytes'] }]),
    );
    await raw.flush();
    await until(() => Object.values(b.stats().dropped).reduce((x, y) => x + y, 0) >= 6, 'six drops');
    const dropped = b.stats().dropped;
    expect(dropped['wrong-cluster']).toBe(1);
    expect(dropped.version).toBe(1);
    expect(dropped.shape).toBeGreaterThanOrEqual(2);
    expect(dropped.malformed + dropped.envelope).toBeGreaterThanOrEqual(2);
    gotB.length = 0;
    a.send([{ to: 'b', from: 'a', term: 2, seq: 99 }]);
    await until(() => gotB.length === 1, 'a message after garbage');
    expect(gotB[0]?.seq).toBe(99);
  });

  it('raft/transport/nats - reports a peer with no subscriber as unreachable', async () => {
    // Nobody subscribes to c's subject: the probe gets "no responders" and the peer is reported.
    a.send([{ to: 'c', from: 'a', term: 1, seq: 1 }]);
    await until(() => unreachableA.includes('c'), 'c reported unreachable');
    expect(unreachableA).not.toContain('b');
  });

  it('raft/transport/nats - delivery resumes after the server restarts', async () => {
    // Kills nats-server, restarts it on the same port; both clients reconnect by themselves and a message
    // sent afterwards arrives.
    await server.kill();
    await server.restart();
    await until(() => !ncA.isClosed() && !ncB.isClosed(), 'clients alive');
    gotB.length = 0;
    const deadline = Date.now() + 10_000;
    while (gotB.length === 0 && Date.now() < deadline) {
      a.send([{ to: 'b', from: 'a', term: 3, seq: 7 }]);
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(gotB.some((m) => m.seq === 7)).toBe(true);
  });
});
