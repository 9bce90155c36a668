import { encode } from '@msgpack/msgpack';
import { describe, expect, it } from 'vitest';
import type { Message } from '../../raft/core/messages.js';
import { MemoryStorage } from '../../raft/storage/memory.js';
import { LoopbackNetwork } from '../../raft/transport/loopback.js';
import { commandCodec } from '../../scheduler/commands.js';
import { NotLeaderError } from '../../scheduler/errors.js';
import { forwardReplyCodec, forwardRequestCodec } from '../../scheduler/forward.js';
import { defaultPipelineOptions, everyInterval } from '../../scheduler/pipeline/leader.js';
import { RaftGroupLog } from '../../scheduler/raft-group.js';
import { SchedulerReplica } from '../../scheduler/replica.js';
import { createScheduler } from '../../scheduler/scheduler.js';
import { stateDigest } from '../../scheduler/state-machine.js';
import { Deadline } from '../../src/lib/deadline.js';
import { DeadlineExceededError } from '../../src/lib/errors.js';
import { createRng } from '../../src/lib/prng.js';
import { until } from '../helpers/until.js';
import { node, spec } from './fixtures.js';

describe('scheduler replica', () => {
  it('scheduler replica - a caller attached to a follower creates, terminates and reads through the leader', async () => {
    // A 3-replica Raft group led by r0; the scheduler is attached to r2, a follower. Its creates and
    // terminates are forwarded to r0's pipeline (r2 never plans anything), and a read made right after an
    // acknowledged write sees it: the follower's ReadIndex goes through the leader and r2 applies up to it
    // before reading its own state.
    const log = RaftGroupLog.inMemory({ replicas: 3 });
    await until(() => log.leader() === 0, 'r0 leads');
    const s = createScheduler({ log, replica: 2 });
    try {
      await s.registerNode(node('n1', 8000));
      const created = await Promise.all(
        Array.from({ length: 20 }, (_, i) => s.create(spec('t1', 100, 100), { requestId: `c${i}` })),
      );
      expect(created.every((c) => c.state === 'placed')).toBe(true);
      const first = created[0];
      if (first === undefined) throw new Error('20 creates resolved');
      await s.terminate(first.id, { requestId: 'term-0' });
      expect(await s.get(first.id)).toBeUndefined();
      const second = created[1];
      expect((await s.get(second?.id ?? ''))?.nodeId).toBe('n1');
      expect((await s.list({ tenant: 't1' })).length).toBe(19);
      expect(s.replicas[2]?.leading).toBe(false);
      expect(s.replicas[2]?.stats().batches).toBe(0);
      expect(s.replicas[0]?.stats().placed).toBe(20);
    } finally {
      await s.close();
      await log.close();
    }
  });

  it('scheduler replica - a forwarded request past its deadline is dropped unapplied', async () => {
    // A request that reaches the leader after its deadline (its sender stalled, as a paused process would)
    // is answered DeadlineExceededError and proposes nothing: the state digest is unchanged. A follower
    // whose caller's deadline has passed does not forward at all.
    let nowMs = 1_000;
    const log = RaftGroupLog.inMemory({ replicas: 3 });
    await until(() => log.leader() === 0, 'r0 leads');
    const s = createScheduler({ log, now: () => nowMs });
    try {
      await s.registerNode(node('n1'));
      await until(() => log.machine(1).state.applied === log.machine(0).state.applied, 'r1 caught up');
      const before = stateDigest(log.machine(0).state);
      const data = commandCodec.encode({
        type: 'node.register',
        atMs: nowMs,
        requestId: 'late',
        spec: node('n2'),
      });
      // Sent with 50 ms left at 1,000; the leader's clock reads 1,060 when it arrives.
      const late = forwardRequestCodec.encode({
        op: 'command',
        deadline: { atMs: nowMs + 50, budgetMs: 50 },
        data,
      });
      nowMs += 60;
      const reply = forwardReplyCodec.decode(await (s.replicas[0] as SchedulerReplica).handle(late));
      expect(reply.ok ? '' : reply.error.code).toBe(new DeadlineExceededError('').code);
      await expect(
        (s.replicas[1] as SchedulerReplica).command(
          data,
          Deadline.after(0, () => nowMs),
        ),
      ).rejects.toBeInstanceOf(DeadlineExceededError);
      nowMs += 10;
      await s.registerNode(node('n3'));
      expect(log.machine(0).state.nodes.has('n2')).toBe(false);
      expect(stateDigest(log.machine(0).state)).not.toBe(before);
    } finally {
      await s.close();
      await log.close();
    }
  });

  it('scheduler replica - garbage on the forwarding seam gets a typed error reply and changes nothing', async () => {
    // Random bytes, a wrong envelope kind, an unknown version, a wrong shape and a follower asked to serve
    // a create (it never forwards again) each get an error reply with a code; nothing is applied.
    const log = RaftGroupLog.inMemory({ replicas: 3 });
    await until(() => log.leader() === 0, 'r0 leads');
    const s = createScheduler({ log });
    try {
      await s.registerNode(node('n1'));
      const before = stateDigest(log.machine(0).state);
      const rng = createRng(7);
      const leader = s.replicas[0] as SchedulerReplica;
      const bad: Uint8Array[] = [
        Uint8Array.from({ length: 64 }, () => rng.int(0, 255)),
        encode(['trellis.other', 1, {}]),
        encode(['trellis.scheduler.forward', 99, {}]),
        encode(['trellis.scheduler.forward', 1, { op: 'create', deadlineMs: -1 }]),
        encode(['trellis.scheduler.forward', 1, { op: 'drop-tables', deadlineMs: 0 }]),
      ];
      for (const bytes of bad) {
        const reply = forwardReplyCodec.decode(await leader.handle(bytes));
        expect(reply.ok ? '' : reply.error.code).toBe('CODEC');
      }
      const create = forwardRequestCodec.encode({
        op: 'create',
        deadline: { atMs: Date.now() + 10_000, budgetMs: 10_000 },
        requestId: 'x',
        spec: spec(),
      });
      const fromFollower = forwardReplyCodec.decode(await (s.replicas[1] as SchedulerReplica).handle(create));
      expect(fromFollower.ok ? '' : fromFollower.error.code).toBe(new NotLeaderError('').code);
      expect(stateDigest(log.machine(0).state)).toBe(before);
    } finally {
      await s.close();
      await log.close();
    }
  });

  it('scheduler replica - one replica is constructible from id, voters, storage and transport alone', async () => {
    // SchedulerReplica.onRaft is what a server process runs: a single-voter group here, on the loopback
    // transport and memory storage. It elects itself, leads, and serves a create and a read barrier.
    const net = new LoopbackNetwork<Message>();
    const {
      replica,
      node: raft,
      close,
    } = SchedulerReplica.onRaft({
      id: 'solo',
      voters: ['solo'],
      storage: new MemoryStorage(),
      transport: net.endpoint('solo'),
      tickMs: 5,
    });
    try {
      raft.campaign();
      await until(() => replica.leading, 'solo leads');
      const reg = commandCodec.encode({ type: 'node.register', atMs: 1, requestId: 'reg', spec: node('n1') });
      expect((await replica.command(reg, Deadline.after(10_000))).ok).toBe(true);
      const sb = await replica.create('req-1', spec(), Deadline.after(10_000));
      expect(sb.nodeId).toBe('n1');
      await replica.readBarrier(Deadline.after(10_000));
      expect(replica.machine.state.sandbox(sb.id)?.state).toBe('placed');
    } finally {
      await close();
    }
  });
});

describe('scheduler replica reads', () => {
  it('scheduler replica - concurrent reads share ReadIndex rounds, and a read never joins a round that started before it', async () => {
    // The leader's log with its readIndex gated: each round waits until the test lets it go. Reads arriving
    // while a round is in flight wait for the next round (its leadership check comes after them), and all of
    // them share that one round: 1 + 1 rounds for 1 + 50 reads, never 51.
    const group = RaftGroupLog.inMemory({ replicas: 3 });
    await until(() => group.leader() === 0, 'r0 leads');
    const inner = group.replica(0);
    const gates: (() => void)[] = [];
    const log = {
      id: inner.id,
      machine: inner.machine,
      leaderId: () => inner.leaderId(),
      leaderTerm: () => inner.leaderTerm(),
      propose: (data: Uint8Array) => inner.propose(data),
      onLeaderChange: (l: () => void) => inner.onLeaderChange(l),
      readIndex: async () => {
        await new Promise<void>((r) => gates.push(r));
        await inner.readIndex();
      },
    };
    const replica = new SchedulerReplica(log, {
      pipeline: { ...defaultPipelineOptions, now: Date.now, every: everyInterval },
    });
    try {
      const deadline = Deadline.after(10_000, Date.now);
      let firstDone = false;
      const first = replica.readBarrier(deadline).then(() => {
        firstDone = true;
      });
      expect(gates.length).toBe(1);
      const later = Array.from({ length: 50 }, () => replica.readBarrier(deadline));
      await new Promise((r) => setImmediate(r));
      // The 50 did not start a round of their own while the first is in flight, nor join it.
      expect(gates.length).toBe(1);
      gates[0]?.();
      await first;
      expect(firstDone).toBe(true);
      await until(() => gates.length === 2, 'the next round starts once the first settles');
      let laterDone = 0;
      for (const p of later) void p.then(() => laterDone++);
      await new Promise((r) => setImmediate(r));
      expect(laterDone).toBe(0);
      gates[1]?.();
      await Promise.all(later);
      expect(laterDone).toBe(50);
      expect(gates.length).toBe(2);
      // Nothing in flight: the next read starts its own round at once.
      const alone = replica.readBarrier(deadline);
      expect(gates.length).toBe(3);
      gates[2]?.();
      await alone;
    } finally {
      replica.stop();
      await group.close();
    }
  });
});
