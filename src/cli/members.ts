/**
 * `trellis members list|add|remove|transfer`: the replica group's membership, through the same NATS API as
 * `trellis kv` (any replica takes the request; followers forward it to the leader).
 *
 * - `add <id>` adds the replica as a learner, waits until it has caught up, then promotes it to voter
 *   (`--learner` stops at the first step). Start the new replica first with `--peers` set to the current
 *   voters (without itself): it waits, silent, until the leader adds it.
 * - `remove <id>` removes a voter or learner; removing the leader hands leadership over first.
 * - `transfer <id>` moves leadership to that voter.
 * - `list` prints the membership and each member's own status (role, term, commit, snapshot).
 */
import type { Command } from 'commander';
import {
  MembershipChangeError,
  NotLeaderError,
  ProposalDroppedError,
  RaftClosedError,
  TimeoutError,
} from '../../raft/errors.js';
import { CodecError, type TrellisError, UnavailableError, ValidationError } from '../lib/errors.js';
import { replicaId } from '../lib/ids.js';
import {
  type ConnectionFlags,
  clientConnection,
  clientConnectTimeoutMs,
  withConnectionOptions,
} from './connect.js';
import { RequestRefusedError } from './errors.js';
import { type KvReply, type KvRequest, kvCall, memberOpTimeoutMs, replicaStatus } from './server.js';

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

async function call(o: ConnectionFlags, req: KvRequest): Promise<void> {
  const nc = await clientConnection(o);
  try {
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

const memberId = (raw: string): string => replicaId(raw, 'replica id');

export function registerMembers(program: Command): void {
  const members = program.command('members').description('list and change the replica group’s membership');
  const withConn = (c: Command): Command => withConnectionOptions(c, clientConnectTimeoutMs);
  withConn(members.command('list').description('membership and each member’s status')).action(
    (o: ConnectionFlags) => call(o, { op: 'members' }),
  );
  withConn(
    members
      .command('add <id>')
      .description('add a replica: as a learner, then, once caught up, as a voter')
      .option('--learner', 'stop once it is a learner'),
  ).action((id: string, o: ConnectionFlags & { learner?: boolean }) =>
    call(o, { op: 'addMember', id: memberId(id), learner: o.learner === true }),
  );
  withConn(
    members
      .command('remove <id>')
      .description('remove a voter or learner; the removed replica says so and exits (code 4)'),
  ).action((id: string, o: ConnectionFlags) => call(o, { op: 'removeMember', id: memberId(id) }));
  withConn(
    members
      .command('transfer <id>')
      .description('transfer leadership to a voter (to the current leader: nothing to do, succeeds)'),
  ).action((id: string, o: ConnectionFlags) => call(o, { op: 'transfer', to: memberId(id) }));
}
