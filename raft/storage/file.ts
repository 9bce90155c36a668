/**
 * FileStorage: the durable Raft log. A write-ahead log in segments plus atomically written snapshot files.
 *
 * Layout of `dir`:
 * - `wal-<seq:16 hex>.log` — segments, written in order; a new one starts past `segmentBytesMax`, and its
 *   first record repeats the hard state so older segments can be deleted once compacted.
 * - `snap-<index:16 hex>.snap` — snapshots, written as `*.tmp`, fsynced, renamed, then the directory fsynced.
 *   A leftover `.tmp` (a crash mid-write) is ignored and removed on open.
 *
 * - `LOCK` — the owner of the directory (dir-lock.ts): one process per data directory, taken on open.
 *
 * A record is `[u32 length][u32 crc32c][u8 type][payload]` (wal-record.ts; the CRC covers type and payload).
 * Types: entry, hard state, snapshot marker (the log before it was replaced by a snapshot). Payloads are msgpack.
 * Appending an entry at or below the last index replaces the suffix from there, in memory and on replay alike.
 *
 * Recovery replays every segment. A torn tail — damage in the last segment with no intact record after it
 * (wal-record.ts explains how that is decided) — is the unfinished write of a crash: it is truncated away (it
 * was never acknowledged, because acknowledgement waits for fsync). Any other damage, a damaged snapshot file,
 * a record of the wrong shape, or a hard state that moves backwards is corruption: opening fails with
 * `WalCorruptError` naming file, offset and what is wrong, and nothing in the directory is changed.
 *
 * Reads are served from memory (the live log since the last compaction), as the core's contract requires.
 * Concurrent `save` calls are written in order and share one fsync (group commit).
 */
import { closeSync, fsyncSync, openSync } from 'node:fs';
import { type FileHandle, mkdir, open, readdir, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { decode, Encoder, encode } from '@msgpack/msgpack';
import { assert } from '../../src/lib/assert.js';
import { TrellisError } from '../../src/lib/errors.js';
import type { ConfState, Entry, EntryType, HardState, Snapshot, SnapshotMeta } from '../core/types.js';
import { emptyConfState, emptyHardState } from '../core/types.js';
import { crc32c } from './crc32c.js';
import { DirLock, type LockState, readDirLock } from './dir-lock.js';
import { entriesIn, termAt } from './log-slice.js';
import type { Storage, StorageUpdate } from './storage.js';
import {
  isTornTail,
  recEntry,
  recHardState,
  encodeRecord as record,
  recordBytesMax,
  encodeRecordWithTail as recordWithTail,
  recSnapshotMarker,
  type ScannedRecord,
  scanSegment,
} from './wal-record.js';

export { recordBytesMax };
/** A segment is closed and a new one started once it grows past this. */
export const segmentBytesMaxDefault = 64 << 20;
/** Snapshot files kept besides the newest. */
const snapshotsKeptOld = 1;
const snapMagic = 0x54524c53; // "TRLS"
const segmentName = /^wal-[0-9a-f]{16}\.log$/;

/**
 * The data directory holds damage a crash cannot explain (not a torn tail): the log cannot be trusted, and
 * nothing is opened or changed. The operator's way out is in docs/operations.md (wipe and catch up).
 */
export class WalCorruptError extends TrellisError {
  override readonly name = 'WalCorruptError';
  readonly code = 'WAL_CORRUPT';
  constructor(
    readonly file: string,
    readonly offset: number,
    readonly reason: string,
  ) {
    super(`WAL corrupt in ${file} at byte ${offset}: ${reason}`, { details: { file, offset, reason } });
  }
}

/** The storage was used after close. */
export class StorageClosedError extends TrellisError {
  override readonly name = 'StorageClosedError';
  readonly code = 'RAFT_STORAGE_CLOSED';
}

/** What `FileStorage.inspect` found in a data directory, read-only. */
export interface WalReport {
  readonly dir: string;
  readonly lock: LockState;
  readonly segments: readonly SegmentReport[];
  /** Every snapshot file, newest last; `ok` false when its checksum or shape fails. */
  readonly snapshotFiles: readonly { file: string; bytes: number; ok: boolean }[];
  /** The snapshot in use (index 0 when none). */
  readonly snapshot: SnapshotMeta;
  readonly hardState: HardState;
  readonly firstIndex: number;
  readonly lastIndex: number;
  readonly lastTerm: number;
  /** The unfinished write of a crash, which the next open cuts away. */
  readonly tornTail: { file: string; offset: number; bytes: number; reason: string } | undefined;
  /** Temp files of interrupted snapshot writes, which the next open removes. */
  readonly leftoverTmp: readonly string[];
  /** Empty when the directory opens; otherwise one error per problem found. */
  readonly problems: readonly WalCorruptError[];
}

export interface SegmentReport {
  readonly file: string;
  readonly bytes: number;
  readonly records: number;
  /** Highest entry index written in the segment (0 when it holds none). */
  readonly maxIndex: number;
}

export interface FileStorageOptions {
  readonly segmentBytesMax?: number;
  /** fsync when `save` is asked to; off only for benchmarks that say so. Default true. */
  readonly fsync?: boolean;
  /** Called with the duration of each write-ahead-log fdatasync, in milliseconds (the fsync metric). */
  readonly onFsyncMs?: (ms: number) => void;
}

const entryTypes: readonly EntryType[] = ['normal', 'conf'];
const hex16 = (n: number): string => n.toString(16).padStart(16, '0');

/** One encoder for WAL records: `record` copies its payload at once, so the shared buffer is never kept. */
const recordEncoder = new Encoder();
const recordBody = (value: unknown): Uint8Array => recordEncoder.encodeSharedRef(value);

function byteLength(parts: readonly Uint8Array[]): number {
  let n = 0;
  for (const p of parts) n += p.length;
  return n;
}

/** An entry's WAL record, `[term, index, type, data]`, as pieces that leave its data uncopied. */
function entryRecord(e: Entry): [Uint8Array, Uint8Array] {
  return recordWithTail(recEntry, recordBody([e.term, e.index, entryTypes.indexOf(e.type)]), e.data);
}

/**
 * Writes `parts` (`bytes` in all) at `position` with writev, resuming after a short write: no copy into one
 * buffer first (a batch of entries is megabytes, and a fresh buffer that size is page faults and GC).
 */
async function writeAll(
  handle: FileHandle,
  parts: readonly Uint8Array[],
  bytes: number,
  position: number,
): Promise<void> {
  let rest = parts.filter((p) => p.length > 0);
  let at = position;
  let left = bytes;
  while (left > 0) {
    const { bytesWritten } = await handle.writev(rest as Uint8Array[], at);
    assert(bytesWritten > 0, 'writev makes progress', { left, at });
    at += bytesWritten;
    left -= bytesWritten;
    // Drop the pieces written; cut into the first piece written in part.
    let skip = bytesWritten;
    let i = 0;
    while (i < rest.length && skip >= (rest[i] as Uint8Array).length)
      skip -= (rest[i++] as Uint8Array).length;
    rest = rest.slice(i);
    if (skip > 0) rest[0] = (rest[0] as Uint8Array).subarray(skip);
  }
}

export class FileStorage implements Storage {
  readonly #dir: string;
  readonly #segmentBytesMax: number;
  readonly #fsync: boolean;
  readonly #onFsyncMs: ((ms: number) => void) | undefined;
  #hardState: HardState = emptyHardState;
  /** The hard state of the newest record written to disk: the one a new segment starts with. */
  #hardStateWritten: HardState = emptyHardState;
  #snapshot: Snapshot = { meta: { index: 0, term: 0, conf: emptyConfState }, data: new Uint8Array(0) };
  /** Entries after the snapshot index: `#entries[i]` has index `#snapshot.meta.index + 1 + i`. */
  #entries: Entry[] = [];
  #segment: { handle: FileHandle; seq: number; bytes: number } | undefined;
  /** Highest entry index written to each segment, for deleting compacted segments. */
  readonly #segmentMaxIndex = new Map<number, number>();
  #pending: {
    /** Records' bytes, written in order by one writev: entry data goes to the file without a copy. */
    parts: readonly Uint8Array[];
    hardState: HardState | undefined;
    mustSync: boolean;
    resolve: () => void;
    reject: (e: unknown) => void;
  }[] = [];
  #writing = false;
  #closed = false;
  #lock: DirLock | undefined;

  private constructor(dir: string, options: FileStorageOptions) {
    this.#dir = dir;
    this.#segmentBytesMax = options.segmentBytesMax ?? segmentBytesMaxDefault;
    this.#fsync = options.fsync ?? true;
    this.#onFsyncMs = options.onFsyncMs;
  }

  /** One fdatasync of the log, timed for the fsync metric when someone listens. */
  async #datasync(handle: FileHandle): Promise<void> {
    if (this.#onFsyncMs === undefined) return handle.datasync();
    const startedMs = performance.now();
    await handle.datasync();
    this.#onFsyncMs(performance.now() - startedMs);
  }

  /**
   * Opens (creating if needed) the storage in `dir`, takes its lock and recovers its state, cutting away a
   * torn tail. Throws WalCorruptError (the directory is left as it was) and DataDirLockedError.
   */
  static async open(dir: string, options: FileStorageOptions = {}): Promise<FileStorage> {
    await mkdir(dir, { recursive: true });
    const s = new FileStorage(dir, options);
    s.#lock = await DirLock.acquire(dir, { fsync: s.#fsync });
    try {
      await s.#recover();
    } catch (err) {
      await s.#segment?.handle.close();
      await s.#lock.release();
      throw err;
    }
    return s;
  }

  /**
   * Reads a data directory without changing anything (no lock taken, no torn tail cut, no temp file removed)
   * and reports what is there, or every problem that would stop `open`.
   */
  static async inspect(dir: string): Promise<WalReport> {
    const s = new FileStorage(dir, { fsync: false });
    const files = (await readdir(dir)).sort();
    const problems: WalCorruptError[] = [];
    const snapshotFiles = await s.#loadSnapshot(files, problems);
    const scans = await s.#scanSegments(files, problems);
    let tornTail: WalReport['tornTail'];
    if (problems.length === 0) {
      try {
        s.#replay(scans);
        s.#checkRecovered();
      } catch (err) {
        if (!(err instanceof WalCorruptError)) throw err;
        problems.push(err);
      }
      const torn = scans.find((x) => x.torn !== undefined);
      if (torn?.torn !== undefined)
        tornTail = {
          file: torn.path,
          offset: torn.torn.offset,
          bytes: torn.bytes - torn.torn.offset,
          reason: torn.torn.reason,
        };
    }
    const lastIndex = s.lastIndex();
    let lastTerm = 0;
    try {
      lastTerm = s.term(lastIndex);
    } catch {
      // A log that did not replay has no last term to show.
    }
    return {
      dir,
      lock: await readDirLock(dir),
      segments: scans.map((x) => ({
        file: x.path,
        bytes: x.bytes,
        records: x.records.length,
        maxIndex: s.#segmentMaxIndex.get(x.seq) ?? 0,
      })),
      snapshotFiles,
      snapshot: s.#snapshot.meta,
      hardState: s.#hardState,
      firstIndex: s.firstIndex(),
      lastIndex,
      lastTerm,
      tornTail,
      leftoverTmp: files.filter((f) => f.endsWith('.tmp') && !f.startsWith('LOCK')),
      problems,
    };
  }

  // ---- read side (LogReader) ----

  initialState(): { hardState: HardState; confState: ConfState } {
    return { hardState: this.#hardState, confState: this.#snapshot.meta.conf };
  }
  firstIndex(): number {
    return this.#snapshot.meta.index + 1;
  }
  lastIndex(): number {
    return this.#snapshot.meta.index + this.#entries.length;
  }
  term(index: number): number {
    return termAt(this.#snapshot.meta, this.#entries, index);
  }
  entries(lo: number, hi: number, bytesMax: number): readonly Entry[] {
    return entriesIn(this.#snapshot.meta, this.#entries, lo, hi, bytesMax);
  }
  snapshot(): Snapshot {
    return this.#snapshot;
  }

  // ---- write side ----

  save(update: StorageUpdate, mustSync: boolean): Promise<void> {
    // A save with a snapshot awaits its file before queueing its records: close must wait for it.
    if (update.snapshot !== undefined) return this.#track(() => this.#save(update, mustSync));
    const closed = this.#closedError();
    return closed === undefined ? this.#save(update, mustSync) : Promise.reject(closed);
  }

  async #save(update: StorageUpdate, mustSync: boolean): Promise<void> {
    const parts: Uint8Array[] = [];
    if (update.snapshot !== undefined) {
      await this.#writeSnapshotFile(update.snapshot);
      this.#applySnapshot(update.snapshot);
      parts.push(
        record(recSnapshotMarker, recordBody([update.snapshot.meta.index, update.snapshot.meta.term])),
      );
    }
    for (const e of update.entries) {
      this.#appendInMemory(e);
      parts.push(...entryRecord(e));
    }
    if (update.hardState !== undefined) {
      assert(update.hardState.commit <= this.lastIndex(), 'commit <= lastIndex', {
        commit: update.hardState.commit,
        lastIndex: this.lastIndex(),
      });
      const backwards = hardStateRegress(this.#hardState, update.hardState);
      assert(backwards === undefined, 'the hard state never moves backwards', {
        backwards,
        from: this.#hardState,
        to: update.hardState,
      });
      this.#hardState = update.hardState;
      parts.push(this.#hardStateRecord());
    }
    if (parts.length === 0) return;
    const maxIndex =
      update.entries.length > 0 ? (update.entries[update.entries.length - 1] as Entry).index : 0;
    await this.#enqueue(parts, mustSync || update.snapshot !== undefined, maxIndex, update.hardState);
  }

  createSnapshot(index: number, conf: ConfState, data: Uint8Array): Promise<Snapshot> {
    return this.#track(() => this.#createSnapshot(index, conf, data));
  }

  async #createSnapshot(index: number, conf: ConfState, data: Uint8Array): Promise<Snapshot> {
    assert(index > this.#snapshot.meta.index, 'snapshot index moves forward', {
      index,
      current: this.#snapshot.meta.index,
    });
    assert(index <= this.lastIndex(), 'snapshot index is in the log', { index, last: this.lastIndex() });
    const meta: SnapshotMeta = { index, term: this.term(index), conf };
    const snap: Snapshot = { meta, data };
    await this.#writeSnapshotFile(snap);
    // The log keeps its entries (a slow follower may still need them) until compact() is called.
    const kept = this.#entries.slice(index - this.#snapshot.meta.index);
    this.#snapshot = snap;
    this.#entries = kept;
    await this.#enqueue([record(recSnapshotMarker, recordBody([index, meta.term, 1]))], true, 0);
    return snap;
  }

  compact(index: number): Promise<void> {
    return this.#track(() => this.#compact(index));
  }

  async #compact(index: number): Promise<void> {
    // Entries up to the snapshot index are already out of memory; what compact releases is files.
    assert(index <= this.#snapshot.meta.index, 'compact only what a snapshot covers', {
      index,
      snapshot: this.#snapshot.meta.index,
    });
    const current = this.#segment?.seq;
    for (const [seq, maxIndex] of [...this.#segmentMaxIndex]) {
      if (seq !== current && maxIndex <= index) {
        await rm(join(this.#dir, `wal-${hex16(seq)}.log`), { force: true });
        this.#segmentMaxIndex.delete(seq);
      }
    }
    const snaps = (await readdir(this.#dir)).filter((f) => f.endsWith('.snap')).sort();
    for (const f of snaps.slice(0, Math.max(0, snaps.length - 1 - snapshotsKeptOld)))
      await rm(join(this.#dir, f), { force: true });
    this.#fsyncDir();
  }

  /**
   * Waits for snapshot writes and compactions in flight, flushes, closes the segment and releases the
   * directory lock; every call resolves when all of that is done. Until then no other process can open the
   * directory, and after it this one writes nothing more there.
   */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }
  #closing: Promise<void> | undefined;

  async #close(): Promise<void> {
    await Promise.allSettled([...this.#busy]);
    try {
      await this.#enqueue([], true, 0);
    } finally {
      this.#closed = true;
      await this.#segment?.handle.close();
      this.#segment = undefined;
      await this.#lock?.release();
    }
  }

  // ---- internals ----

  /** Snapshot writes and compactions in flight: close waits for them. */
  readonly #busy = new Set<Promise<unknown>>();

  /** Runs `op` as an operation close waits for. */
  #track<T>(op: () => Promise<T>): Promise<T> {
    const closed = this.#closedError();
    if (closed !== undefined) return Promise.reject(closed);
    const p = op();
    this.#busy.add(p);
    const done = (): void => {
      this.#busy.delete(p);
    };
    p.then(done, done);
    return p;
  }

  /** Closed, or closing: no new operation starts. */
  #closedError(): StorageClosedError | undefined {
    return this.#closed || this.#closing !== undefined
      ? new StorageClosedError('storage is closed')
      : undefined;
  }

  #hardStateRecord(): Uint8Array {
    const h = this.#hardState;
    return record(recHardState, recordBody([h.term, h.vote, h.commit]));
  }

  #appendInMemory(e: Entry): void {
    const first = this.firstIndex();
    assert(e.index >= first, 'appended entry is above the snapshot', { index: e.index, first });
    assert(e.index <= this.lastIndex() + 1, 'appended entries are contiguous', {
      index: e.index,
      last: this.lastIndex(),
    });
    // An entry at or below the last index replaces the suffix from there (a conflicting tail from an old term).
    this.#entries.length = e.index - first;
    this.#entries.push(e);
  }

  #applySnapshot(snap: Snapshot): void {
    // As etcd's ApplySnapshot: a snapshot from the leader replaces the whole log.
    this.#snapshot = snap;
    this.#entries = [];
  }

  #enqueue(
    parts: readonly Uint8Array[],
    mustSync: boolean,
    maxIndex: number,
    hardState: HardState | undefined = undefined,
  ): Promise<void> {
    // After close nothing reaches the directory: another process may own it by now.
    if (this.#closed) return Promise.reject(new StorageClosedError('storage is closed'));
    return new Promise((resolve, reject) => {
      this.#pending.push({ parts, hardState, mustSync, resolve, reject });
      if (maxIndex > 0) this.#pendingMaxIndex = Math.max(this.#pendingMaxIndex, maxIndex);
      if (!this.#writing) void this.#drain();
    });
  }
  #pendingMaxIndex = 0;

  /** Writes everything queued in one write and (if any asked) one fsync; repeats until the queue is empty. */
  async #drain(): Promise<void> {
    this.#writing = true;
    try {
      while (this.#pending.length > 0) {
        const batch = this.#pending;
        this.#pending = [];
        const maxIndex = this.#pendingMaxIndex;
        this.#pendingMaxIndex = 0;
        try {
          const parts = batch.flatMap((b) => b.parts);
          const bytes = byteLength(parts);
          const seg = await this.#currentSegment(bytes);
          if (bytes > 0) {
            await writeAll(seg.handle, parts, bytes, seg.bytes);
            seg.bytes += bytes;
            if (maxIndex > 0)
              this.#segmentMaxIndex.set(seg.seq, Math.max(this.#segmentMaxIndex.get(seg.seq) ?? 0, maxIndex));
            for (const b of batch) if (b.hardState !== undefined) this.#hardStateWritten = b.hardState;
          }
          if (this.#fsync && batch.some((b) => b.mustSync)) await this.#datasync(seg.handle);
          for (const b of batch) b.resolve();
        } catch (err) {
          for (const b of batch) b.reject(err);
        }
      }
    } finally {
      this.#writing = false;
    }
  }

  async #currentSegment(incoming: number): Promise<{ handle: FileHandle; seq: number; bytes: number }> {
    const seg = this.#segment;
    if (seg !== undefined && seg.bytes + incoming <= this.#segmentBytesMax) return seg;
    const seq = (seg?.seq ?? 0) + 1;
    if (seg !== undefined) {
      await seg.handle.datasync();
      await seg.handle.close();
    }
    const handle = await open(join(this.#dir, `wal-${hex16(seq)}.log`), 'a+');
    // The hard state leads every segment, so deleting older segments never loses it. It is the hard state
    // last written, not the newest in memory: a save queued in this batch may carry an older one, and the
    // records must never show the hard state going backwards. Synced at once, because compaction may delete
    // the segment that held it before anything else syncs this one.
    const h = this.#hardStateWritten;
    const lead = record(recHardState, recordBody([h.term, h.vote, h.commit]));
    await handle.write(lead, 0, lead.length, 0);
    if (this.#fsync) await handle.datasync();
    this.#segment = { handle, seq, bytes: lead.length };
    this.#segmentMaxIndex.set(seq, 0);
    this.#fsyncDir();
    return this.#segment;
  }

  #fsyncDir(): void {
    if (!this.#fsync) return;
    const fd = openSync(this.#dir, 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  }

  async #writeSnapshotFile(snap: Snapshot): Promise<void> {
    const body = encode([
      snap.meta.index,
      snap.meta.term,
      snap.meta.conf.voters,
      snap.meta.conf.learners,
      snap.meta.conf.votersOutgoing,
      snap.data,
    ]);
    const out = new Uint8Array(8 + body.length);
    const view = new DataView(out.buffer);
    view.setUint32(0, snapMagic, true);
    out.set(body, 8);
    view.setUint32(4, crc32c(out, 8), true);
    const final = join(this.#dir, `snap-${hex16(snap.meta.index)}.snap`);
    const tmp = `${final}.tmp`;
    const h = await open(tmp, 'w');
    try {
      await h.write(out, 0, out.length, 0);
      if (this.#fsync) await h.sync();
    } finally {
      await h.close();
    }
    await rename(tmp, final);
    this.#fsyncDir();
  }

  async #recover(): Promise<void> {
    const files = (await readdir(this.#dir)).sort();
    await this.#loadSnapshot(files);
    const scans = await this.#scanSegments(files);
    this.#replay(scans);
    this.#checkRecovered();
    // Only now, with everything checked, does recovery change the directory.
    for (const f of files.filter((x) => x.endsWith('.tmp') && !x.startsWith('LOCK')))
      await rm(join(this.#dir, f), { force: true });
    for (const x of scans) if (x.torn !== undefined) await this.#truncate(x.path, x.torn.offset);
    const last = scans[scans.length - 1];
    if (last !== undefined) {
      const handle = await open(last.path, 'a+');
      const { size } = await handle.stat();
      this.#segment = { handle, seq: last.seq, bytes: size };
    }
  }

  #checkRecovered(): void {
    if (this.#hardState.commit > this.lastIndex()) {
      throw new WalCorruptError(
        this.#dir,
        0,
        `commit ${this.#hardState.commit} is past the last entry ${this.lastIndex()}`,
      );
    }
  }

  async #truncate(path: string, offset: number): Promise<void> {
    const h = await open(path, 'r+');
    try {
      await h.truncate(offset);
      if (this.#fsync) await h.sync();
    } finally {
      await h.close();
    }
  }

  /**
   * Loads the newest snapshot. Every snapshot file must check out: they are written to a temp file, synced
   * and renamed, so a crash cannot damage one, and a damaged one means the disk is failing. Without
   * `problems` the first damaged file throws; with it, every one is listed. Returns what each file holds.
   */
  async #loadSnapshot(
    files: readonly string[],
    problems?: WalCorruptError[],
  ): Promise<{ file: string; bytes: number; ok: boolean }[]> {
    const out: { file: string; bytes: number; ok: boolean }[] = [];
    for (const f of files.filter((x) => x.endsWith('.snap'))) {
      const path = join(this.#dir, f);
      const bytes = new Uint8Array(await readFile(path));
      const parsed = parseSnapshotFile(bytes);
      out.push({ file: path, bytes: bytes.length, ok: typeof parsed !== 'string' });
      if (typeof parsed === 'string') {
        const err = new WalCorruptError(path, 0, parsed);
        if (problems === undefined) throw err;
        problems.push(err);
      } else if (parsed.meta.index >= this.#snapshot.meta.index) {
        this.#snapshot = parsed;
      }
    }
    return out;
  }

  /** Scans every segment; damage that is not a torn tail of the last one throws (or is listed in `problems`). */
  async #scanSegments(files: readonly string[], problems?: WalCorruptError[]): Promise<SegmentFile[]> {
    const names = files.filter((x) => segmentName.test(x));
    const out: SegmentFile[] = [];
    for (const [i, f] of names.entries()) {
      const path = join(this.#dir, f);
      const bytes = new Uint8Array(await readFile(path));
      const scan = scanSegment(bytes);
      const seq = Number.parseInt(f.slice(4, 20), 16);
      const d = scan.damage;
      let torn: SegmentFile['torn'];
      if (d !== undefined && isTornTail(d, i === names.length - 1)) {
        torn = { offset: d.offset, reason: d.reason };
      } else if (d !== undefined) {
        const after =
          d.intactAfter === undefined
            ? 'in a segment that is not the last'
            : `an intact record follows at byte ${d.intactAfter}`;
        const err = new WalCorruptError(path, d.offset, `${d.reason}, and ${after}: not a torn write`);
        if (problems === undefined) throw err;
        problems.push(err);
      }
      out.push({ path, seq, bytes: bytes.length, records: scan.records, torn });
    }
    return out;
  }

  #replay(scans: readonly SegmentFile[]): void {
    for (const x of scans) {
      this.#segmentMaxIndex.set(x.seq, 0);
      for (const r of x.records) this.#replayRecord(r, x.path, x.seq);
    }
    this.#hardStateWritten = this.#hardState;
  }

  #replayRecord(r: ScannedRecord, path: string, seq: number): void {
    const corrupt = (reason: string): WalCorruptError => new WalCorruptError(path, r.offset, reason);
    let fields: unknown;
    try {
      fields = decode(r.payload);
    } catch {
      throw corrupt('record payload is not msgpack');
    }
    if (!Array.isArray(fields)) throw corrupt('record payload has the wrong shape');
    if (r.type === recHardState) {
      const [term, vote, commit] = fields as unknown[];
      if (!isIndex(term) || typeof vote !== 'string' || !isIndex(commit))
        throw corrupt('hard state record has the wrong shape');
      const next = { term, vote, commit };
      const backwards = hardStateRegress(this.#hardState, next);
      if (backwards !== undefined) throw corrupt(`hard state moves backwards: ${backwards}`);
      this.#hardState = next;
    } else if (r.type === recEntry) {
      const [term, index, typeCode, data] = fields as unknown[];
      if (!isIndex(term) || !isIndex(index) || typeof typeCode !== 'number' || !(data instanceof Uint8Array))
        throw corrupt('entry record has the wrong shape');
      const type = entryTypes[typeCode];
      if (type === undefined) throw corrupt(`unknown entry type ${typeCode}`);
      if (index <= this.#snapshot.meta.index) return; // Covered by the snapshot already.
      if (index > this.lastIndex() + 1) throw corrupt(`gap: entry ${index} after ${this.lastIndex()}`);
      this.#appendInMemory({ term, index, type, data });
      this.#segmentMaxIndex.set(seq, Math.max(this.#segmentMaxIndex.get(seq) ?? 0, index));
    } else if (r.type === recSnapshotMarker) {
      const [index, term, local] = fields as unknown[];
      if (!isIndex(index) || !isIndex(term) || !(local === undefined || local === 1))
        throw corrupt('snapshot marker has the wrong shape');
      if (index > this.#snapshot.meta.index && local === undefined) {
        // A snapshot from the leader was applied here, but its file is missing: the log cannot be rebuilt.
        throw corrupt(`snapshot ${index} (term ${term}) was applied but its file is gone`);
      }
      if (local === undefined && index === this.#snapshot.meta.index) this.#entries = [];
      else if (index <= this.#snapshot.meta.index) {
        // A local snapshot: entries at or below it are in the snapshot; keep the rest.
        this.#entries = this.#entries.filter((e) => e.index > this.#snapshot.meta.index);
      }
    } else {
      throw corrupt(`unknown record type ${r.type}`);
    }
  }
}

interface SegmentFile {
  readonly path: string;
  readonly seq: number;
  readonly bytes: number;
  readonly records: readonly ScannedRecord[];
  /** A torn tail to cut away on open. */
  readonly torn: { offset: number; reason: string } | undefined;
}

const isIndex = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const isNames = (v: unknown): v is string[] => Array.isArray(v) && v.every((x) => typeof x === 'string');

/**
 * How `next` would move the hard state backwards from `prev`, or undefined when it does not. Terms and the
 * commit index only grow, and a vote once cast stands for its term: a replica that forgot either could vote
 * twice in a term or lose entries it acknowledged.
 */
export function hardStateRegress(prev: HardState, next: HardState): string | undefined {
  if (next.term < prev.term) return `term ${prev.term} → ${next.term}`;
  if (next.commit < prev.commit) return `commit ${prev.commit} → ${next.commit}`;
  if (next.term === prev.term && prev.vote !== '' && next.vote !== prev.vote)
    return `vote in term ${prev.term} ${JSON.stringify(prev.vote)} → ${JSON.stringify(next.vote)}`;
  return undefined;
}

/** A snapshot file's content, or what is wrong with it. */
function parseSnapshotFile(bytes: Uint8Array): Snapshot | string {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.length < 8) return 'snapshot file cut short';
  if (view.getUint32(0, true) !== snapMagic) return 'snapshot file has a bad magic number';
  if (view.getUint32(4, true) !== crc32c(bytes, 8)) return 'snapshot checksum mismatch';
  let fields: unknown;
  try {
    fields = decode(bytes.subarray(8));
  } catch {
    return 'snapshot body is not msgpack';
  }
  if (!Array.isArray(fields)) return 'snapshot metadata has the wrong shape';
  const [index, term, voters, learners, outgoing, data] = fields as unknown[];
  if (
    !isIndex(index) ||
    !isIndex(term) ||
    !isNames(voters) ||
    !isNames(learners) ||
    !isNames(outgoing) ||
    !(data instanceof Uint8Array)
  )
    return 'snapshot metadata has the wrong shape';
  return { meta: { index, term, conf: { voters, learners, votersOutgoing: outgoing } }, data };
}
