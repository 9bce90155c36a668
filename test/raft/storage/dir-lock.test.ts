import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import {
  DataDirLockedError,
  DataDirLockInvalidError,
  DirLock,
  lockFileName,
  processStartTicks,
  readDirLock,
} from '../../../raft/storage/dir-lock.js';
import { FileStorage } from '../../../raft/storage/file.js';
import { RaftGroupLog } from '../../../scheduler/raft-group.js';

const holderScript = fileURLToPath(new URL('./lock-holder.ts', import.meta.url));
const dirs: string[] = [];
const children: ChildProcess[] = [];
async function freshDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'trellis-lock-'));
  dirs.push(d);
  return d;
}
afterEach(async () => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

/** Starts a process that opens FileStorage on `dir`; resolves with it and the line it printed. */
function holder(dir: string): { child: ChildProcess; line: Promise<string>; exit: Promise<number | null> } {
  const child = spawn(process.execPath, ['--import', 'tsx', holderScript, dir], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  children.push(child);
  const line = new Promise<string>((resolve) => {
    let out = '';
    child.stdout?.on('data', (b: Buffer) => {
      out += b.toString();
      if (out.includes('\n')) resolve(out.trim());
    });
    child.once('exit', () => resolve(out.trim()));
  });
  const exit = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, line, exit };
}

/** A pid that ran and has exited (so no process holds it now, barring reuse within the test). */
async function deadPid(): Promise<number> {
  const c = spawn(process.execPath, ['-e', '']);
  await new Promise((r) => c.once('exit', r));
  return c.pid ?? 0;
}

describe('raft/storage/dir-lock', () => {
  it('raft/storage/dir-lock - a second process cannot open a data dir another process holds, and is told its pid', async () => {
    // A real holder process opens the storage; this process's open is refused naming the holder's pid. Once
    // the holder closes (stdin closed), the lock file is gone and the open succeeds.
    const dir = await freshDir();
    const h = holder(dir);
    expect(await h.line).toBe(`locked ${h.child.pid}`);
    const err = await FileStorage.open(dir).catch((x: unknown) => x);
    expect(err).toBeInstanceOf(DataDirLockedError);
    expect(err).toMatchObject({ code: 'DATA_DIR_LOCKED', holderPid: h.child.pid });
    expect((err as Error).message).toContain(`process ${h.child.pid}`);
    h.child.stdin?.end();
    expect(await h.exit).toBe(0);
    expect(await readdir(dir)).not.toContain(lockFileName);
    const s = await FileStorage.open(dir);
    await s.close();
  });

  it('raft/storage/dir-lock - a holder killed with SIGKILL leaves a stale lock that the next open takes over', async () => {
    // Also a lock temp file of a process that died before removing it: the next holder removes it.
    const dir = await freshDir();
    const deadTemp = `${lockFileName}.${await deadPid()}.0123abcd.tmp`;
    await writeFile(join(dir, deadTemp), '{}');
    const h = holder(dir);
    expect(await h.line).toMatch(/^locked /);
    h.child.kill('SIGKILL');
    await h.exit;
    expect(await readDirLock(dir)).toMatchObject({ state: 'stale', owner: { pid: h.child.pid } });
    const s = await FileStorage.open(dir);
    expect(await readDirLock(dir)).toMatchObject({ state: 'held', owner: { pid: process.pid } });
    expect(await readdir(dir)).not.toContain(deadTemp);
    await s.close();
  });

  it('raft/storage/dir-lock - two processes starting at once on one dir: exactly one gets it', async () => {
    const dir = await freshDir();
    const racers = [holder(dir), holder(dir)];
    const lines = await Promise.all(racers.map((r) => r.line));
    const winners = lines.filter((l) => l.startsWith('locked '));
    expect(winners, lines.join(' | ')).toHaveLength(1);
    const winnerPid = (winners[0] ?? '').split(' ')[1];
    expect(lines.filter((l) => !l.startsWith('locked '))).toEqual([`refused DATA_DIR_LOCKED ${winnerPid}`]);
    for (const r of racers) r.child.stdin?.end();
    await Promise.all(racers.map((r) => r.exit));
    expect((await readdir(dir)).filter((f) => f.startsWith(lockFileName))).toEqual([]);
  });

  it('raft/storage/dir-lock - of eight acquisitions interleaved at every await exactly one wins, with or without a stale lock', async () => {
    // In one process the racers interleave at each file operation, which exercises the same atomic steps as
    // separate processes would (link for a fresh lock; rename-and-check for breaking a dead process's lock)
    // without paying for eight process starts. The losers see the winner as the holder.
    for (const stale of [false, true]) {
      const dir = await freshDir();
      if (stale) {
        const owner = { pid: await deadPid(), host: hostname(), startTicks: null, nonce: 'dead' };
        await writeFile(join(dir, lockFileName), JSON.stringify(owner));
      }
      const results = await Promise.allSettled(Array.from({ length: 8 }, () => DirLock.acquire(dir)));
      const won = results.filter((r) => r.status === 'fulfilled');
      expect(won).toHaveLength(1);
      for (const r of results)
        if (r.status === 'rejected') expect(r.reason).toBeInstanceOf(DataDirLockedError);
      const lock = (won[0] as PromiseFulfilledResult<DirLock>).value;
      expect(await readDirLock(dir)).toMatchObject({ state: 'held', owner: { nonce: lock.owner.nonce } });
      await lock.release();
      expect(await readdir(dir)).toEqual([]);
    }
  });

  it('raft/storage/dir-lock - a lock whose pid now belongs to a later process is stale', async () => {
    // Pid reuse (a container's server is always pid 1): the pid runs, but it started at another time than
    // the owner recorded, so the lock is taken over.
    const dir = await freshDir();
    const mine = processStartTicks(process.pid);
    expect(mine, 'this test needs /proc').not.toBeNull();
    const owner = { pid: process.pid, host: hostname(), startTicks: `${mine}0`, nonce: 'old' };
    await writeFile(join(dir, lockFileName), JSON.stringify(owner));
    expect(await readDirLock(dir)).toMatchObject({
      state: 'stale',
      why: expect.stringMatching(/later process/),
    });
    const lock = await DirLock.acquire(dir);
    expect(lock.owner.startTicks).toBe(mine);
    await lock.release();
  });

  it('raft/storage/dir-lock - the same process opening a data dir twice is refused; close releases it', async () => {
    const dir = await freshDir();
    const s = await FileStorage.open(dir);
    const err = await FileStorage.open(dir).catch((x: unknown) => x);
    expect(err).toBeInstanceOf(DataDirLockedError);
    expect((err as Error).message).toContain('this process');
    await s.close();
    expect(await readDirLock(dir)).toEqual({ state: 'free' });
    const again = await FileStorage.open(dir);
    await again.close();
  });

  it('raft/storage/dir-lock - a lock file that is not a lock record is refused with what it holds', async () => {
    const dir = await freshDir();
    await writeFile(join(dir, lockFileName), 'garbage');
    const err = await DirLock.acquire(dir).catch((x: unknown) => x);
    expect(err).toBeInstanceOf(DataDirLockInvalidError);
    expect((err as Error).message).toContain('"garbage"');
    expect(await readFile(join(dir, lockFileName), 'utf8')).toBe('garbage');
    expect((await readdir(dir)).sort()).toEqual([lockFileName]);
  });

  it('raft/storage/dir-lock - RaftGroupLog.open on a directory already open is refused', async () => {
    // Every user of a data dir goes through FileStorage.open, so an embedded group gets the lock too.
    const dir = await freshDir();
    const log = await RaftGroupLog.open({ dir, replicas: 1, fsync: false });
    await expect(RaftGroupLog.open({ dir, replicas: 1, fsync: false })).rejects.toBeInstanceOf(
      DataDirLockedError,
    );
    await log.close();
    const again = await RaftGroupLog.open({ dir, replicas: 1, fsync: false });
    await again.close();
  });
});
