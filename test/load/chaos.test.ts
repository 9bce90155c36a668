/**
 * The chaos schedule's failover test (`committedAfter`): a failover ends at the first commit of an entry of a
 * later term than the killed leader's. Checked on status replies as the replicas send them, including the
 * case the former test got wrong: a survivor that took a later term while campaigning and learned old-term
 * commits past the old leader's last reported commit has not seen a new leader commit yet.
 */
import { describe, expect, it } from 'vitest';
import type { ReplicaStatus } from '../../src/api/protocol.js';
import { committedAfter } from '../../src/load/chaos.js';

const stats: ReplicaStatus['stats'] = {
  applied: 100,
  nodes: 0,
  sandboxes: 0,
  pending: 0,
  batches: 0,
  meanBatch: 0,
  meanBatchLatencyMs: 0,
  placed: 0,
  rejected: 0,
  replans: 0,
  rejectReasons: {},
};

function status(s: Partial<ReplicaStatus>): ReplicaStatus {
  return { replica: 'r1', role: 'follower', term: 3, commit: 100, applied: 100, replicas: [], stats, ...s };
}

describe('load/chaos - failover end', () => {
  const before = status({ replica: 'r0', role: 'leader', leader: 'r0', term: 3, commit: 100, commitTerm: 3 });

  it('load/chaos - failover end - a candidate of a later term with old-term commits is not a failover', () => {
    expect(committedAfter(status({ role: 'candidate', term: 4, commit: 105, commitTerm: 3 }), before)).toBe(
      false,
    );
  });

  it('load/chaos - failover end - a commit of a later term is, on the new leader or a follower', () => {
    expect(
      committedAfter(status({ role: 'leader', leader: 'r1', term: 4, commit: 106, commitTerm: 4 }), before),
    ).toBe(true);
    expect(committedAfter(status({ leader: 'r1', term: 4, commit: 106, commitTerm: 4 }), before)).toBe(true);
  });

  it('load/chaos - failover end - the old leader still in its term is not', () => {
    expect(committedAfter(status({ term: 3, commit: 120, commitTerm: 3 }), before)).toBe(false);
  });

  it('load/chaos - failover end - without commitTerm (an older replica), a later term and a higher commit', () => {
    expect(committedAfter(status({ leader: 'r1', term: 4, commit: 101 }), before)).toBe(true);
    expect(committedAfter(status({ leader: 'r1', term: 4, commit: 100 }), before)).toBe(false);
  });
});
