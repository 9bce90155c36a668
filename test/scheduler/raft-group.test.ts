import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { commandCodec } from '../../scheduler/commands.js';
import { NotLeaderError } from '../../scheduler/errors.js';
import { RaftGroupLog } from '../../scheduler/raft-group.js';
import { createScheduler } from '../../scheduler/scheduler.js';
import { stateDigest } from '../../scheduler/state-machine.js';
import type { Sandbox } from '../../scheduler/types.js';
import { startTestCluster } from '../../src/testing/cluster.js';
import { until } from '../helpers/until.js';
import { node, spec } from './fixtures.js';

const digestsEqual = (log: RaftGroupLog, replicas: number[]): boolean =>
  new Set(replicas.map((r) => stateDigest(log.machine(r).state))).size === 1;

describe('scheduler on a Raft group', () => {
  it('scheduler raft - creates commit through Raft and every replica holds the same state', async () => {
    // 300 creates on 10 nodes through three RaftNodes on memory storage; all resolve placed, nothing is
    // over capacity, and once the followers catch up the three state machines are identical.
    const log = RaftGroupLog.inMemory({ replicas: 3 });
    const s = createScheduler({ log });
    for (let i = 0; i < 10; i++) await s.registerNode(node(`n${i}`));
    const created = await Promise.all(
      Array.from({ length: 300 }, (_, i) => s.create(spec('t1', 100, 100), { requestId: `r${i}` })),
    );
    expect(new Set(created.map((c) => c.id)).size).toBe(300);
    expect(created.every((c) => c.state === 'placed')).toBe(true);
    for (const v of await s.nodes()) expect(v.allocated.cpu).toBeLessThanOrEqual(v.spec.capacity.cpu);
    await until(() => digestsEqual(log, [0, 1, 2]), 'replicas converge');
    await s.close();
    await log.close();
  });

  it('scheduler raft - the leader stops mid-burst: a new one is elected, nothing lost, nothing placed twice', async () => {
    // Stops the leader's replica the moment the 50th of 400 creates is acknowledged; Raft elects another and
    // the scheduler retries the unanswered ones there with the same request ids. Every create resolves, the
    // acknowledged ones kept their sandbox and node, the committed sandboxes are exactly the 400 request ids
    // with each node's allocation their sum, and the restarted replica catches up.
    const log = RaftGroupLog.inMemory({ replicas: 3 });
    const s = createScheduler({ log, pipeline: { batchSizeMax: 16 } });
    for (let i = 0; i < 20; i++) await s.registerNode(node(`n${i}`));
    const old = log.leader() as number;
    const acked = new Map<string, Sandbox>();
    let ackedAtStop: Map<string, Sandbox> | undefined;
    let stopped: Promise<void> | undefined;
    const pending = Array.from({ length: 400 }, (_, i) =>
      s.create(spec('t1', 100, 100), { requestId: `r${i}` }).then((sb) => {
        acked.set(`r${i}`, sb);
        if (acked.size === 50) {
          ackedAtStop = new Map(acked);
          stopped = log.stop(old);
        }
        return sb;
      }),
    );
    const created = await Promise.all(pending);
    await stopped;
    expect(ackedAtStop?.size).toBe(50);
    expect(new Set(created.map((c) => c.id)).size).toBe(400);
    const leader = log.leader() as number;
    expect(leader).not.toBe(old);
    const state = log.machine(leader).state;
    for (const [requestId, sb] of ackedAtStop ?? []) {
      const now = state.sandbox(sb.id);
      expect(now?.requestId).toBe(requestId);
      expect(now?.nodeId).toBe(sb.nodeId);
    }
    expect(state.sandboxes.size).toBe(400);
    expect(new Set([...state.sandboxes.values()].map((sb) => sb.requestId)).size).toBe(400);
    for (const id of state.nodes.keys()) {
      const onNode = [...state.sandboxesOfNode(id)].length;
      expect(state.index.get(id)?.allocated.cpu).toBe(onNode * 100);
    }
    const live = [0, 1, 2].filter((r) => r !== old);
    await until(() => digestsEqual(log, live), 'live replicas converge');
    // The stopped replica comes back from its storage and catches up.
    await log.restart(old);
    await until(() => digestsEqual(log, [0, 1, 2]), 'the restarted replica converges');
    await s.close();
    await log.close();
  });

  it('scheduler raft - refusals become NotLeaderError and leader changes reach the listeners', async () => {
    // The ReplicatedLog contract on Raft: a follower refuses proposals and reads with the scheduler's
    // NotLeaderError, so does a stopped replica; stopping the leader tells listeners "no leader", then
    // the replica Raft elects, which leader() reports and which accepts proposals.
    const log = RaftGroupLog.inMemory({ replicas: 3 });
    const seen: (number | undefined)[] = [];
    log.onLeaderChange((l) => seen.push(l));
    await until(() => log.leader() !== undefined, 'a first leader');
    const old = log.leader() as number;
    const follower = (old + 1) % 3;
    const register = (id: string) => commandCodec.encode({ type: 'node.register', atMs: 1, spec: node(id) });
    await expect(log.propose(follower, register('a'))).rejects.toBeInstanceOf(NotLeaderError);
    await expect(log.readIndex(follower)).rejects.toBeInstanceOf(NotLeaderError);
    expect((await log.propose(old, register('b'))).ok).toBe(true);
    await log.stop(old);
    expect(seen.at(-1)).toBeUndefined();
    await expect(log.propose(old, register('c'))).rejects.toBeInstanceOf(NotLeaderError);
    await until(() => log.leader() !== undefined, 'a new leader');
    const leader = log.leader() as number;
    expect(leader).not.toBe(old);
    expect(seen.at(-1)).toBe(leader);
    expect(log.node(leader).status().role).toBe('leader');
    expect((await log.propose(leader, register('d'))).ok).toBe(true);
    await log.readIndex(leader);
    expect([...log.machine(leader).state.nodes.keys()].sort()).toEqual(['b', 'd']);
    await log.close();
  });

  it('scheduler raft - watch() keeps following its replica across a restart, without repeating events', async () => {
    // The scheduler (and its watch) sit on replica 0, on file storage. Five creates, then replica 0 is stopped
    // and restarted from its storage (it replays its whole log into the same state machine), then five more:
    // the watch yields exactly one `placed` event per sandbox, in log order.
    const dir = await mkdtemp(join(tmpdir(), 'trellis-watch-'));
    const log = await RaftGroupLog.open({ replicas: 3, dir, fsync: false });
    const s = createScheduler({ log });
    await s.registerNode(node('n1'));
    const watch = s.watch();
    for (let i = 0; i < 5; i++) await s.create(spec('t1', 100, 100), { requestId: `a${i}` });
    await log.stop(0);
    await log.restart(0);
    for (let i = 0; i < 5; i++) await s.create(spec('t1', 100, 100), { requestId: `b${i}` });
    const placed: string[] = [];
    const indexes: number[] = [];
    while (placed.length < 10) {
      const { value } = await watch.next();
      if (value.kind === 'sandbox' && value.to === 'placed') placed.push(value.sandboxId);
      indexes.push(value.index);
    }
    expect(placed).toEqual([
      ...Array.from({ length: 5 }, (_, i) => `a${i}`),
      ...Array.from({ length: 5 }, (_, i) => `b${i}`),
    ]);
    expect(indexes).toEqual([...indexes].sort((a, b) => a - b));
    await watch.return?.();
    await s.close();
    await log.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('testing cluster - on Raft, changeLeader moves leadership by transfer mid-burst and the replicas converge', async () => {
    // startTestCluster's default log is a Raft group: a leadership transfer started when 100 of 300
    // creates are acknowledged completes, every create resolves to its own sandbox, and all three
    // replicas end with the same state.
    const c = await startTestCluster({ nodes: 20, seed: 5 });
    const first = c.log.leader();
    let target: number | undefined;
    let done = 0;
    const created = await Promise.all(
      Array.from({ length: 300 }, (_, i) =>
        c.scheduler.create(spec('t1', 100, 100), { requestId: `t${i}` }).then((sb) => {
          if (++done === 100) target = c.changeLeader();
          return sb;
        }),
      ),
    );
    expect(target).not.toBe(first);
    await until(() => c.log.leader() === target, 'leadership on the transfer target');
    expect(new Set(created.map((sb) => sb.id)).size).toBe(300);
    expect((await c.scheduler.list()).length).toBe(300);
    await c.converged();
    expect(c.replicasEqual()).toBe(true);
    await c.close();
  });

  it('scheduler raft - on file storage the committed state survives closing and reopening the group', async () => {
    // Writes through a group on fsynced file storage, closes everything, reopens the same directories: the
    // replicas replay their logs and the sandboxes are all there, readable linearizably.
    const dir = await mkdtemp(join(tmpdir(), 'trellis-raftgroup-'));
    try {
      const log = await RaftGroupLog.open({ dir });
      const s = createScheduler({ log });
      await s.registerNode(node('n1'));
      const made = await Promise.all(
        Array.from({ length: 20 }, (_, i) => s.create(spec('t1', 100, 100), { requestId: `f${i}` })),
      );
      await s.close();
      await log.close();
      const again = await RaftGroupLog.open({ dir });
      const s2 = createScheduler({ log: again });
      const listed = await s2.list();
      expect(listed.map((sb) => sb.id).sort()).toEqual(made.map((sb) => sb.id).sort());
      await s2.close();
      await again.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
