/**
 * `RawNode.leaderGone`: outside evidence (the NATS transport finding nobody subscribed to the leader's
 * subject) that the leader is gone lets followers forget it (etcd's ForgetLeader) and elect a new leader in a
 * few ticks instead of an election timeout. Checked here on the pure core with the synchronous harness: what it
 * changes (the check-quorum lease, the campaign timer), what it must not (anything for a wrong leader or on a
 * leader), how fast a cluster re-elects with it against the same schedule without it, and that safety holds
 * when it is called at random, wrongly included (Raft safety must not depend on the evidence, §5.2 and §9.6).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  leaderGoneTimeoutTicksMax,
  leaderGoneVoteRoundsMax,
  leaderGoneVoteSpreadTicks,
} from '../../../raft/core/raw-node.js';
import { Cluster, runRandomFaults } from './harness.js';

/** Default election timeout of the core, in ticks (random in [this, 2 × this)). */
const electionTicks = 10;

/** Elects a leader, lets it heartbeat, then cuts it off; returns it and its two followers. */
function leaderCutOff(seed: number): { c: Cluster; leader: string; a: string; b: string } {
  const c = new Cluster(3, seed);
  const leader = c.electLeader();
  c.tick(3);
  const [a, b] = c.ids.filter((id) => id !== leader) as [string, string];
  c.partition([leader], [a, b]);
  return { c, leader, a, b };
}

/**
 * Ticks until a replica other than `old` leads; the ticks it took, or undefined within `ticksMax`. Replicas
 * tick one after another with delivery in between, as separate processes do: their tick timers run out of
 * phase, and a vote round trip is shorter than a tick. (The harness's `tick()` ticks all in lockstep, so two
 * followers whose timers end on the same tick always ask for votes at once and split them, which real
 * processes only do when they ask within one round trip of each other.)
 */
function ticksToNewLeader(c: Cluster, old: string, ticksMax: number): number | undefined {
  for (let t = 1; t <= ticksMax; t++) {
    for (const r of c.replicas.values()) {
      r.node.tick();
      c.deliver();
    }
    const l = c.leader();
    if (l !== undefined && l !== old && c.get(l).node.term > c.get(old).node.term) return t;
  }
  return undefined;
}

describe('raft/core - leader gone (forget the leader on outside evidence)', () => {
  it('raft/core - leaderGone changes nothing unless the replica follows that leader', () => {
    // A wrong leader id, the empty id, and the leader itself: each returns false, and term, vote, role and
    // leader stay as they were.
    const { c, leader, a } = leaderCutOff(1);
    const soft = (id: string) => {
      const n = c.get(id).node;
      return { term: n.term, role: n.role, leader: n.leader };
    };
    const a0 = soft(a);
    const l0 = soft(leader);
    expect(c.get(a).node.leaderGone('nobody')).toBe(false);
    expect(c.get(a).node.leaderGone('')).toBe(false);
    expect(c.get(leader).node.leaderGone(leader)).toBe(false);
    expect(soft(a)).toEqual(a0);
    expect(soft(leader)).toEqual(l0);
    // The right call forgets the leader and keeps the term (no campaign yet).
    expect(c.get(a).node.leaderGone(leader)).toBe(true);
    expect(c.get(a).node.leader).toBe('');
    expect(c.get(a).node.term).toBe(a0.term);
    expect(c.get(a).node.role).toBe('follower');
  });

  it('raft/core - a follower that was told grants a pre-vote its lease would ignore', () => {
    // Control: b still in its lease ignores a's pre-vote, so a campaign by a alone elects nobody.
    const control = leaderCutOff(2);
    control.c.get(control.a).node.campaign();
    control.c.deliver();
    expect(control.c.get(control.a).node.role).toBe('preCandidate');
    // The same with b told: a wins at once (pre-vote, then vote, all in one delivery).
    const { c, leader, a, b } = leaderCutOff(2);
    expect(c.get(b).node.leaderGone(leader)).toBe(true);
    c.get(a).node.campaign();
    c.deliver();
    expect(c.get(a).node.role).toBe('leader');
    expect(c.get(b).node.leader).toBe(a);
  });

  it('raft/core - a told follower campaigns within leaderGoneTimeoutTicksMax ticks', () => {
    for (let seed = 1; seed <= 30; seed++) {
      const { c, leader, a } = leaderCutOff(seed);
      c.get(a).node.leaderGone(leader);
      let campaignedAt: number | undefined;
      for (let t = 1; t <= leaderGoneTimeoutTicksMax && campaignedAt === undefined; t++) {
        c.tick();
        if (c.get(a).node.role !== 'follower') campaignedAt = t;
      }
      expect(campaignedAt, `seed ${seed}`).toBeDefined();
    }
  });

  it('raft/core - with both followers told, a new leader is elected in a few ticks, without it only after an election timeout', () => {
    // 100 seeds of the same schedule. Without the evidence the lease and the timer hold every election back
    // for at least an election timeout; with it the elections finish within the leader-gone timeout and a
    // tick (a split vote, both asking within one round trip, would fall back to the normal timeout).
    const seeds = 100;
    const fastTicks = leaderGoneTimeoutTicksMax + 1;
    let fast = 0;
    let slowest = 0;
    for (let seed = 1; seed <= seeds; seed++) {
      const told = leaderCutOff(seed);
      told.c.get(told.a).node.leaderGone(told.leader);
      told.c.get(told.b).node.leaderGone(told.leader);
      const t = ticksToNewLeader(told.c, told.leader, 10 * electionTicks);
      expect(t, `seed ${seed}: no new leader with the evidence`).toBeDefined();
      if ((t as number) <= fastTicks) fast++;
      slowest = Math.max(slowest, t as number);

      const blind = leaderCutOff(seed);
      const u = ticksToNewLeader(blind.c, blind.leader, 10 * electionTicks);
      expect(u, `seed ${seed}: no new leader without the evidence`).toBeDefined();
      expect(u as number, `seed ${seed}`).toBeGreaterThan(fastTicks);
    }
    expect(fast, `elections within ${fastTicks} ticks (slowest ${slowest})`).toBeGreaterThanOrEqual(
      0.95 * seeds,
    );
  });

  /**
   * Both survivors told and both campaigning at once, so that each takes the next term and votes for itself:
   * the split vote of two processes that asked within one round trip (what a loaded CI machine did to
   * test/raft/nats/leader-gone.test.ts). The election timeout is 1,000 ticks, so a leader within the wait
   * below can only come from the leader-gone retry.
   */
  function splitVote(seed: number): { c: Cluster; leader: string; a: string; b: string; term: number } {
    const c = new Cluster(3, seed, { electionTicks: 1_000 });
    const leader = c.electLeader(5_000);
    c.tick(3);
    const [a, b] = c.ids.filter((id) => id !== leader) as [string, string];
    c.partition([leader], [a, b]);
    const term = c.get(a).node.term;
    c.get(a).node.leaderGone(leader);
    c.get(b).node.leaderGone(leader);
    c.get(a).node.campaign();
    c.get(b).node.campaign();
    c.deliver();
    return { c, leader, a, b, term };
  }

  it('raft/core - a split vote between told survivors is retried on the short timeout, not the election timeout', () => {
    const roundTicks = leaderGoneTimeoutTicksMax + leaderGoneVoteSpreadTicks;
    const waitTicks = leaderGoneVoteRoundsMax * roundTicks;
    for (let seed = 1; seed <= 100; seed++) {
      const { c, leader, a, b, term } = splitVote(seed);
      // The split happened: both are candidates of the next term, each with its own vote.
      expect([c.get(a).node.role, c.get(b).node.role], `seed ${seed}`).toEqual(['candidate', 'candidate']);
      expect(c.get(a).node.term, `seed ${seed}`).toBe(term + 1);
      const t = ticksToNewLeader(c, leader, waitTicks);
      expect(t, `seed ${seed}: no leader within ${waitTicks} ticks of a split vote`).toBeDefined();
    }
  });

  it('raft/core - vote rounds that keep failing fall back to the election timeout after leaderGoneVoteRoundsMax', () => {
    // Votes between the two survivors are lost from the split on (pre-votes still pass), so every real round
    // fails. Each survivor's first leaderGoneVoteRoundsMax rounds (the split's is the first) time out on the
    // short timeout; the round after them takes one more term and waits out the 1,000-tick election
    // timeout: within 500 ticks no term beyond term + leaderGoneVoteRoundsMax + 1.
    for (let seed = 1; seed <= 30; seed++) {
      const { c, a, b, term } = splitVote(seed);
      c.link = (_from, _to, m) => m.type !== 'vote' && m.type !== 'voteResp';
      for (let t = 0; t < 500; t++) {
        for (const r of c.replicas.values()) {
          r.node.tick();
          c.deliver();
        }
      }
      const terms = [c.get(a).node.term, c.get(b).node.term];
      expect(Math.max(...terms), `seed ${seed}: terms ${terms}`).toBeLessThanOrEqual(
        term + leaderGoneVoteRoundsMax + 1,
      );
      // And the retry did happen: some survivor took more than the split's term.
      expect(Math.max(...terms), `seed ${seed}: terms ${terms}`).toBeGreaterThan(term + 1);
    }
  });

  it('raft/core - election and state machine safety hold when leaderGone is called at random, right or wrong', () => {
    // Random partitions, drops, proposals and ticks (as in the safety test of raw-node.test.ts), plus
    // leaderGone calls on random replicas naming a random replica, whether or not it is really gone. The
    // harness throws on two leaders in one term; applied sequences must stay prefixes of one another; after
    // healing, a final proposal is applied everywhere.
    fc.assert(
      fc.property(fc.integer(), fc.constantFrom(3, 5), (seed, size) => {
        runRandomFaults(new Cluster(size, seed), `seed ${seed}, ${size} replicas`, {
          extra: (c, rng) => {
            const who = c.get(rng.pick(c.ids)).node;
            who.leaderGone(rng.chance(0.5) ? who.leader : rng.pick(c.ids));
          },
        });
      }),
      { numRuns: Number(process.env.RAFT_RUNS ?? 40) },
    );
  });
});
