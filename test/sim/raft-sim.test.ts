import { describe, expect, it } from 'vitest';
import { type RaftSimResult, runRaftSim } from './raft-sim.js';

/**
 * Seeds per replica count in the test command (3 and 5 replicas: 1,000 runs in all); RAFT_SIM_SEEDS raises it,
 * SEED replays one run with its trace. `npm run sim:raft -- --seeds N` runs any number outside vitest.
 * Every run drives the production driver (raft/node.ts `RaftNode`) on virtual time.
 */
const seedsEach = Number(process.env.RAFT_SIM_SEEDS ?? 500);
const only = process.env.SEED === undefined ? undefined : Number(process.env.SEED);

function report(r: RaftSimResult): string {
  return `${r.failure}\n--- last events ---\n${r.trace.slice(-60).join('\n')}`;
}

async function runSeeds(replicas: 3 | 5, first: number): Promise<RaftSimResult[]> {
  const seeds = only !== undefined ? [only] : Array.from({ length: seedsEach }, (_, i) => first + i);
  const results: RaftSimResult[] = [];
  for (const seed of seeds) {
    const r = await runRaftSim({ seed, replicas });
    if (!r.ok) {
      // Replay with the trace on, so the failure prints what led to it (and the seed, and how to re-run it).
      const again = await runRaftSim({ seed, replicas, trace: true });
      expect.fail(report(again.ok ? r : again));
    }
    results.push(r);
  }
  return results;
}

describe('sim/raft - whole-cluster simulation of the production driver under faults', () => {
  it('sim/raft - 3 replicas: safety under every fault, then liveness once healed, on every seed', async () => {
    // Each seed runs 300 ticks of drops, duplicates, delays, partitions, clogs, crashes that lose unsynced
    // writes and tear the last record, snapshots, membership changes and transfers, then heals and must commit
    // and converge; invariants are checked as the drivers persist and apply, and the client history must be
    // linearizable.
    const results = await runSeeds(3, 1);
    if (only !== undefined) return; // One replayed seed: the totals below are over the full range.
    // The faults were really exercised across the seeds (a simulation that never crashes proves nothing).
    const sum = (k: keyof RaftSimResult['stats']) => results.reduce((n, r) => n + r.stats[k], 0);
    expect(sum('crashes')).toBeGreaterThan(results.length);
    expect(sum('snapshotsSent')).toBeGreaterThan(0);
    expect(sum('confChanges')).toBeGreaterThan(results.length / 2);
    expect(sum('transfers')).toBeGreaterThan(0);
    expect(sum('acked')).toBeGreaterThan(results.length * 5);
    // The leader-gone probe (RaftNode.leaderProbeTicks) was asked, found crashed leaders, and was lied to.
    expect(sum('probesAbsent')).toBeGreaterThan(0);
    expect(sum('probeLies')).toBeGreaterThan(0);
  });

  it('sim/raft - 5 replicas: the same, with two failures tolerated', async () => {
    // As above with five replicas (seeds continue after the 3-replica ones).
    const results = await runSeeds(5, 100_001);
    if (only !== undefined) return;
    expect(results.reduce((n, r) => n + r.stats.elections, 0)).toBeGreaterThan(results.length);
  });

  it('sim/raft - the same seed replays the same run exactly', async () => {
    // Determinism: two runs of one seed produce the same digest of history, committed log and statistics, and
    // the same trace; another seed produces another digest (so the digest does tell runs apart).
    const a = await runRaftSim({ seed: 7, replicas: 3, trace: true });
    const b = await runRaftSim({ seed: 7, replicas: 3, trace: true });
    const other = await runRaftSim({ seed: 8, replicas: 3, trace: true });
    expect(a.trace.length).toBeGreaterThan(10);
    expect(b.digest).toBe(a.digest);
    expect(b).toEqual(a);
    expect(other.digest).not.toBe(a.digest);
  });

  it('sim/raft - reads served without ReadIndex are caught by the linearizability checker', async () => {
    // The deliberate bug: any replica answers reads from its applied state. Over a handful of seeds the
    // checker must flag at least one history, naming the seed; the same seeds pass with ReadIndex.
    const seeds = Array.from({ length: 20 }, (_, i) => 500 + i);
    const flagged: RaftSimResult[] = [];
    for (const seed of seeds) {
      const r = await runRaftSim({ seed, replicas: 3, brokenReads: true });
      if (!r.ok) flagged.push(r);
      expect((await runRaftSim({ seed, replicas: 3 })).ok).toBe(true);
    }
    expect(flagged.length).toBeGreaterThan(0);
    for (const r of flagged) {
      expect(r.failure).toMatch(/^SEED=\d+ .*linearizability: history of key/);
      expect(r.failure).toMatch(/replay: npm run sim:raft -- --seed \d+ --replicas 3 --broken-reads/);
    }
  });
});
