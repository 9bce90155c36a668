/**
 * One process per data directory: an exclusive lock file `<dir>/LOCK` holding its owner (pid, host, the
 * process's start time and a random nonce), taken by FileStorage.open and released by close.
 *
 * - Taking it is one atomic step: the owner record is written to a private temp file, then hard-linked to
 *   `LOCK`. `link` fails if `LOCK` exists, so of two processes racing exactly one wins, and `LOCK` is never
 *   seen half written (as it could be with `open('wx')` followed by a write).
 * - A lock is stale when its pid no longer runs, or runs but started at another time than the owner did (the
 *   pid was reused, as in a container whose server is always pid 1). Start times come from /proc; without
 *   /proc only the pid is checked, and a reused pid then keeps the directory locked (the safe side).
 * - Breaking a stale lock renames it to a private name first and checks that what it moved is the stale
 *   owner (by nonce). If another process took the lock in between, the move is undone and the newcomer wins.
 *   (What remains is a window of a few microseconds in which a third process could link its own lock while
 *   the moved one is being put back; only when a stale lock is broken by two processes at once.)
 * - A lock from another host (a shared file system) cannot be checked and is always taken as held.
 */

import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { link, open, readFile, rename, unlink } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { TrellisError } from '../../src/lib/errors.js';

export const lockFileName = 'LOCK';
/** Attempts at taking the lock when stale locks keep appearing (each attempt breaks at most one). */
const acquireAttemptsMax = 8;

/** Another process holds the data directory: two replicas must never write one WAL. */
export class DataDirLockedError extends TrellisError {
  override readonly name = 'DataDirLockedError';
  readonly code = 'DATA_DIR_LOCKED';
  constructor(
    readonly dir: string,
    readonly holderPid: number,
    readonly holderHost: string,
  ) {
    const where = holderHost === hostname() ? '' : ` on host ${holderHost}`;
    const who = holderPid === process.pid && where === '' ? 'this process' : `process ${holderPid}${where}`;
    super(`data directory ${dir} is in use by ${who} (lock file ${join(dir, lockFileName)})`, {
      details: { dir, holderPid, holderHost },
    });
  }
}

/** The lock file cannot be read as an owner record (damaged or written by hand): refuse rather than guess. */
export class DataDirLockUnreadableError extends TrellisError {
  override readonly name = 'DataDirLockUnreadableError';
  readonly code = 'DATA_DIR_LOCK_UNREADABLE';
}

export interface LockOwner {
  readonly pid: number;
  readonly host: string;
  /** The process's start time in clock ticks since boot (/proc/<pid>/stat field 22), or null without /proc. */
  readonly startTicks: string | null;
  readonly nonce: string;
}

export type LockState =
  | { readonly state: 'free' }
  | { readonly state: 'held'; readonly owner: LockOwner }
  | { readonly state: 'stale'; readonly owner: LockOwner; readonly why: string }
  | { readonly state: 'unreadable'; readonly content: string };

/** The start time of a running process, or null when it does not run or /proc cannot say. */
export function processStartTicks(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces and parentheses: count fields after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return fields[19] ?? null; // field 22; fields[0] is field 3
  } catch {
    return null;
  }
}

function pidRuns(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it runs, as another user.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function parseOwner(text: string): LockOwner | undefined {
  try {
    const o = JSON.parse(text) as Partial<LockOwner>;
    if (
      typeof o.pid === 'number' &&
      Number.isSafeInteger(o.pid) &&
      o.pid > 0 &&
      typeof o.host === 'string' &&
      (typeof o.startTicks === 'string' || o.startTicks === null) &&
      typeof o.nonce === 'string'
    )
      return { pid: o.pid, host: o.host, startTicks: o.startTicks, nonce: o.nonce };
  } catch {
    // Not JSON: unreadable.
  }
  return undefined;
}

/** Whether `owner` still holds its lock, judged from this host. */
function judge(owner: LockOwner): LockState {
  if (owner.host !== hostname()) return { state: 'held', owner };
  if (!pidRuns(owner.pid)) return { state: 'stale', owner, why: `process ${owner.pid} no longer runs` };
  const now = processStartTicks(owner.pid);
  if (owner.startTicks !== null && now !== null && now !== owner.startTicks)
    return { state: 'stale', owner, why: `pid ${owner.pid} now belongs to a later process` };
  return { state: 'held', owner };
}

/** Reads and judges the lock of `dir` without touching it (for `trellis data check`). */
export async function readDirLock(dir: string): Promise<LockState> {
  let text: string;
  try {
    text = await readFile(join(dir, lockFileName), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { state: 'free' };
    throw err;
  }
  const owner = parseOwner(text);
  return owner === undefined ? { state: 'unreadable', content: text.slice(0, 200) } : judge(owner);
}

async function syncDir(dir: string): Promise<void> {
  const h = await open(dir, 'r');
  try {
    await h.sync();
  } finally {
    await h.close();
  }
}

const errCode = (err: unknown): string | undefined => (err as NodeJS.ErrnoException).code;

/** An exclusive lock on a data directory, held until `release`. */
export class DirLock {
  readonly #dir: string;
  readonly #owner: LockOwner;
  #released = false;

  private constructor(dir: string, owner: LockOwner) {
    this.#dir = dir;
    this.#owner = owner;
  }

  get owner(): LockOwner {
    return this.#owner;
  }

  /**
   * Takes the lock of `dir` (which must exist). Throws DataDirLockedError when a live process holds it,
   * DataDirLockUnreadableError when the lock file is not an owner record. `fsync` makes the lock file
   * durable before it counts (off only where the storage itself runs without fsync).
   */
  static async acquire(dir: string, options: { fsync?: boolean } = {}): Promise<DirLock> {
    const fsync = options.fsync ?? true;
    const owner: LockOwner = {
      pid: process.pid,
      host: hostname(),
      startTicks: processStartTicks(process.pid),
      nonce: randomBytes(12).toString('hex'),
    };
    const path = join(dir, lockFileName);
    const tmp = join(dir, `${lockFileName}.${owner.pid}.${owner.nonce}.tmp`);
    const h = await open(tmp, 'wx', 0o644);
    try {
      await h.writeFile(`${JSON.stringify(owner)}\n`);
      if (fsync) await h.sync();
    } finally {
      await h.close();
    }
    try {
      for (let attempt = 0; attempt < acquireAttemptsMax; attempt++) {
        try {
          await link(tmp, path);
          if (fsync) await syncDir(dir);
          return new DirLock(dir, owner);
        } catch (err) {
          if (errCode(err) !== 'EEXIST') throw err;
        }
        const current = await readDirLock(dir);
        if (current.state === 'free') continue; // Released meanwhile: try again.
        if (current.state === 'unreadable')
          throw new DataDirLockUnreadableError(
            `lock file ${path} is not a lock record (${JSON.stringify(current.content)}); if no process uses ${dir}, remove it`,
          );
        if (current.state === 'held')
          throw new DataDirLockedError(dir, current.owner.pid, current.owner.host);
        await breakStale(dir, current.owner, owner.nonce);
      }
      throw new DataDirLockedError(dir, 0, hostname());
    } finally {
      await unlink(tmp).catch(() => undefined);
    }
  }

  /** Removes the lock file if it is still this owner's. Idempotent. */
  async release(): Promise<void> {
    if (this.#released) return;
    this.#released = true;
    const path = join(this.#dir, lockFileName);
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch {
      return; // Gone already (removed by hand): nothing of ours to remove.
    }
    if (parseOwner(text)?.nonce === this.#owner.nonce) await unlink(path).catch(() => undefined);
  }
}

/**
 * Moves a stale lock out of the way. The rename is atomic, so of two processes breaking the same stale lock
 * one moves it and the other finds `LOCK` gone; what was moved is checked to be the stale owner's.
 */
async function breakStale(dir: string, stale: LockOwner, myNonce: string): Promise<void> {
  const path = join(dir, lockFileName);
  const moved = join(dir, `${lockFileName}.stale.${myNonce}`);
  try {
    await rename(path, moved);
  } catch (err) {
    if (errCode(err) === 'ENOENT') return; // Someone else broke it.
    throw err;
  }
  const text = await readFile(moved, 'utf8').catch(() => '');
  const got = parseOwner(text);
  if (got?.nonce !== stale.nonce) {
    // A live owner took the lock between our read and the rename: give it back and yield to it.
    await link(moved, path).catch(() => undefined);
    await unlink(moved).catch(() => undefined);
    throw new DataDirLockedError(dir, got?.pid ?? 0, got?.host ?? hostname());
  }
  await unlink(moved);
}
