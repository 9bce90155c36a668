import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { Message } from '../../../raft/core/messages.js';
import { NotLeaderError } from '../../../raft/errors.js';
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

async function startGroup(ids: readonly string[], net: LoopbackNetwork<Message>, base?: string) {
  const root = base ?? (await mkdtemp(join(tmpdir(), 'trellis-raftnode-')));
  if (base === undefined) dirs.push(root);
  const nodes = new Map<string, { node: RaftNode<KvResult>; kv: KvStateMachine }>();
  for (const [i, id] of ids.entries()) {
    const kv = new KvStateMachine();
    const storage = await FileStorage.open(join(root, id));
    const node = new RaftNode<KvResult>({
      id,
      voters: ids,
      storage,
      transport: net.endpoint(id),
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
