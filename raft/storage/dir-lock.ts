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
 * - Breaking a stale lock must not remove a live one that replaced it meanwhile. The breaker first hard-links
 *   `LOCK` to `LOCK.break-<stale nonce>`: a name only one process can create, and a step that changes
 *   nothing if `LOCK` is no longer the stale one (the new name is then dropped, harmlessly). Holding that
 *   name and having read the stale nonce through it, the breaker is the only process that may remove the
 *   stale `LOCK`, and `LOCK` cannot change until it does (its owner is dead), so the unlink is safe. Then
 *   everyone races for `LOCK` by `link` again. A breaker that crashes between those two steps leaves
 *   `LOCK.break-*` behind; the next process waits a bounded time, then says to remove both files.
 * - A lock from another host (a shared file system) cannot be checked and is always taken as held.
 */

import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { link, open, readdir, readFile, unlink } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { TrellisError } from '../../src/lib/errors.js';

export const lockFileName = 'LOCK';
/** Attempts at taking the lock while stale locks are broken (one attempt per step of another breaker). */
const acquireAttemptsMax = 50;
/** Wait between attempts while another process is breaking a stale lock. */
const breakWaitMs = 10;

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

/**
 * The lock file is not an owner record (damaged or written by hand), or a stale lock could not be broken
 * (a breaker crashed half way): refuse rather than guess; the message says which files to remove.
 */
export class DataDirLockInvalidError extends TrellisError {
  override readonly name = 'DataDirLockInvalidError';
  readonly code = 'DATA_DIR_LOCK_INVALID';
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
      typeof o.nonce === 'string' &&
      /^[0-9A-Za-z_-]{1,64}$/.test(o.nonce) // it names a file when the lock is broken
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
   * DataDirLockInvalidError when the lock file is not an owner record or a stale one cannot be broken. `fsync` makes the lock file
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
      let stale: LockOwner | undefined;
      for (let attempt = 0; attempt < acquireAttemptsMax; attempt++) {
        try {
          await link(tmp, path);
          if (fsync) await syncDir(dir);
          await removeDeadTemps(dir);
          return new DirLock(dir, owner);
        } catch (err) {
          if (errCode(err) !== 'EEXIST') throw err;
        }
        const current = await readDirLock(dir);
        if (current.state === 'free') continue; // Released meanwhile: try again.
        if (current.state === 'unreadable')
          throw new DataDirLockInvalidError(
            `lock file ${path} is not a lock record (${JSON.stringify(current.content)}); if no process uses ${dir}, remove it`,
          );
        if (current.state === 'held')
          throw new DataDirLockedError(dir, current.owner.pid, current.owner.host);
        stale = current.owner;
        if ((await breakStale(dir, current.owner)) === 'busy')
          await new Promise((r) => setTimeout(r, breakWaitMs));
      }
      throw new DataDirLockInvalidError(
        `the stale lock of process ${stale?.pid} in ${dir} could not be broken (${path}.break-${stale?.nonce} is left from a crash?); if no process uses ${dir}, remove both files`,
      );
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

/** A lock temp file: `LOCK.<pid>.<nonce>.tmp`. */
const lockTemp = /^LOCK\.(\d+)\.[0-9a-f]+\.tmp$/;

/** Lock temp files of processes that died between writing and removing them (never a live racer's). */
async function removeDeadTemps(dir: string): Promise<void> {
  for (const f of await readdir(dir)) {
    const pid = Number(lockTemp.exec(f)?.[1] ?? 0);
    if (pid > 0 && !pidRuns(pid)) await unlink(join(dir, f)).catch(() => undefined);
  }
}

/**
 * Removes the stale lock `stale` if `LOCK` still is it (see the module comment): 'busy' when another process
 * is breaking it, 'done' when the caller should race for the lock again.
 */
async function breakStale(dir: string, stale: LockOwner): Promise<'done' | 'busy'> {
  const path = join(dir, lockFileName);
  const claim = join(dir, `${lockFileName}.break-${stale.nonce}`);
  try {
    await link(path, claim);
  } catch (err) {
    if (errCode(err) === 'ENOENT') return 'done'; // Broken already.
    if (errCode(err) === 'EEXIST') return 'busy';
    throw err;
  }
  try {
    const got = parseOwner(await readFile(claim, 'utf8').catch(() => ''));
    // `LOCK` was replaced before our link: the claim is a second name of a live lock, dropped below.
    if (got?.nonce === stale.nonce) await unlink(path);
    return 'done';
  } finally {
    await unlink(claim).catch(() => undefined);
  }
}
