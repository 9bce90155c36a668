/**
 * `trellis members list|add|remove|transfer`: the replica group's membership, through the same NATS API as
 * `trellis kv` (any replica takes the request; followers forward it to the leader). members-command.ts declares
 * the commands; this module, which their actions import, runs them.
 *
 * - `add <id>` adds the replica as a learner, waits until it has caught up, then promotes it to voter
 *   (`--learner` stops at the first step). Start the new replica first with `--peers` set to the current
 *   voters (without itself): it waits, silent, until the leader adds it.
 * - `remove <id>` removes a voter or learner; removing the leader hands leadership over first.
 * - `transfer <id>` moves leadership to that voter.
 * - `list` prints the membership and each member's own status (role, term, commit, snapshot).
 *
 * A scheduler group (`--state scheduler`) and a KV group (`--state kv`) serve different codecs on the same
 * subject; the first reply says which one answers, and the call goes through that group's protocol (the
 * scheduler's membership calls in src/api/protocol.ts, or the KV request codec).
 */
import type { NatsConnection } from 'nats';
import {
  MembershipChangeError,
  NotLeaderError,
  ProposalDroppedError,
  RaftClosedError,
  TimeoutError,
} from '../../raft/errors.js';
import { connect as connectApi } from '../api/client.js';
import { apiSubject, replyCodec, requestCodec } from '../api/protocol.js';
import { Deadline } from '../lib/deadline.js';
import { CodecError, type TrellisError, UnavailableError, ValidationError } from '../lib/errors.js';
import { type ConnectionFlags, clientConnection } from './connect.js';
import { RequestRefusedError } from './errors.js';
import {
  type KvReply,
  type KvRequest,
  kvCall,
  kvReplyCodec,
  memberOpTimeoutMs,
  replicaStatus,
} from './server.js';

export type MemberRequest = Extract<KvRequest, { op: 'members' | 'addMember' | 'removeMember' | 'transfer' }>;
/** Wait for one probe's reply while finding out which kind of group answers. */
const probeAttemptMs = 1_000;
/** Longest wait for any replica to answer the probe (the group may be starting). */
const groupProbeMsMax = 10_000;
/** Wait for one replica's status in `list`. */
const replicaStatusMs = 2_000;

/** The codes of the errors a replica may refuse a membership request with, by class name. */
const refusalCodes = new Map(
  [
    new MembershipChangeError(''),
    new NotLeaderError(''),
    new ProposalDroppedError(''),
    new RaftClosedError(''),
    new TimeoutError(''),
    new ValidationError('', ''),
    new CodecError('malformed', ''),
  ].map((e: TrellisError) => [e.name, e.code]),
);

/**
 * The error for a refusal. Replicas send a refusal as `<ErrorClass>: <message>`; one without a class
 * ("no leader yet", "leader unreachable", a request timeout) means the group could not be reached.
 */
export function refusalError(reply: Extract<KvReply, { ok: false }>): TrellisError {
  const m = /^(\w+Error): ([\s\S]*)$/.exec(reply.error);
  const code = m === null ? undefined : refusalCodes.get(m[1] ?? '');
  if (m === null || code === undefined) {
    return new UnavailableError(`the replica group did not answer in time (last: ${reply.error})`);
  }
  return new RequestRefusedError(m[2] ?? reply.error, code);
}

/**
 * Asks the cluster's API subject for a status in the scheduler's codec and reads the reply's kind: a
 * scheduler replica answers in its own codec, a KV replica with a KV reply (refusing the frame). Retries until
 * `timeoutMs` while no replica answers (they may be starting).
 */
async function groupKind(
  nc: NatsConnection,
  cluster: string,
  timeoutMs: number,
): Promise<'scheduler' | 'kv'> {
  const deadline = Deadline.after(timeoutMs);
  const frame = requestCodec.encode({
    id: 'members-probe',
    deadline: deadline.toWire(),
    call: { op: 'status' },
  });
  let last = 'no reply';
  while (deadline.remainingMs() > 0) {
    try {
      const m = await nc.request(apiSubject(cluster), frame, {
        timeout: Math.max(1, Math.min(probeAttemptMs, deadline.remainingMs())),
      });
      try {
        replyCodec.decode(m.data);
        return 'scheduler';
      } catch {
        kvReplyCodec.decode(m.data);
        return 'kv';
      }
    } catch (err) {
      last = err instanceof Error ? err.message : String(err);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  throw new UnavailableError(
    `no replica of cluster ${cluster} answered within ${timeoutMs} ms (last: ${last})`,
  );
}

/** The membership call through the scheduler's API; prints what the KV path prints. */
async function schedulerCall(nc: NatsConnection, cluster: string, req: MemberRequest): Promise<void> {
  const client = await connectApi({
    servers: [],
    connection: nc,
    cluster,
    timeoutMs: memberOpTimeoutMs + 2_000,
  });
  const members = await (req.op === 'members'
    ? client.members()
    : req.op === 'addMember'
      ? client.addMember(req.id, { learner: req.learner })
      : req.op === 'removeMember'
        ? client.removeMember(req.id)
        : client.transferLeadership(req.to));
  const out: Record<string, unknown> = { ok: true, leader: client.leader, ...members };
  if (req.op === 'members') {
    const quick = await connectApi({ servers: [], connection: nc, cluster, timeoutMs: replicaStatusMs });
    out.replicas = await Promise.all(
      [...members.voters, ...members.learners].map(async (id) => {
        try {
          const st = await quick.status({ replica: id });
          const { replica, role, term, leader, commit, applied } = st;
          return { id: replica, role, term, leader: leader ?? '', commit, applied };
        } catch {
          return { id, unreachable: true };
        }
      }),
    );
  }
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

/** One membership request through the group (a scheduler group or a KV group), its answer as one JSON line. */
export async function runMembers(o: ConnectionFlags, req: MemberRequest): Promise<void> {
  const nc = await clientConnection(o);
  try {
    if ((await groupKind(nc, o.cluster, groupProbeMsMax)) === 'scheduler') {
      await schedulerCall(nc, o.cluster, req);
      return;
    }
    const reply = await kvCall(nc, o.cluster, req, memberOpTimeoutMs, memberOpTimeoutMs + 2_000);
    if (!reply.ok) throw refusalError(reply);
    const out: Record<string, unknown> = {
      ok: true,
      leader: reply.by,
      voters: reply.voters,
      learners: reply.learners,
    };
    if (req.op === 'members') {
      const ids = [...(reply.voters ?? []), ...(reply.learners ?? [])];
      out.replicas = await Promise.all(
        ids.map(async (id) => (await replicaStatus(nc, o.cluster, id)) ?? { id, unreachable: true }),
      );
    }
    process.stdout.write(`${JSON.stringify(out)}\n`);
  } finally {
    await nc.close();
  }
}

export { registerMembers } from './members-command.js';
