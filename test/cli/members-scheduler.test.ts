/**
 * `trellis members` on a scheduler group (`trellis server --state scheduler`): the command finds out which
 * kind of group answers and goes through the scheduler's membership calls. Three replica processes and a
 * nats-server; list, transfer leadership, remove a replica, and add a new one that catches up and votes —
 * with sandboxes created before and after, all still there.
 */
import { type ChildProcess, execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, type RemoteScheduler } from '../../src/api/client.js';
import { cliMain, spawnReplica } from '../../src/testing/replica-process.js';
import { type RunningServer, startNats } from '../../src/testing/servers.js';

const run = promisify(execFile);
const cluster = 'msched';
const spec = { tenant: 'm', resources: { cpu: 100, memory: 64, disk: 64 } };

interface MembersOut {
  ok: boolean;
  leader: string;
  voters: string[];
  learners: string[];
  replicas?: { id: string; role?: string; unreachable?: boolean }[];
}

describe('trellis members - on a scheduler group', () => {
  let nats: RunningServer;
  let root: string;
  let client: RemoteScheduler;
  const procs = new Map<string, ChildProcess>();
  const start = (id: string, peers: readonly string[]): void => {
    procs.set(id, spawnReplica({ id, peers, natsUrl: nats.url, root, cluster, state: 'scheduler' }));
  };
  const members = async (...args: string[]): Promise<MembersOut> => {
    const { stdout } = await run(
      process.execPath,
      [cliMain, 'members', ...args, '--nats', nats.url, '--cluster', cluster],
      {
        env: { ...process.env, TRELLIS_LOG_LEVEL: 'warn' },
      },
    );
    return JSON.parse(stdout) as MembersOut;
  };

  beforeAll(async () => {
    expect(existsSync(cliMain), `${cliMain} missing: run npm run build first`).toBe(true);
    nats = await startNats();
    root = await mkdtemp(join(tmpdir(), 'trellis-msched-'));
    for (const id of ['a', 'b', 'c']) start(id, ['a', 'b', 'c']);
    client = await connect({ servers: nats.url, cluster, timeoutMs: 30_000 });
    await client.registerNode({
      id: 'n1',
      capacity: { cpu: 64_000, memory: 65_536, disk: 1e6 },
      labels: {},
      state: 'ready',
    });
  }, 120_000);
  afterAll(async () => {
    await client?.close();
    for (const p of procs.values()) p.kill('SIGKILL');
    await nats?.stop();
    if (root !== undefined) await rm(root, { recursive: true, force: true });
  });

  it('trellis members - list, transfer, remove and add work on scheduler replicas', async () => {
    const made = [(await client.create(spec, { requestId: 'm-0' })).id];
    const listed = await members('list');
    expect(listed.voters).toEqual(['a', 'b', 'c']);
    expect(listed.learners).toEqual([]);
    expect(['a', 'b', 'c']).toContain(listed.leader);
    expect(listed.replicas?.map((r) => r.id).sort()).toEqual(['a', 'b', 'c']);
    expect(listed.replicas?.filter((r) => r.unreachable === true)).toEqual([]);
    expect(listed.replicas?.filter((r) => r.role === 'leader').map((r) => r.id)).toEqual([listed.leader]);

    // Leadership to another voter: the replica that answers afterwards is that one.
    const target = ['a', 'b', 'c'].find((id) => id !== listed.leader) as string;
    await members('transfer', target);
    expect((await client.status({ replica: target })).role).toBe('leader');

    // Remove a follower; the two that remain keep serving.
    const gone = ['a', 'b', 'c'].find((id) => id !== target) as string;
    expect((await members('remove', gone)).voters).toEqual(['a', 'b', 'c'].filter((id) => id !== gone));
    procs.get(gone)?.kill('SIGKILL');
    made.push((await client.create(spec, { requestId: 'm-1' })).id);

    // A new replica, started with the current voters as its peers, is added: learner, catch-up, voter.
    const voters = ['a', 'b', 'c'].filter((id) => id !== gone);
    start('d', voters);
    expect((await members('add', 'd')).voters.sort()).toEqual([...voters, 'd'].sort());
    made.push((await client.create(spec, { requestId: 'm-2' })).id);
    // d holds what was committed before it joined and after.
    let applied = 0;
    for (let i = 0; i < 100 && applied === 0; i++) {
      const all = await Promise.all(
        [...voters, 'd'].map((replica) => client.status({ replica, digest: true })),
      );
      if (new Set(all.map((s) => s.digest)).size === 1) applied = all[0]?.digestApplied ?? 0;
      else await sleep(100);
    }
    expect(applied).toBeGreaterThan(0);
    expect((await client.list({ tenant: 'm' })).map((s) => s.id).sort()).toEqual(made.sort());
  }, 180_000);
});
