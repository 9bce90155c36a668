/**
 * A dead leader found through NATS: `NatsTransport.probe` asks whether a peer is subscribed (the server answers
 * "no responders" at once when nobody is), and `RaftNode` followers that find their leader absent elect a new
 * one without waiting out the election timeout. With a real nats-server and three RaftNodes on file storage,
 * each on its own connection; the election timeout is set to 30-60 s, so a new leader within the test's wait
 * can only come from the probe.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type NatsConnection } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Message } from '../../../raft/core/messages.js';
import { type KvResult, KvStateMachine, kvCommandCodec } from '../../../raft/kv.js';
import { RaftNode } from '../../../raft/node.js';
import { FileStorage } from '../../../raft/storage/file.js';
import { NatsTransport } from '../../../raft/transport/nats.js';
import { raftMessageCodec } from '../../../raft/wire.js';
import { createRng } from '../../../src/lib/prng.js';
import { type RunningServer, startNats } from '../../../src/testing/servers.js';
import { until } from '../../helpers/until.js';

const tickMs = 10;
/** 3,000 ticks of 10 ms: an election by timeout takes 30-60 s, far beyond the waits below. */
const electionTicks = 3_000;
/** How long the test waits for the new leader: generous for a loaded machine, short of any timeout. */
const newLeaderWaitMs = 20_000;

describe('raft/nats - a follower that finds its leader gone elects a new one', () => {
  let server: RunningServer;
  let dir: string;
  const conns: NatsConnection[] = [];

  beforeAll(async () => {
    server = await startNats();
    dir = await mkdtemp(join(tmpdir(), 'trellis-leader-gone-'));
  });
  afterAll(async () => {
    await Promise.all(conns.map((c) => c.close().catch(() => undefined)));
    await server.stop();
    await rm(dir, { recursive: true, force: true });
  });

  async function transport(
    self: string,
    presenceTimeoutMs?: number,
  ): Promise<{ nc: NatsConnection; t: NatsTransport<Message> }> {
    const nc = await connect({ servers: server.url, reconnectTimeWait: 50, maxReconnectAttempts: -1 });
    conns.push(nc);
    const t = new NatsTransport<Message>({
      connection: nc,
      cluster: 'lg',
      self,
      codec: raftMessageCodec,
      destination: (m) => m.to,
      ...(presenceTimeoutMs === undefined ? {} : { presenceTimeoutMs }),
    });
    await nc.flush();
    return { nc, t };
  }

  it('raft/nats - probe says present for a subscribed peer, absent for none, unknown on a closed connection', async () => {
    // Long enough that a loaded machine's late answer still counts as 'present'.
    const a = await transport('pa', 5_000);
    const b = await transport('pb');
    expect(await a.t.probe('pb')).toBe('present');
    expect(await a.t.probe('nobody')).toBe('absent');
    // b's process dies: its connection closes, and once the server has seen it, the subscription is gone.
    // (A probe that reaches the server first goes to the dead subscription and ends 'unknown'.)
    await b.nc.close();
    let after: string[] = [];
    for (let i = 0; i < 100 && after.at(-1) !== 'absent'; i++) after = [...after, await a.t.probe('pb')];
    expect(after.at(-1)).toBe('absent');
    expect(after).not.toContain('present');
    await a.nc.close();
    expect(await a.t.probe('pb')).toBe('unknown');
  });

  it('raft/nats - after the leader connection closes, a survivor leads a later term long before an election timeout', async () => {
    const ids = ['n0', 'n1', 'n2'];
    const nodes = new Map<string, { node: RaftNode<KvResult>; nc: NatsConnection }>();
    for (const [i, id] of ids.entries()) {
      const { nc, t } = await transport(id);
      const node = new RaftNode<KvResult>({
        id,
        voters: ids,
        storage: await FileStorage.open(join(dir, id)),
        transport: t,
        stateMachine: new KvStateMachine(),
        rng: createRng(7 + i),
        tickMs,
        core: { electionTicks },
      });
      nodes.set(id, { node, nc });
    }
    const n0 = nodes.get('n0');
    if (n0 === undefined) throw new Error('no n0');
    n0.node.campaign();
    await until(() => n0.node.status().role === 'leader', 'n0 to lead', newLeaderWaitMs);
    await n0.node.propose(kvCommandCodec.encode({ op: 'put', key: 'k', value: 'v' }));
    const term = n0.node.status().term;
    // The leader "crashes": its connection goes (as a kill -9 closes its socket), then the node stops.
    await n0.nc.close();
    await n0.node.close();
    const survivors = ids.filter((id) => id !== 'n0').map((id) => nodes.get(id)?.node as RaftNode<KvResult>);
    await until(
      () => survivors.some((n) => n.status().role === 'leader' && n.status().term > term),
      'a survivor to lead a later term',
      newLeaderWaitMs,
    );
    const leader = survivors.find((n) => n.status().role === 'leader') as RaftNode<KvResult>;
    // The new leader commits: a write goes through with only two of three.
    await leader.propose(kvCommandCodec.encode({ op: 'put', key: 'k', value: 'w' }));
    expect(survivors.reduce((n, s) => n + s.status().leadersGone, 0)).toBeGreaterThan(0);
    for (const n of survivors) await n.close();
  });
});
