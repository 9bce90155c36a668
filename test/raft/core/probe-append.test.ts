/**
 * Appends in probe state are small (`probeAppendEntriesMax`, `probeAppendBytesMax`): a probe is sent again on
 * every heartbeat answer until the follower accepts one, and a full-size one each tick to a follower catching
 * up after a restart kept the leader busy encoding for seconds. Checked with the synchronous harness: a follower
 * cut off while 600 entries commit rejoins; between its first rejection (the leader drops to probe) and its
 * first acceptance, every append sent to it carries at most `probeAppendEntriesMax` entries, and once accepted
 * it catches up with larger appends to the same log as the others (§5.3).
 */
import { describe, expect, it } from 'vitest';
import type { Message } from '../../../raft/core/messages.js';
import { probeAppendEntriesMax } from '../../../raft/core/raw-node.js';
import { Cluster } from './harness.js';

describe('raft/core - probe appends', () => {
  it('raft/core - probe appends - a lagging follower is probed with small appends, then caught up', () => {
    for (const seed of [3, 11, 29]) {
      const c = new Cluster(3, seed);
      const leader = c.electLeader();
      const lone = c.ids.find((id) => id !== leader) as string;
      const other = c.ids.find((id) => id !== leader && id !== lone) as string;
      c.partition([lone], [leader, other]);
      for (let i = 0; i < 600; i++) c.propose(leader, `e${i}`);
      c.tick(3);
      // Heal, recording what goes between the leader and the lagging follower.
      const seen: Message[] = [];
      c.link = (from, to, m) => {
        if ((from === leader && to === lone) || (from === lone && to === leader)) seen.push(m);
        return true;
      };
      c.tick(30);
      const firstReject = seen.findIndex((m) => m.type === 'appendResp' && m.from === lone && m.reject);
      expect(firstReject, `seed ${seed}: the follower rejected an append`).toBeGreaterThanOrEqual(0);
      const accepted = seen.findIndex(
        (m, i) => i > firstReject && m.type === 'appendResp' && m.from === lone && !m.reject,
      );
      expect(accepted, `seed ${seed}: the follower accepted a probe`).toBeGreaterThan(firstReject);
      const probes = seen
        .slice(firstReject, accepted)
        .filter((m) => m.type === 'append' && m.from === leader);
      expect(probes.length, `seed ${seed}`).toBeGreaterThan(0);
      for (const m of probes) {
        if (m.type !== 'append') continue;
        expect(m.entries.length, `seed ${seed}`).toBeLessThanOrEqual(probeAppendEntriesMax);
      }
      // Caught up afterwards, with appends larger than a probe.
      const later = seen.slice(accepted).filter((m) => m.type === 'append' && m.from === leader);
      expect(
        later.some((m) => m.type === 'append' && m.entries.length > probeAppendEntriesMax),
        `seed ${seed}`,
      ).toBe(true);
      expect(c.get(lone).applied).toEqual(c.get(leader).applied);
      expect(c.get(lone).applied).toHaveLength(600);
    }
  });
});
