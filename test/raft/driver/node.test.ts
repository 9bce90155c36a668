import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { Message } from '../../../raft/core/messages.js';
import { MembershipChangeError, NotLeaderError } from '../../../raft/errors.js';
import { type KvResult, KvStateMachine, kvCommandCodec } from '../../../raft/kv.js';
import { RaftNode } from '../../../raft/node.js';
import { FileStorage } from '../../../raft/storage/file.js';
import { LoopbackNetwork } from '../../../raft/transport/loopback.js';
import { createRng } from '../../../src/lib/prng.js';
import { until } from '../../helpers/until.js';

const dirs: string[] = [];
afterEach(async () => {
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

async function startGroup(
  ids: readonly string[],
  net: LoopbackNetwork<Message>,
  base?: string,
  extra: { snapshotEntries?: number; voters?: readonly string[] } = {},
) {
  const root = base ?? (await mkdtemp(join(tmpdir(), 'trellis-raftnode-')));
  if (base === undefined) dirs.push(root);
  const nodes = new Map<string, { node: RaftNode<KvResult>; kv: KvStateMachine }>();
  for (const [i, id] of ids.entries()) {
    const kv = new KvStateMachine();
    const storage = await FileStorage.open(join(root, id));
    const node = new RaftNode<KvResult>({
      id,
      voters: extra.voters ?? ids,
      storage,
      transport: net.endpoint(id),
      ...(extra.snapshotEntries === undefined ? {} : { snapshotEntries: extra.snapshotEntries }),
      stateMachine: kv,
      rng: createRng(100 + i),
      tickMs: 5,
      proposalTimeoutMs: 5_000,
    });
    nodes.set(id, { node, kv });
  }
  return { root, nodes };
}

const put = (key: string, value: string) => kvCommandCodec.encode({ op: 'put', key, value });

async function leaderOf(
  nodes: Map<string, { node: RaftNode<KvResult> }>,
  except = new Set<string>(),
): Promise<string> {
  let leader = '';
  await until(() => {
    leader = [...nodes].find(([id, n]) => !except.has(id) && n.node.status().role === 'leader')?.[0] ?? '';
    return leader !== '';
  }, 'a leader');
  return leader;
}

describe('raft/node - three replicas on real file storage', () => {
  it('raft/node - proposals resolve with their own results, every replica applies the same, a restart replays', async () => {
    // Elects a leader, proposes 100 puts at once, checks each result and that all KV stores agree; then closes
    // everything and reopens from the same directories: the committed state comes back from the WAL.
    const ids = ['a', 'b', 'c'];
    const net = new LoopbackNetwork<Message>();
    const g = await startGroup(ids, net);
    const leader = await leaderOf(g.nodes);
    const results = await Promise.all(
      Array.from({ length: 100 }, (_, i) => g.nodes.get(leader)?.node.propose(put(`k${i}`, `v${i}`))),
    );
    expect(results.every((r) => r?.ok === true && r.previous === null)).toBe(true);
    const follower = ids.find((id) => id !== leader) ?? '';
    await expect(g.nodes.get(follower)?.node.propose(put('x', 'y'))).rejects.toBeInstanceOf(NotLeaderError);
    // A read barrier on the leader: afterwards its state machine holds every acknowledged write.
    await g.nodes.get(leader)?.node.read();
    expect(g.nodes.get(leader)?.kv.size).toBe(100);
    await expect(g.nodes.get(follower)?.node.read()).rejects.toBeInstanceOf(NotLeaderError);
    await until(() => [...g.nodes.values()].every((n) => n.kv.size === 100), 'all replicas applied 100 puts');
    for (const n of g.nodes.values()) expect(n.kv.get('k42')).toBe('v42');
    await Promise.all([...g.nodes.values()].map((n) => n.node.close()));

    const again = await startGroup(ids, new LoopbackNetwork<Message>(), g.root);
    await leaderOf(again.nodes);
    await until(() => [...again.nodes.values()].every((n) => n.kv.size === 100), 'replayed after restart');
    await Promise.all([...again.nodes.values()].map((n) => n.node.close()));
  });

  it('raft/node - the leader fails: a new leader commits and no acknowledged write is lost', async () => {
    // Writes 20 keys, takes the leader off the network, waits for a new leader, writes 20 more through it.
    const ids = ['a', 'b', 'c'];
    const net = new LoopbackNetwork<Message>();
    const g = await startGroup(ids, net);
    const first = await leaderOf(g.nodes);
    for (let i = 0; i < 20; i++) await g.nodes.get(first)?.node.propose(put(`k${i}`, 'before'));
    net.down.add(first);
    const second = await leaderOf(g.nodes, new Set([first]));
    expect(second).not.toBe(first);
    for (let i = 20; i < 40; i++) await g.nodes.get(second)?.node.propose(put(`k${i}`, 'after'));
    const survivor = g.nodes.get(second)?.kv;
    for (let i = 0; i < 40; i++) expect(survivor?.get(`k${i}`)).toBe(i < 20 ? 'before' : 'after');
    await Promise.all([...g.nodes.values()].map((n) => n.node.close()));
  });
});

describe('raft/node - snapshots and membership on real file storage', () => {
  it('raft/node - snapshots compact the log, a restart restores from the snapshot, a wiped replica catches up', async () => {
    // With a snapshot every 20 entries, 120 puts leave every replica with a snapshot; a restart restores the
    // KV from it (replaying only the tail), and a replica whose directory was wiped gets the state by
    // InstallSnapshot from the leader.
    const ids = ['a', 'b', 'c'];
    const net = new LoopbackNetwork<Message>();
    const g = await startGroup(ids, net, undefined, { snapshotEntries: 20 });
    const leader = await leaderOf(g.nodes);
    for (let i = 0; i < 120; i += 10) {
      await Promise.all(
        Array.from({ length: 10 }, (_, j) =>
          g.nodes.get(leader)?.node.propose(put(`k${i + j}`, `v${i + j}`)),
        ),
      );
    }
    await until(() => [...g.nodes.values()].every((n) => n.kv.size === 120), 'all applied');
    // The snapshot file is written beside the Ready loop (one at a time), so it may land after the apply.
    await until(
      () => [...g.nodes.values()].every((n) => n.node.status().snapshotIndex >= 100),
      'every replica snapshotted past 100',
    );
    await Promise.all([...g.nodes.values()].map((n) => n.node.close()));

    const wiped = ids.find((id) => id !== leader) as string;
    await rm(join(g.root, wiped), { recursive: true, force: true });
    const again = await startGroup(ids, new LoopbackNetwork<Message>(), g.root, { snapshotEntries: 20 });
    // The two that kept their data start from their snapshots (already holding at least 100 keys).
    for (const [id, n] of again.nodes) if (id !== wiped) expect(n.kv.size).toBeGreaterThanOrEqual(100);
    await leaderOf(again.nodes);
    await until(() => again.nodes.get(wiped)?.kv.size === 120, 'the wiped replica caught up');
    expect(again.nodes.get(wiped)?.node.status().snapshotIndex).toBeGreaterThan(0);
    expect(again.nodes.get(wiped)?.kv.get('k7')).toBe('v7');
    await Promise.all([...again.nodes.values()].map((n) => n.node.close()));
  });

  it('raft/node - a replica is added as a learner, promoted, and another removed while writes continue', async () => {
    // Starts a, b, c; d starts knowing the current membership and is added as a learner, then promoted;
    // then a voter that is not the leader is removed. Writes run throughout and every acknowledged one is
    // on every remaining replica at the end; the membership is the same everywhere.
    const ids = ['a', 'b', 'c'];
    const net = new LoopbackNetwork<Message>();
    const g = await startGroup(ids, net);
    const extra = await startGroup(['d'], net, g.root, { voters: ids });
    const all = new Map([...g.nodes, ...extra.nodes]);
    const leader = await leaderOf(g.nodes);
    const lead = g.nodes.get(leader)?.node as RaftNode<KvResult>;
    let writes = 0;
    let stop = false;
    const writer = (async () => {
      while (!stop) {
        await lead.propose(put(`w${writes}`, 'x'));
        writes++;
      }
    })();
    await until(() => writes > 10, 'writes flowing');
    expect((await lead.changeMembership({ type: 'addLearner', peer: 'd' })).learners).toEqual(['d']);
    await expect(lead.changeMembership({ type: 'addLearner', peer: 'd' })).rejects.toBeInstanceOf(
      MembershipChangeError,
    );
    await until(() => (extra.nodes.get('d')?.kv.size ?? 0) >= writes - 5, 'the learner catches up');
    expect((await lead.changeMembership({ type: 'addVoter', peer: 'd' })).voters).toEqual([
      'a',
      'b',
      'c',
      'd',
    ]);
    const removed = ids.find((id) => id !== leader) as string;
    const conf = await lead.changeMembership({ type: 'remove', peer: removed });
    expect(conf.voters).toEqual(['a', 'b', 'c', 'd'].filter((id) => id !== removed));
    const target = writes + 20;
    await until(() => writes >= target, 'writes continue after the changes');
    stop = true;
    await writer;
    const remaining = [...all].filter(([id]) => id !== removed);
    await until(
      () => remaining.every(([, n]) => n.kv.size === writes),
      'every acknowledged write everywhere',
    );
    for (const [, n] of remaining) expect(n.node.status().conf.voters).toEqual(conf.voters);
    await Promise.all([...all.values()].map((n) => n.node.close()));
  });

  it('raft/node - leadership transfer moves the leader and refuses a non-voter target', async () => {
    // transferLeadership resolves once the target leads; a transfer to a stranger is refused with a typed error.
    const ids = ['a', 'b', 'c'];
    const g = await startGroup(ids, new LoopbackNetwork<Message>());
    const leader = await leaderOf(g.nodes);
    const lead = g.nodes.get(leader)?.node as RaftNode<KvResult>;
    await lead.propose(put('k', 'v'));
    await expect(lead.transferLeadership('zz')).rejects.toBeInstanceOf(MembershipChangeError);
    const target = ids.find((id) => id !== leader) as string;
    await lead.transferLeadership(target);
    await until(() => g.nodes.get(target)?.node.status().role === 'leader', 'the target leads');
    expect((await g.nodes.get(target)?.node.propose(put('k2', 'v2')))?.ok).toBe(true);
    await Promise.all([...g.nodes.values()].map((n) => n.node.close()));
  });
});
