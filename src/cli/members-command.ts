/**
 * The `trellis members list|add|remove|transfer` commands and their flags (members.ts runs them and says
 * what each does), declared without loading the API client, the protocol and nats.js.
 */
import type { Command } from 'commander';
import { replicaId } from '../lib/ids.js';
import { type ConnectionFlags, clientConnectTimeoutMs, withConnectionOptions } from './connect-options.js';
import type { MemberRequest } from './members.js';
import { bindFlagEnv } from './ops/common.js';

const memberId = (raw: string): string => replicaId(raw, 'replica id');

export function registerMembers(program: Command): void {
  const members = program.command('members').description('list and change the replica group’s membership');
  // TRELLIS_NATS and TRELLIS_CLUSTER as for the other cluster commands (the walkthrough exports them).
  const withConn = (c: Command): Command => bindFlagEnv(withConnectionOptions(c, clientConnectTimeoutMs));
  const call = async (o: ConnectionFlags, req: MemberRequest): Promise<void> => {
    const { runMembers } = await import('./members.js');
    await runMembers(o, req);
  };
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
