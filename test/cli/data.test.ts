import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { cp, mkdtemp, readdir, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { connect } from 'nats';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Entry } from '../../raft/core/types.js';
import { readDirLock } from '../../raft/storage/dir-lock.js';
import { FileStorage } from '../../raft/storage/file.js';
import { kvCall, type ReplicaStatus, replicaStatus } from '../../src/cli/server.js';
import { cliMain, spawnReplica, stopReplica } from '../../src/testing/replica-process.js';
import { type RunningServer, startNats } from '../../src/testing/servers.js';

const fixture = fileURLToPath(new URL('../raft/storage/fixtures/wal-v1', import.meta.url));
/** How long a CLI run may take before the test calls it a hang (generous: 2 shared cores). */
const cliRunMsMax = 30_000;
const dirs: string[] = [];
const children: ChildProcess[] = [];
async function freshDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'trellis-data-'));
  dirs.push(d);
  return d;
}
afterEach(async () => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Starts the built CLI; `done` resolves with its exit code and output, or a code of null if it hung. */
function start(args: readonly string[]): { child: ChildProcess; done: Promise<Run> } {
  const child = spawn(process.execPath, [cliMain, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, TRELLIS_LOG_LEVEL: 'warn', TRELLIS_DEBUG: '' },
  });
  children.push(child);
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (b: Buffer) => {
    stdout += b.toString();
  });
  child.stderr?.on('data', (b: Buffer) => {
    stderr += b.toString();
  });
  const done = new Promise<Run>((resolve) => {
    const hang = setTimeout(() => {
      child.kill('SIGKILL');
      resolve({ code: null, stdout, stderr: `${stderr}[hung]` });
    }, cliRunMsMax);
    child.once('close', (code) => {
      clearTimeout(hang);
      resolve({ code, stdout, stderr });
    });
  });
  return { child, done };
}
const run = (args: readonly string[]): Promise<Run> => start(args).done;

/** Asserts the CLI's failure shape: exactly one stderr line `error: … (CODE)`, no stack. */
function oneErrorLine(r: Run, code: string): string {
  const lines = r.stderr.trimEnd().split('\n');
  expect(lines, r.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(new RegExp(`^error: .+ \\(${code}\\)$`));
  expect(r.stderr).not.toMatch(/\n\s+at /);
  return lines[0] ?? '';
}

/** A data dir whose only segment has a record in the middle damaged (an intact one after it). */
async function corruptDir(): Promise<{ dir: string; wal: string; bytes: Buffer }> {
  const dir = await freshDir();
  const s = await FileStorage.open(dir);
  const e = (index: number): Entry => ({ index, term: 1, type: 'normal', data: new Uint8Array(20) });
  for (let i = 1; i <= 6; i++)
    await s.save({ entries: [e(i)], hardState: { term: 1, vote: 'a', commit: i } }, true);
  await s.close();
  const wal = join(dir, (await readdir(dir)).find((f) => f.endsWith('.log')) ?? '');
  const bytes = await readFile(wal);
  for (let i = 60; i < 64; i++) bytes[i] = (bytes[i] ?? 0) ^ 0x5a;
  await writeFile(wal, bytes);
  return { dir, wal, bytes };
}

beforeAll(() => {
  // The CLI is run as built (`npm run build`, part of the test command); fail clearly if it is not.
  expect(existsSync(cliMain), `${cliMain} missing: run npm run build first`).toBe(true);
});

describe('trellis data check', () => {
  it('trellis data check - a healthy directory: snapshot, segments, log and hard state, then ok and exit 0', async () => {
    // The fixture written by the previous release: a snapshot at 30, two segments, entries to 50 in term 2.
    const dir = await freshDir();
    await cp(fixture, dir, { recursive: true });
    const r = await run(['data', 'check', dir]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines).toEqual([
      `data directory: ${dir}`,
      'lock: free',
      'snapshot: index 30, term 1, voters r0,r1,r2, learners - (snap-000000000000001e.snap, 28 bytes)',
      'segment wal-0000000000000002.log: 987 bytes, 37 intact records, entries up to 36',
      'segment wal-0000000000000003.log: 799 bytes, 31 intact records, entries up to 50',
      'log: entries 31..50, last term 2',
      'hard state: term 2, vote r1, commit 49',
      'ok',
    ]);
  });

  it('trellis data check - a torn tail and a leftover temp file are reported as what a crash leaves, exit 0, nothing changed', async () => {
    const dir = await freshDir();
    await cp(fixture, dir, { recursive: true });
    const wal = join(dir, 'wal-0000000000000003.log');
    await truncate(wal, 790);
    await writeFile(join(dir, 'snap-0000000000000032.snap.tmp'), 'half');
    const r = await run(['data', 'check', dir]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(
      'torn tail: wal-0000000000000003.log from byte 784, 6 bytes (record header cut short): a write a crash left unfinished',
    );
    expect(r.stdout).toContain('leftover: snap-0000000000000032.snap.tmp');
    expect(r.stdout).toContain('log: entries 31..50, last term 2');
    expect(r.stdout).toContain('hard state: term 2, vote r1, commit 48');
    expect(r.stdout.trimEnd().split('\n').at(-1)).toBe('ok');
    expect((await stat(wal)).size).toBe(790);
    expect(await readdir(dir)).toContain('snap-0000000000000032.snap.tmp');
  });

  it('trellis data check - damage says exactly what is wrong, one line per problem, and exits 1 without changing anything', async () => {
    // A damaged record mid-segment and a damaged snapshot file: two problem lines naming file and offset.
    const { dir, wal, bytes } = await corruptDir();
    await writeFile(join(dir, 'snap-0000000000000003.snap'), 'not a snapshot');
    const r = await run(['data', 'check', dir]);
    expect(r.code).toBe(1);
    const problems = r.stdout.split('\n').filter((l) => l.startsWith('problem: '));
    expect(problems).toEqual([
      `problem: WAL corrupt in ${join(dir, 'snap-0000000000000003.snap')} at byte 0: snapshot file has a bad magic number`,
      expect.stringMatching(
        new RegExp(
          `^problem: WAL corrupt in ${wal} at byte \\d+: .*an intact record follows at byte \\d+: not a torn write$`,
        ),
      ),
    ]);
    expect(oneErrorLine(r, 'WAL_CORRUPT')).toContain('2 problems');
    expect(await readFile(wal)).toEqual(bytes);
  });

  it('trellis data check - a directory that does not exist is one usage error line, exit 2', async () => {
    const r = await run(['data', 'check', join(await freshDir(), 'nope')]);
    expect(r.code).toBe(2);
    expect(oneErrorLine(r, 'USAGE')).toContain('is not a directory');
  });
});

describe('trellis server - data directory safety', () => {
  let nats: RunningServer;
  beforeAll(async () => {
    nats = await startNats();
  });
  afterAll(async () => {
    await nats.stop();
  });
  const serverArgs = (id: string, data: string): string[] => [
    'server',
    '--id',
    id,
    '--peers',
    'a,b,c',
    '--data',
    data,
    '--nats',
    nats.url,
    '--cluster',
    'datatest',
    '--state',
    'kv',
  ];

  it('trellis server - on a corrupt data directory exits 1 with one line naming the WalCorruptError', async () => {
    // Issue 11's case: the replica must refuse to start, not restart with an older term and commit.
    const { dir, wal, bytes } = await corruptDir();
    const r = await run(serverArgs('a', dir));
    expect(r.code).toBe(1);
    const line = oneErrorLine(r, 'WAL_CORRUPT');
    expect(line).toContain(`WAL corrupt in ${wal} at byte`);
    expect(await readFile(wal)).toEqual(bytes);
    expect(await readDirLock(dir)).toEqual({ state: 'free' });
  });

  it('trellis server - a second server on the same --data exits 1 naming the holder pid; the first releases the lock on SIGTERM', async () => {
    const dir = await freshDir();
    const first = start(serverArgs('a', dir));
    // Waits (bounded) until the first server holds the directory.
    for (let i = 0; i < 600; i++) {
      const lock = await readDirLock(dir);
      if (lock.state === 'held' && lock.owner.pid === first.child.pid) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(await readDirLock(dir)).toMatchObject({ state: 'held', owner: { pid: first.child.pid } });
    const second = await run(serverArgs('b', dir));
    expect(second.code).toBe(1);
    expect(oneErrorLine(second, 'DATA_DIR_LOCKED')).toContain(`in use by process ${first.child.pid}`);
    expect(first.child.exitCode).toBeNull();
    first.child.kill('SIGTERM');
    const stopped = await first.done;
    expect(stopped.code, stopped.stderr).toBe(0);
    expect(await readDirLock(dir), stopped.stderr).toEqual({ state: 'free' });
  });

  it('trellis server - the operator recovery of docs/operations.md: a corrupt replica is removed, wiped, re-added and catches up by snapshot', async () => {
    // Three replicas (snapshot every 25 entries). A follower stops and its WAL is damaged mid-file: data check
    // and the server both refuse it. The procedure: remove it from the group, wipe its directory, start it
    // as a joining replica, add it back. It must end a voter holding every acknowledged write, received by
    // InstallSnapshot, and serve them as leader.
    const root = await freshDir();
    const cluster = 'recovery';
    const ids = ['a', 'b', 'c'];
    const procs = new Map<string, ChildProcess>();
    const launch = (id: string, peers: readonly string[]): void => {
      const child = spawnReplica({ id, peers, natsUrl: nats.url, root, cluster, snapshotEntries: 25 });
      children.push(child);
      procs.set(id, child);
    };
    for (const id of ids) launch(id, ids);
    const nc = await connect({ servers: nats.url });
    try {
      const put = async (key: string): Promise<void> => {
        const r = await kvCall(nc, cluster, { op: 'put', key, value: key }, 15_000);
        expect(r.ok, JSON.stringify(r)).toBe(true);
      };
      const status = async (id: string): Promise<ReplicaStatus> => {
        for (let i = 0; i < 400; i++) {
          const st = await replicaStatus(nc, cluster, id);
          if (st !== undefined && st.leader !== '') return st;
          await new Promise((r) => setTimeout(r, 50));
        }
        throw new Error(`${id} does not answer status with a leader`);
      };
      const members = async (...args: string[]): Promise<void> => {
        const r = await run(['members', ...args, '--nats', nats.url, '--cluster', cluster]);
        expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(0);
      };
      for (let i = 0; i < 40; i++) await put(`k${i}`);
      const leader = (await status('a')).leader;
      const victim = ids.find((id) => id !== leader) as string;
      const others = ids.filter((id) => id !== victim);
      await stopReplica(procs.get(victim) as ChildProcess);
      const vdir = join(root, victim);
      const wal = join(vdir, (await readdir(vdir)).filter((f) => f.endsWith('.log')).sort()[0] ?? '');
      const bytes = await readFile(wal);
      for (let i = 60; i < 64; i++) bytes[i] = (bytes[i] ?? 0) ^ 0x5a;
      await writeFile(wal, bytes);

      expect((await run(['data', 'check', vdir])).code).toBe(1);
      const refused = await run(serverArgs(victim, vdir));
      expect(refused.code).toBe(1);
      oneErrorLine(refused, 'WAL_CORRUPT');

      await members('remove', victim);
      for (let i = 40; i < 100; i++) await put(`k${i}`);
      await rm(vdir, { recursive: true, force: true });
      launch(victim, others);
      await members('add', victim);
      const st = await status(leader);
      expect([...st.voters].sort()).toEqual(ids);
      for (let i = 0; i < 400 && (await status(victim)).applied < st.commit; i++)
        await new Promise((r) => setTimeout(r, 50));
      const rebuilt = await status(victim);
      expect(rebuilt.applied).toBeGreaterThanOrEqual(st.commit);
      expect(rebuilt.snapshotsInstalled).toBeGreaterThanOrEqual(1);
      await members('transfer', victim);
      for (let i = 0; i < 400 && (await status(victim)).role !== 'leader'; i++)
        await new Promise((r) => setTimeout(r, 50));
      for (const i of [0, 39, 40, 99])
        expect(await kvCall(nc, cluster, { op: 'get', key: `k${i}` }, 10_000)).toMatchObject({
          ok: true,
          value: `k${i}`,
          by: victim,
        });
    } finally {
      await nc.close();
      await Promise.all([...procs.values()].map((p) => stopReplica(p)));
    }
  });
});
