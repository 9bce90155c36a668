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
import { connect } from 'nats';
import { type KvRequest, kvCall, memberOpTimeoutMs, replicaStatus } from './server.js';

interface ConnOptions {
  nats: string;
  cluster: string;
  user?: string;
  pass?: string;
}

async function call(o: ConnOptions, req: KvRequest): Promise<void> {
  const nc = await connect({
    servers: o.nats,
    ...(o.user === undefined ? {} : { user: o.user, pass: o.pass ?? '' }),
  });
  try {
    const reply = await kvCall(nc, o.cluster, req, memberOpTimeoutMs, memberOpTimeoutMs + 2_000);
    if (!reply.ok) {
      process.stdout.write(`${JSON.stringify(reply)}\n`);
      process.exitCode = 1;
      return;
    }
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

export function registerMembers(program: Command): void {
  const members = program.command('members').description('list and change the replica group’s membership');
  const withConn = (c: Command): Command =>
    c
      .option('--nats <url>', 'nats-server URL', 'nats://127.0.0.1:4222')
      .option('--cluster <id>', 'cluster id', 'trellis')
      .option('--user <user>', 'NATS user')
      .option('--pass <password>', 'NATS password');
  withConn(members.command('list').description('membership and each member’s status')).action(
    (o: ConnOptions) => call(o, { op: 'members' }),
  );
  withConn(
    members
      .command('add <id>')
      .description('add a replica: as a learner, then, once caught up, as a voter')
      .option('--learner', 'stop once it is a learner'),
  ).action((id: string, o: ConnOptions & { learner?: boolean }) =>
    call(o, { op: 'addMember', id, learner: o.learner === true }),
  );
  withConn(members.command('remove <id>').description('remove a voter or learner')).action(
    (id: string, o: ConnOptions) => call(o, { op: 'removeMember', id }),
  );
  withConn(members.command('transfer <id>').description('transfer leadership to a voter')).action(
    (id: string, o: ConnOptions) => call(o, { op: 'transfer', to: id }),
  );
}
