import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { RaftGroupLog } from '../../scheduler/raft-group.js';
import { createScheduler } from '../../scheduler/scheduler.js';
import { stateDigest } from '../../scheduler/state-machine.js';
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
    s.close();
    await log.close();
  });

  it('scheduler raft - the leader stops mid-burst: a new one is elected, nothing lost, nothing placed twice', async () => {
    // Starts 400 creates, stops the leader's replica while they are in flight; Raft elects another and
    // the scheduler retries the unanswered ones there with the same request ids. Every create resolves,
    // the committed sandboxes are exactly the 400 ids, and the two live replicas agree.
    const log = RaftGroupLog.inMemory({ replicas: 3 });
    const s = createScheduler({ log, pipeline: { batchSizeMax: 16 } });
    for (let i = 0; i < 20; i++) await s.registerNode(node(`n${i}`));
    const pending = Array.from({ length: 400 }, (_, i) =>
      s.create(spec('t1', 100, 100), { requestId: `r${i}` }),
    );
    await new Promise((r) => setTimeout(r, 5));
    const old = log.leader() as number;
    await log.stop(old);
    const created = await Promise.all(pending);
    expect(new Set(created.map((c) => c.id)).size).toBe(400);
    const leader = log.leader() as number;
    expect(leader).not.toBe(old);
    const state = log.machine(leader).state;
    expect(state.sandboxes.size).toBe(400);
    expect(new Set([...state.sandboxes.values()].map((sb) => sb.requestId)).size).toBe(400);
    const live = [0, 1, 2].filter((r) => r !== old);
    await until(() => digestsEqual(log, live), 'live replicas converge');
    // The stopped replica comes back from its storage and catches up.
    await log.restart(old);
    await until(() => digestsEqual(log, [0, 1, 2]), 'the restarted replica converges');
    s.close();
    await log.close();
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
      s.close();
      await log.close();
      const again = await RaftGroupLog.open({ dir });
      const s2 = createScheduler({ log: again });
      const listed = await s2.list();
      expect(listed.map((sb) => sb.id).sort()).toEqual(made.map((sb) => sb.id).sort());
      s2.close();
      await again.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
