/**
 * metrics - a Raft group records what the dashboard reads. Three RaftNodes on real file storage (fsync on, the
 * fsync hook wired) with one MemoryMetrics sink: after an election and 50 proposals with snapshots every 20
 * entries, exactly one replica reports itself leader, every replica reports the same term and a commit index
 * of at least 50, and the commit, append, fsync and snapshot histograms have observations.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { Message } from '../../raft/core/messages.js';
import { type KvResult, KvStateMachine, kvCommandCodec } from '../../raft/kv.js';
import { RaftNode } from '../../raft/node.js';
import { FileStorage } from '../../raft/storage/file.js';
import { LoopbackNetwork } from '../../raft/transport/loopback.js';
import { MemoryMetrics, trellisMetrics } from '../../src/lib/metrics.js';
import { createRng } from '../../src/lib/prng.js';
import { until } from '../helpers/until.js';

describe('metrics - raft', () => {
  it('metrics - a Raft group reports term, leader, commit index and latencies', async () => {
    const root = await mkdtemp(join(tmpdir(), 'trellis-raft-metrics-'));
    const sink = new MemoryMetrics();
    const metrics = trellisMetrics(sink);
    const fsyncSeconds = metrics.raftFsyncSeconds;
    const ids = ['a', 'b', 'c'];
    const net = new LoopbackNetwork<Message>();
    const nodes: RaftNode<KvResult>[] = [];
    try {
      for (const [i, id] of ids.entries()) {
        const storage = await FileStorage.open(join(root, id), {
          onFsyncMs: (ms) => fsyncSeconds.observe(ms / 1_000, { replica: id }),
        });
        nodes.push(
          new RaftNode<KvResult>({
            id,
            voters: ids,
            storage,
            transport: net.endpoint(id),
            stateMachine: new KvStateMachine(),
            rng: createRng(7 + i),
            tickMs: 5,
            snapshotEntries: 20,
            metrics,
          }),
        );
      }
      let leader: RaftNode<KvResult> | undefined;
      await until(() => {
        leader = nodes.find((n) => n.status().role === 'leader');
        return leader !== undefined;
      }, 'a leader');
      const lead = leader as RaftNode<KvResult>;
      for (let i = 0; i < 50; i++)
        await lead.propose(kvCommandCodec.encode({ op: 'put', key: `k${i}`, value: 'v' }));
      await until(
        () => ids.every((id) => (sink.value('trellis_raft_commit_index', { replica: id }) ?? 0) >= 50),
        'every replica reports the commit',
      );
      await until(
        () => (sink.value('trellis_snapshot_bytes', { replica: lead.status().id }) ?? 0) > 0,
        'a snapshot',
      );

      const leaders = ids.map((id) => sink.value('trellis_raft_is_leader', { replica: id }));
      expect(leaders.filter((v) => v === 1)).toHaveLength(1);
      expect(sink.value('trellis_raft_is_leader', { replica: lead.status().id })).toBe(1);
      const terms = new Set(ids.map((id) => sink.value('trellis_raft_term', { replica: id })));
      expect([...terms]).toEqual([lead.status().term]);
      const commit = sink.observations('trellis_raft_commit_latency_seconds', { replica: lead.status().id });
      expect(commit?.count).toBe(50);
      for (const id of ids) {
        expect(
          sink.observations('trellis_raft_append_latency_seconds', { replica: id })?.count,
        ).toBeGreaterThan(0);
        expect(
          sink.observations('trellis_raft_fsync_latency_seconds', { replica: id })?.count,
        ).toBeGreaterThan(0);
      }
      expect(
        sink.observations('trellis_snapshot_duration_seconds', { replica: lead.status().id })?.count,
      ).toBeGreaterThan(0);
    } finally {
      await Promise.all(nodes.map((n) => n.close()));
      await rm(root, { recursive: true, force: true });
    }
  });
});
