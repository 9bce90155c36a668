/**
 * Raft benchmark (issue 4): `npm run bench:raft -- --json FILE [--quick]`.
 *
 * Three replicas in one process on the loopback transport, each on its own FileStorage with fsync on, in temp
 * directories. 256-byte KV puts from 1 and from 64 concurrent proposers for a fixed time; a commit is counted
 * when the leader's proposal resolves (committed on a majority, fsynced, applied).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Message } from '../raft/core/messages.js';
import { type KvResult, KvStateMachine, kvCommandCodec } from '../raft/kv.js';
import { RaftNode } from '../raft/node.js';
import { FileStorage } from '../raft/storage/file.js';
import { LoopbackNetwork } from '../raft/transport/loopback.js';
import { createRng } from '../src/lib/prng.js';
import { benchFlags, closedLoop, machineLine, table, writeJsonLines } from './lib/report.js';

const flags = benchFlags();
const durationMs = flags.quick ? 2_000 : 10_000;
const ids = ['a', 'b', 'c'];
const value = 'v'.repeat(256 - 40);

async function scenario(proposers: number): Promise<Record<string, string | number>> {
  const root = await mkdtemp(join(tmpdir(), 'trellis-bench-raft-'));
  const net = new LoopbackNetwork<Message>();
  const nodes = await Promise.all(
    ids.map(async (id, i) => {
      const storage = await FileStorage.open(join(root, id));
      return new RaftNode<KvResult>({
        id,
        voters: ids,
        storage,
        transport: net.endpoint(id),
        stateMachine: new KvStateMachine(),
        rng: createRng(7 + i),
        tickMs: 10,
      });
    }),
  );
  let leader: RaftNode<KvResult> | undefined;
  while (leader === undefined) {
    await new Promise((r) => setTimeout(r, 10));
    leader = nodes.find((n) => n.status().role === 'leader');
  }
  let seq = 0;
  const r = await closedLoop(proposers, durationMs, async () => {
    await leader?.propose(kvCommandCodec.encode({ op: 'put', key: `k${seq++ % 10_000}`, value }));
  });
  await Promise.all(nodes.map((n) => n.close()));
  await rm(root, { recursive: true, force: true });
  return { proposers, commitsPerSec: r.opsPerSec, p50Ms: r.p50Ms, p99Ms: r.p99Ms, fsync: 'on' };
}

console.log(`raft benchmark — ${machineLine()}`);
const rows = [await scenario(1), await scenario(64)];
console.log(table(rows));
writeJsonLines(flags.json, rows);
