import { describe, expect, it } from 'vitest';
import type { Message } from '../../../raft/core/messages.js';
import { TimeoutError } from '../../../raft/errors.js';
import { type KvResult, KvStateMachine, kvCommandCodec } from '../../../raft/kv.js';
import { RaftNode } from '../../../raft/node.js';
import { MemoryStorage } from '../../../raft/storage/memory.js';
import { LoopbackNetwork } from '../../../raft/transport/loopback.js';
import { createRng } from '../../../src/lib/prng.js';
import { VirtualTimers } from '../../../src/lib/timers.js';

/** One turn of the event loop: loopback deliveries and the driver's promise chains run to quiescence. */
const settle = () => new Promise<void>((r) => setImmediate(r));

/** Three production RaftNodes on virtual time; returns what the run decided. */
async function run(seed: number) {
  const timers = new VirtualTimers();
  const net = new LoopbackNetwork<Message>();
  const ids = ['a', 'b', 'c'];
  const nodes = ids.map(
    (id, i) =>
      new RaftNode<KvResult>({
        id,
        voters: ids,
        storage: new MemoryStorage(),
        transport: net.endpoint(id),
        stateMachine: new KvStateMachine(),
        rng: createRng(seed * 10 + i),
        tickMs: 10,
        proposalTimeoutMs: 1_000,
        timers,
      }),
  );
  const electedAt: number[] = [];
  for (const n of nodes) n.onRoleChange((c) => c.role === 'leader' && electedAt.push(timers.now()));
  await timers.advanceTo(1_000, settle);
  const leader = nodes.find((n) => n.status().role === 'leader');
  if (leader === undefined) throw new Error(`seed ${seed}: no leader after 1,000 virtual ms`);
  const put = leader.propose(kvCommandCodec.encode({ op: 'put', key: 'k', value: 'v' }));
  await timers.advanceTo(1_100, settle);
  const result = await put;
  const status = leader.status();
  await Promise.all(nodes.map((n) => n.close()));
  return { leader: status.id, term: status.term, electedAt, result, armed: timers.armed };
}

describe('raft driver on virtual time', () => {
  it('raft node - elects, commits and times out on an injected clock, and a seed replays exactly', async () => {
    // The production driver with virtual timers: no tick happens until the test advances the clock, an
    // election and a commit finish within virtual time, closing cancels every timer, and two runs of one
    // seed elect the same leader at the same virtual instant (nothing reads the wall clock).
    const first = await run(3);
    expect(first.result).toEqual({ ok: true, previous: null });
    expect(first.armed).toBe(0);
    expect(first.electedAt.length).toBeGreaterThan(0);
    expect(await run(3)).toEqual(first);
  });

  it('raft node - a proposal times out after proposalTimeoutMs of virtual time, not of wall time', async () => {
    // A lone voter of a 3-voter group campaigns and cannot win; made leader-less, its propose is refused at
    // once. A leader whose peers go silent keeps its proposal until exactly the timeout on the virtual clock.
    const timers = new VirtualTimers();
    const net = new LoopbackNetwork<Message>();
    const ids = ['a', 'b', 'c'];
    const nodes = ids.map(
      (id, i) =>
        new RaftNode<KvResult>({
          id,
          voters: ids,
          storage: new MemoryStorage(),
          transport: net.endpoint(id),
          stateMachine: new KvStateMachine(),
          rng: createRng(40 + i),
          tickMs: 10,
          proposalTimeoutMs: 500,
          timers,
        }),
    );
    await timers.advanceTo(1_000, settle);
    const leader = nodes.find((n) => n.status().role === 'leader');
    if (leader === undefined) throw new Error('no leader after 1,000 virtual ms');
    for (const id of ids) if (id !== leader.status().id) net.down.add(id);
    const sentAt = timers.now();
    let failedAt: number | undefined;
    const outcome = leader.propose(kvCommandCodec.encode({ op: 'put', key: 'k', value: 'v' })).then(
      () => undefined,
      (e: unknown) => {
        failedAt = timers.now();
        return e;
      },
    );
    await timers.advanceTo(sentAt + 499, settle);
    expect(failedAt).toBeUndefined();
    await timers.advanceTo(sentAt + 2_000, settle);
    expect(await outcome).toBeInstanceOf(TimeoutError);
    expect(failedAt).toBe(sentAt + 500);
    await Promise.all(nodes.map((n) => n.close()));
  });
});
