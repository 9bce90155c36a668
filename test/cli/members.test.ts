import { type ChildProcess, execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { connect, type NatsConnection } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { exitCodes } from '../../src/cli/errors.js';
import { kvCall, type ReplicaStatus, replicaStatus } from '../../src/cli/server.js';
import { OutcomeUnknownError } from '../../src/lib/errors.js';
import { cliMain as main, spawnReplica, stopReplica } from '../../src/testing/replica-process.js';
import { type RunningServer, startNats } from '../../src/testing/servers.js';

const run = promisify(execFile);
const cluster = 'mtest';

describe('trellis members - membership, transfer and snapshot catch-up with replica processes', () => {
  let nats: RunningServer;
  let nc: NatsConnection;
  let root: string;
  const procs = new Map<string, ChildProcess>();

  const start = (id: string, peers: readonly string[]): void => {
    procs.set(id, spawnReplica({ id, peers, natsUrl: nats.url, root, cluster, snapshotEntries: 25 }));
  };
  const stop = async (id: string): Promise<void> => {
    const child = procs.get(id);
    if (child !== undefined) await stopReplica(child);
  };
  const cli = async (...args: string[]): Promise<Record<string, unknown>> => {
    const { stdout } = await run(
      process.execPath,
      [main, ...args, '--nats', nats.url, '--cluster', cluster],
      {
        env: { ...process.env, TRELLIS_LOG_LEVEL: 'warn' },
      },
    );
    return JSON.parse(stdout) as Record<string, unknown>;
  };
  const status = async (id: string): Promise<ReplicaStatus> => {
    for (let i = 0; i < 100; i++) {
      const s = await replicaStatus(nc, cluster, id);
      if (s !== undefined) return s;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`${id} does not answer status`);
  };
  const waitFor = async (what: string, cond: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> => {
    const deadline = Date.now() + timeoutMs;
    while (!(await cond())) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  const put = async (key: string, value: string): Promise<void> => {
    const r = await kvCall(nc, cluster, { op: 'put', key, value }, 15_000);
    expect(r.ok, JSON.stringify(r)).toBe(true);
  };

  beforeAll(async () => {
    expect(existsSync(main), `${main} missing: run npm run build first`).toBe(true);
    nats = await startNats();
    root = await mkdtemp(join(tmpdir(), 'trellis-mtest-'));
    for (const id of ['a', 'b', 'c']) start(id, ['a', 'b', 'c']);
    nc = await connect({ servers: nats.url });
  });
  afterAll(async () => {
    for (const p of procs.values()) p.kill('SIGKILL');
    await nc.close();
    await nats.stop();
    await rm(root, { recursive: true, force: true });
  });

  it('trellis members - a replica restarted after the others compacted catches up by snapshot', async () => {
    // One follower stops; 120 writes make the others snapshot (every 25 entries) and drop their logs; the
    // follower restarts with a stale log, and the leader must send it a snapshot (it reports one installed).
    await put('first', '1');
    const leader = (await status('a')).leader;
    const victim = ['a', 'b', 'c'].find((id) => id !== leader) as string;
    await stop(victim);
    for (let i = 0; i < 120; i++) await put(`s${i}`, `${i}`);
    await waitFor('the leader compacted', async () => (await status(leader)).snapshotIndex >= 100);
    start(victim, ['a', 'b', 'c']);
    const target = (await status(leader)).commit;
    await waitFor('the restarted replica caught up', async () => (await status(victim)).applied >= target);
    expect((await status(victim)).snapshotsInstalled).toBeGreaterThanOrEqual(1);
    // Leadership moves to it, and it serves every write, linearizably, from its restored state.
    expect(await cli('members', 'transfer', victim)).toMatchObject({ ok: true });
    await waitFor('the transfer', async () => (await status(victim)).role === 'leader');
    for (const i of [0, 57, 119])
      expect(await kvCall(nc, cluster, { op: 'get', key: `s${i}` })).toMatchObject({
        ok: true,
        value: `${i}`,
        by: victim,
      });
  });

  it('trellis members - a replica is added and another removed while writes continue, losing nothing', async () => {
    // d starts knowing only the current voters; `members add d` adds it as a learner and promotes it once
    // caught up; then a follower is removed. A writer runs throughout; every acknowledged write is readable at
    // the end and `members list` shows the new membership with every member's status.
    start('d', ['a', 'b', 'c']);
    const acked: string[] = [];
    let writing = true;
    const writer = (async () => {
      for (let i = 0; writing; i++) {
        // A write that gave up with an unknown outcome is not acknowledged; the writer goes on.
        const r = await kvCall(nc, cluster, { op: 'put', key: `w${i}`, value: `${i}` }, 15_000).catch(
          (err: unknown) => {
            if (err instanceof OutcomeUnknownError) return undefined;
            throw err;
          },
        );
        if (r?.ok === true) acked.push(`w${i}`);
      }
    })();
    await waitFor('writes flowing', async () => acked.length > 5);
    const added = await cli('members', 'add', 'd');
    expect(added).toMatchObject({ ok: true, voters: ['a', 'b', 'c', 'd'], learners: [] });
    const leader = (await status('d')).leader;
    const removed = ['a', 'b', 'c'].find((id) => id !== leader) as string;
    const after = await cli('members', 'remove', removed);
    expect(after.voters).toEqual(['a', 'b', 'c', 'd'].filter((id) => id !== removed));
    const mark = acked.length;
    await waitFor('writes continue after the changes', async () => acked.length > mark + 10);
    writing = false;
    await writer;
    // The removed replica notices, says so, and stops by itself with the "removed" exit code (no SIGTERM).
    const gone = procs.get(removed);
    await waitFor('the removed replica to exit', async () => gone?.exitCode !== null);
    expect(gone?.exitCode).toBe(exitCodes.removed);
    for (const key of acked) {
      const r = await kvCall(nc, cluster, { op: 'get', key }, 10_000);
      expect(r).toMatchObject({ ok: true, value: key.slice(1) });
    }
    const list = await cli('members', 'list');
    expect(list.voters).toEqual(after.voters);
    const replicas = list.replicas as ReplicaStatus[];
    expect(replicas.map((r) => r.id).sort()).toEqual(after.voters);
    for (const r of replicas) expect(r.voters).toEqual(after.voters);
    // A refused change is a clear error, not a retry loop: d is already a voter. One line on stderr.
    await expect(cli('members', 'add', 'd')).rejects.toMatchObject({
      code: exitCodes.failed,
      stdout: '',
      stderr: expect.stringMatching(/^error: .*already a voter \(RAFT_MEMBERSHIP_CHANGE\)\n$/),
    });
    // Leadership "moved" to the replica that already leads: nothing to do, and it says ok.
    const now = (await status(list.leader as string)).leader;
    expect(await cli('members', 'transfer', now)).toMatchObject({ ok: true, leader: now });
    expect((await status(now)).role).toBe('leader');
  });
});
