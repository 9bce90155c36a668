/**
 * Checks, rather than assumes, that a Raft write is fsynced before it is acknowledged: one replica (a group
 * of one, so its own log is the quorum) on FileStorage with default options — as `trellis server` opens it —
 * and `FileHandle.prototype.datasync` wrapped to record when each call started and finished. A proposal
 * counts as fsynced before its ack when a datasync that started after the proposal finished before it
 * resolved. True only if that holds for every proposal.
 */
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Message } from '../../raft/core/messages.js';
import { type KvResult, KvStateMachine, kvCommandCodec } from '../../raft/kv.js';
import { RaftNode } from '../../raft/node.js';
import { FileStorage } from '../../raft/storage/file.js';
import { LoopbackNetwork } from '../../raft/transport/loopback.js';
import { createRng } from '../../src/lib/prng.js';

interface Syncable {
  datasync(this: unknown): Promise<void>;
}

export async function fileStorageFsyncsBeforeAck(proposals = 20): Promise<boolean> {
  const root = await mkdtemp(join(tmpdir(), 'trellis-bench-fsync-'));
  const handle = await open(join(root, 'probe'), 'w');
  const proto = Object.getPrototypeOf(handle) as Syncable;
  await handle.close();
  const original = proto.datasync;
  const syncs: { start: number; end: number }[] = [];
  proto.datasync = async function (this: unknown): Promise<void> {
    const start = performance.now();
    await original.call(this);
    syncs.push({ start, end: performance.now() });
  };
  let node: RaftNode<KvResult> | undefined;
  try {
    const net = new LoopbackNetwork<Message>();
    node = new RaftNode<KvResult>({
      id: 'probe',
      voters: ['probe'],
      storage: await FileStorage.open(join(root, 'wal')),
      transport: net.endpoint('probe'),
      stateMachine: new KvStateMachine(),
      rng: createRng(1),
      tickMs: 10,
    });
    const deadline = Date.now() + 10_000;
    while (node.status().role !== 'leader') {
      if (Date.now() > deadline) return false;
      await new Promise((r) => setTimeout(r, 10));
    }
    for (let i = 0; i < proposals; i++) {
      const asked = performance.now();
      await node.propose(kvCommandCodec.encode({ op: 'put', key: `k${i}`, value: 'v' }));
      const acked = performance.now();
      if (!syncs.some((s) => s.start >= asked && s.end <= acked)) return false;
    }
    return true;
  } finally {
    await node?.close();
    proto.datasync = original;
    await rm(root, { recursive: true, force: true });
  }
}
