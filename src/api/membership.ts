/**
 * Membership operations on a replica group's leader, shared by the KV server (`trellis server --state kv`)
 * and the scheduler server (src/api/replica-server.ts), so `trellis members` works on either. Adding a voter
 * goes through a learner that first catches up, so the quorum never counts a replica that would hold up
 * commits while it replays the log (etcd's promotion).
 */
import { MembershipChangeError } from '../../raft/errors.js';
import type { RaftNode } from '../../raft/node.js';

/** How long a membership change or transfer may take on the leader (a learner's catch-up included). */
export const memberOpTimeoutMs = 30_000;
/** A learner within this many entries of the leader's commit index is caught up enough to vote. */
export const learnerCatchUpEntries = 64;
/** Pause between two looks at a learner's progress. */
const catchUpPollMs = 50;

export type MemberOp =
  | { readonly op: 'members' }
  | { readonly op: 'addMember'; readonly id: string; readonly learner: boolean }
  | { readonly op: 'removeMember'; readonly id: string }
  | { readonly op: 'transfer'; readonly to: string };

export interface Members {
  readonly voters: readonly string[];
  readonly learners: readonly string[];
}

/** Runs `req` on `node` (which must lead; a follower's node refuses with NotLeaderError). */
export async function serveMembership<R>(node: RaftNode<R>, req: MemberOp): Promise<Members> {
  const members = (): Members => {
    const c = node.status().conf;
    return { voters: [...c.voters], learners: [...c.learners] };
  };
  switch (req.op) {
    case 'members':
      await node.read();
      return members();
    case 'removeMember':
      await node.changeMembership({ type: 'remove', peer: req.id });
      return members();
    case 'transfer':
      // To the replica that already leads (this one): nothing to move, and asking for it is not an error.
      if (req.to !== node.status().id) await node.transferLeadership(req.to);
      return members();
    case 'addMember': {
      const conf = node.status().conf;
      if (conf.voters.includes(req.id)) throw new MembershipChangeError(`${req.id} is already a voter`);
      if (!conf.learners.includes(req.id)) await node.changeMembership({ type: 'addLearner', peer: req.id });
      if (req.learner) return members();
      const deadline = Date.now() + memberOpTimeoutMs;
      for (;;) {
        const match = node.progress().get(req.id)?.match ?? 0;
        if (match + learnerCatchUpEntries >= node.status().commit) break;
        if (Date.now() > deadline)
          throw new MembershipChangeError(`${req.id} did not catch up in time; it stays a learner`);
        await new Promise((r) => setTimeout(r, catchUpPollMs));
      }
      await node.changeMembership({ type: 'addVoter', peer: req.id });
      return members();
    }
  }
}
