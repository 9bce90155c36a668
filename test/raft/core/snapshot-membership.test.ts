import { describe, expect, it } from 'vitest';
import type { Message, SnapshotChunk } from '../../../raft/core/messages.js';
import { entriesPerMessageMax, parseMessage, snapshotChunkBytesMax } from '../../../raft/core/messages.js';
import { ValidationError } from '../../../src/lib/errors.js';
import { Cluster } from './harness.js';

const enc = new TextEncoder();

function proposeMany(c: Cluster, leader: string, n: number, prefix: string): string[] {
  const sent = Array.from({ length: n }, (_, i) => `${prefix}${i}`);
  for (const cmd of sent) c.propose(leader, cmd);
  return sent;
}

/** Records every message that crosses the network (after the link filter). */
function tap(c: Cluster): Message[] {
  const seen: Message[] = [];
  const link = c.link;
  c.link = (a, b, m) => {
    const ok = link(a, b, m);
    if (ok) seen.push(m);
    return ok;
  };
  return seen;
}

describe('raft/core - snapshots and compaction', () => {
  it('raft/core - a follower behind the compacted log catches up by a chunked snapshot, losing some chunks', () => {
    // r3 is cut off while the others apply 60 commands and compact every 10; when it returns, the leader's
    // log no longer holds what r3 needs, so it sends the snapshot in 64-byte chunks, a third of which are
    // dropped on the way. r3 must end with exactly the leader's state.
    const c = new Cluster(3, 31, { snapshotChunkBytes: 64 }, { snapshotEvery: 10 });
    const leader = c.electLeader();
    const lagging = c.ids.find((id) => id !== leader) as string;
    c.partition(
      [lagging],
      c.ids.filter((id) => id !== lagging),
    );
    const sent = proposeMany(c, leader, 60, 'v');
    expect(c.get(leader).store.firstIndex()).toBeGreaterThan(2);
    let chunkNo = 0;
    const chunks: SnapshotChunk[] = [];
    c.link = (_a, _b, m) => {
      if (m.type !== 'snapshot') return true;
      chunks.push(m);
      return ++chunkNo % 3 !== 0;
    };
    c.tick(60);
    expect(chunks.length).toBeGreaterThan(3);
    for (const ch of chunks) expect(ch.data.length).toBeLessThanOrEqual(64);
    expect(c.get(lagging).applied).toEqual(sent);
    expect(c.get(lagging).store.snapshot().meta.index).toBeGreaterThan(0);
    // And it keeps replicating normally afterwards.
    c.propose(c.electLeader(), 'after');
    c.tick(3);
    expect(c.get(lagging).applied.at(-1)).toBe('after');
  });

  it('raft/core - a replica restarted after the others compacted recovers its state from a snapshot', () => {
    // r-lagging crashes with an empty log; the group applies and compacts; the replica restarts from its own
    // (stale) storage and must converge, through a snapshot, to the same applied sequence.
    const c = new Cluster(3, 32, {}, { snapshotEvery: 5 });
    const leader = c.electLeader();
    const down = c.ids.find((id) => id !== leader) as string;
    const store = c.get(down).store;
    c.partition(
      [down],
      c.ids.filter((id) => id !== down),
    );
    const sent = proposeMany(c, leader, 23, 's');
    c.heal();
    c.start(down, store);
    c.tick(30);
    expect(c.get(down).applied).toEqual(sent);
    expect(c.get(down).store.snapshot().meta.index).toBeGreaterThanOrEqual(5);
  });

  it('raft/core - a large snapshot travels in chunks of at most 512 KiB', () => {
    // Three 400 KB commands make a snapshot of about 1.2 MB: it must arrive in at least 3 chunks, none over
    // the NATS-sized bound.
    const c = new Cluster(3, 33, {}, { snapshotEvery: 4 });
    const leader = c.electLeader();
    const lagging = c.ids.find((id) => id !== leader) as string;
    c.partition(
      [lagging],
      c.ids.filter((id) => id !== lagging),
    );
    const big = ['a', 'b', 'c'].map((ch) => ch.repeat(400_000));
    for (const cmd of big) c.propose(leader, cmd);
    c.heal();
    const seen = tap(c);
    c.tick(20);
    const chunks = seen.filter((m): m is SnapshotChunk => m.type === 'snapshot' && m.to === lagging);
    expect(chunks.length).toBeGreaterThanOrEqual(3);
    for (const ch of chunks) expect(ch.data.length).toBeLessThanOrEqual(snapshotChunkBytesMax);
    expect(c.get(lagging).applied).toEqual(big);
  });

  it('raft/core - snapshot chunks from the network are validated', () => {
    // Oversized data, a chunk running past the total, and a "done" chunk that does not end the snapshot are
    // refused with ValidationError; a well-formed chunk passes.
    const base = {
      type: 'snapshot',
      from: 'a',
      to: 'b',
      term: 1,
      index: 5,
      snapTerm: 1,
      conf: { voters: ['a', 'b'], learners: [], votersOutgoing: [] },
      offset: 0,
      total: 10,
      data: new Uint8Array(10),
      done: true,
    };
    expect(parseMessage(base).type).toBe('snapshot');
    const bad = [
      { ...base, data: new Uint8Array(snapshotChunkBytesMax + 1), total: snapshotChunkBytesMax + 1 },
      { ...base, offset: 5 },
      { ...base, total: 20 },
      { ...base, conf: { voters: 'a' } },
      { ...base, data: 'xyz' },
    ];
    for (const m of bad) expect(() => parseMessage(m)).toThrow(ValidationError);
  });
});

describe('raft/core - membership change', () => {
  it('raft/core - a learner catches up without voting; promoted, it counts toward the quorum', () => {
    // r4 joins as a learner and receives the log, but a quorum of 3 voters is still 2: with r4 and one voter
    // cut off, the remaining two commit. After promotion the quorum of 4 is 3.
    const c = new Cluster(3, 41);
    const leader = c.electLeader();
    c.propose(leader, 'before');
    c.add('r4', c.ids, []);
    expect(c.get(leader).node.proposeConfChange({ type: 'addLearner', peer: 'r4' }).ok).toBe(true);
    c.tick(5);
    expect(c.get('r4').applied).toEqual(['before']);
    expect(c.get(leader).node.confState().learners).toEqual(['r4']);
    const other = c.ids.find((id) => id !== leader) as string;
    const third = c.ids.find((id) => id !== leader && id !== other) as string;
    // The learner does not count: leader + `other` commit with r4 and `third` unreachable.
    c.partition([leader, other], [third, 'r4']);
    c.propose(leader, 'two-voters');
    c.tick(1);
    expect(c.get(other).applied.at(-1)).toBe('two-voters');
    // A learner never campaigns, however long it hears nothing.
    c.tick(100);
    expect(c.get('r4').node.role).toBe('follower');
    expect(c.get('r4').node.term).toBeLessThanOrEqual(c.get(leader).node.term);
    c.heal();
    c.tick(5);
    const l = c.electLeader();
    expect(c.get(l).node.proposeConfChange({ type: 'addVoter', peer: 'r4' }).ok).toBe(true);
    c.tick(5);
    for (const id of [...c.ids, 'r4'])
      expect(c.get(id).node.confState().voters).toEqual(['r1', 'r2', 'r3', 'r4']);
    // Now a quorum is 3 of 4: the leader and one other cannot commit alone.
    const peer = c.ids.find((id) => id !== l) as string;
    c.partition([l, peer], c.ids.filter((id) => id !== l && id !== peer).concat('r4'));
    const before = c.get(l).node.log.committed;
    c.propose(l, 'needs-three');
    expect(c.get(l).node.log.committed).toBe(before);
  });

  it('raft/core - removing the leader hands leadership over and the removed replica stays quiet', () => {
    // The leader proposes its own removal; when it applies it, it sends TimeoutNow to an up-to-date voter and
    // steps down. The other two elect a leader without waiting for a timeout and go on committing; the
    // removed replica never campaigns again.
    const c = new Cluster(3, 42);
    const leader = c.electLeader();
    c.propose(leader, 'x');
    expect(c.get(leader).node.proposeConfChange({ type: 'remove', peer: leader }).ok).toBe(true);
    c.deliver();
    c.tick(1);
    const next = c.leader();
    expect(next).toBeDefined();
    expect(next).not.toBe(leader);
    const rest = c.ids.filter((id) => id !== leader);
    for (const id of rest) expect(c.get(id).node.confState().voters).toEqual(rest);
    c.propose(next as string, 'y');
    c.tick(1);
    for (const id of rest) expect(c.get(id).applied).toEqual(['x', 'y']);
    const term = c.get(leader).node.term;
    c.partition([leader], rest);
    c.tick(100);
    expect(c.get(leader).node.role).toBe('follower');
    expect(c.get(leader).node.term).toBe(term);
  });

  it('raft/core - one membership change at a time, and invalid ones are refused with a reason', () => {
    // A second change before the first applies is refused; so are adding an existing voter, removing a
    // stranger, and removing the last voter of a one-replica group.
    const c = new Cluster(3, 43);
    const leader = c.get(c.electLeader()).node;
    expect(leader.proposeConfChange({ type: 'addVoter', peer: 'r1' })).toMatchObject({
      ok: false,
      reason: 'invalid-conf-change',
    });
    expect(leader.proposeConfChange({ type: 'remove', peer: 'zz' })).toMatchObject({
      ok: false,
      reason: 'invalid-conf-change',
      detail: 'zz is not a member',
    });
    c.partition(['r1'], ['r2'], ['r3']); // Nothing commits: the first change stays pending.
    expect(leader.proposeConfChange({ type: 'addLearner', peer: 'r9' }).ok).toBe(true);
    expect(leader.proposeConfChange({ type: 'addLearner', peer: 'r8' })).toMatchObject({
      ok: false,
      reason: 'conf-change-pending',
    });
    const solo = new Cluster(1, 44);
    const only = solo.get(solo.electLeader()).node;
    expect(only.proposeConfChange({ type: 'remove', peer: 'r1' })).toMatchObject({
      ok: false,
      detail: 'cannot remove the last voter',
    });
  });

  it('raft/core - a removed replica cannot disrupt the group with elections', () => {
    // A follower is removed while cut off, so it never learns; when it returns and campaigns, pre-vote and the
    // others' lease on their leader keep the group's term and leader where they are.
    const c = new Cluster(3, 45);
    const leader = c.electLeader();
    const removed = c.ids.find((id) => id !== leader) as string;
    const rest = c.ids.filter((id) => id !== removed);
    c.partition([removed], rest);
    expect(c.get(leader).node.proposeConfChange({ type: 'remove', peer: removed }).ok).toBe(true);
    c.tick(2);
    const term = c.get(leader).node.term;
    c.tick(50);
    c.heal();
    c.tick(50);
    expect(c.get(removed).node.role).not.toBe('leader');
    expect(c.get(leader).node.role).toBe('leader');
    expect(c.get(leader).node.term).toBe(term);
  });
});

describe('raft/core - leadership transfer', () => {
  it('raft/core - a transfer hands leadership over within a few ticks, refusing proposals meanwhile', () => {
    // The leader transfers to a follower: while the transfer runs a proposal is refused with "transferring";
    // the target wins in its next term, well before any election timeout (10–20 ticks).
    const c = new Cluster(3, 51);
    const leader = c.electLeader();
    c.propose(leader, 'a');
    const target = c.ids.find((id) => id !== leader) as string;
    // Hold the TimeoutNow so the refusal can be observed.
    c.link = (_a, _b, m) => m.type !== 'timeoutNow';
    expect(c.get(leader).node.transferLeadership(target)).toBe(true);
    c.deliver();
    expect(c.get(leader).node.propose([enc.encode('b')])).toMatchObject({
      ok: false,
      reason: 'transferring',
    });
    c.heal();
    c.get(leader).node.transferLeadership(target); // Still the same transfer: idempotent.
    const term = c.get(leader).node.term;
    // The first TimeoutNow was dropped: it goes again when the up-to-date target answers a heartbeat.
    c.tick(3);
    expect(c.leader()).toBe(target);
    expect(c.get(target).node.term).toBe(term + 1);
    c.propose(target, 'b');
    c.tick(1);
    for (const id of c.ids) expect(c.get(id).applied).toEqual(['a', 'b']);
  });

  it('raft/core - a transfer to a lagging follower waits for it to catch up; one to a dead peer is abandoned', () => {
    // The target missed entries: it gets them first, then TimeoutNow. A transfer to an unreachable peer ends
    // after an election timeout and the old leader takes proposals again.
    const c = new Cluster(3, 52, { checkQuorum: false });
    const leader = c.electLeader();
    const [x, y] = c.ids.filter((id) => id !== leader) as [string, string];
    c.partition([leader, y], [x]);
    c.propose(leader, 'missed');
    c.heal();
    expect(c.get(leader).node.transferLeadership(x)).toBe(true);
    c.tick(3);
    expect(c.leader()).toBe(x);
    expect(c.get(x).applied).toEqual(['missed']);
    const l2 = x;
    c.partition([l2, leader], [y]);
    expect(c.get(l2).node.transferLeadership(y)).toBe(true);
    c.tick(25);
    expect(c.get(l2).node.role).toBe('leader');
    expect(c.get(l2).node.transferee).toBe('');
    expect(c.get(l2).node.propose([enc.encode('again')]).ok).toBe(true);
  });
});

describe('raft/core - message bounds', () => {
  it('raft/core - an append never carries more entries than a receiver accepts', () => {
    // 10,000 one-byte commands in one proposal: the leader must split them into appends of at most
    // entriesPerMessageMax entries, each of which passes the receiver's validation, and all are applied.
    const c = new Cluster(3, 61);
    const leader = c.electLeader();
    const seen = tap(c);
    const cmds = Array.from({ length: 10_000 }, (_, i) => enc.encode(String(i % 10)));
    expect(c.get(leader).node.propose(cmds).ok).toBe(true);
    c.tick(10);
    const appends = seen.filter((m) => m.type === 'append');
    expect(Math.max(...appends.map((m) => (m.type === 'append' ? m.entries.length : 0)))).toBe(
      entriesPerMessageMax,
    );
    for (const m of appends) expect(() => parseMessage(m)).not.toThrow();
    for (const id of c.ids) expect(c.get(id).applied.length).toBe(10_000);
  });
});
