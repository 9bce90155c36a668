import { describe, expect, it } from 'vitest';
import { commandCodec } from '../../scheduler/commands.js';
import type { LiveRequest } from '../../scheduler/core/leader.js';
import { NotLeaderError } from '../../scheduler/errors.js';
import { InProcessLog } from '../../scheduler/in-process-log.js';
import { Batcher } from '../../scheduler/pipeline/batcher.js';
import { defaultPipelineOptions, LeaderPipeline } from '../../scheduler/pipeline/leader.js';
import { PendingQueue } from '../../scheduler/pipeline/pending.js';
import { UnavailableError } from '../../src/lib/errors.js';
import { node, spec } from './fixtures.js';

describe('scheduler pipeline', () => {
  it('scheduler - the batcher closes a batch at its size bound, and the rest at the end of the turn', async () => {
    // Adds 10 items with sizeMax 4: two full batches close at once, the last 2 items close on setImmediate.
    const batches: number[][] = [];
    const b = new Batcher<number>({ sizeMax: 4, windowMs: 0 }, (batch) => batches.push(batch));
    for (let i = 0; i < 10; i++) b.add(i);
    expect(batches).toEqual([
      [0, 1, 2, 3],
      [4, 5, 6, 7],
    ]);
    await new Promise((r) => setImmediate(r));
    expect(batches[2]).toEqual([8, 9]);
  });

  it('scheduler - the pending queue keeps reasons and expires by deadline only', () => {
    // Two requests with deadlines 10 and 20: expiring at 15 takes only the first, and the second keeps
    // its reason until it is woken.
    const q = new PendingQueue<LiveRequest>();
    const req = (id: string, deadlineMs: number): LiveRequest => ({
      requestId: id,
      spec: spec(),
      deadlineMs,
      replans: 0,
      pendProposed: false,
      usageCounted: true,
    });
    q.add(req('a', 10), 'resources: short of cpu');
    q.add(req('b', 20), 'constraint: zone');
    expect(q.expire(15).map((r) => r.requestId)).toEqual(['a']);
    expect(q.get('b')?.reason).toBe('constraint: zone');
    expect(q.wake().map((r) => r.requestId)).toEqual(['b']);
    expect(q.size).toBe(0);
  });

  it('scheduler - the in-process log drops the uncommitted tail on a leader change, and commits everywhere', async () => {
    // Proposes two entries and moves leadership before they commit: both proposers get NotLeaderError and
    // no replica applies them; an entry proposed to the new leader commits on all three replicas.
    const log = new InProcessLog(3);
    const data = commandCodec.encode({ type: 'node.register', atMs: 1, spec: node('n1') });
    const lost = [log.propose(0, data), log.propose(0, data)];
    log.changeLeader(1);
    for (const p of lost) await expect(p).rejects.toBeInstanceOf(NotLeaderError);
    await expect(log.propose(0, data)).rejects.toBeInstanceOf(NotLeaderError);
    const r = await log.propose(1, data);
    expect(r.ok).toBe(true);
    for (let i = 0; i < 3; i++) expect(log.machine(i).state.nodes.has('n1')).toBe(true);
  });

  it('scheduler pipeline - a failed place proposal rejects every request of its batch, and their retries are placed', async () => {
    // The log refuses the first `place` entry with an unknown outcome (as a proposal timeout while NATS
    // restarts). Every create of that batch hears that error once; none stays live, so retries with the same
    // ids are admitted afresh and placed, each once.
    const group = new InProcessLog(1);
    const base = group.replica(0);
    await base.propose(commandCodec.encode({ type: 'node.register', atMs: 0, spec: node('n1', 8000) }));
    let failPlaces = 1;
    const log = {
      ...base,
      propose: (data: Uint8Array) => {
        if (commandCodec.decode(data).type === 'place' && failPlaces-- > 0)
          return Promise.reject(new UnavailableError('the proposal timed out'));
        return base.propose(data);
      },
    };
    const pipeline = new LeaderPipeline(log, {
      ...defaultPipelineOptions,
      now: () => 1,
      every: () => () => {},
    });
    try {
      const ids = ['a', 'b', 'c'];
      const first = await Promise.allSettled(ids.map((id) => pipeline.create(id, spec('t1', 1000))));
      for (const r of first) {
        expect(r.status).toBe('rejected');
        expect(r.status === 'rejected' ? r.reason : undefined).toBeInstanceOf(UnavailableError);
      }
      const retried = await Promise.all(ids.map((id) => pipeline.create(id, spec('t1', 1000))));
      expect(retried.map((sb) => [sb.id, sb.state, sb.nodeId])).toEqual(
        ids.map((id) => [id, 'placed', 'n1']),
      );
      expect(base.machine.state.index.get('n1')?.allocated.cpu).toBe(3000);
    } finally {
      pipeline.stop();
    }
  });
});
