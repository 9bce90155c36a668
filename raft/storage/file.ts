/**
 * FileStorage: the durable Raft log. A write-ahead log in segments plus atomically written snapshot files.
 *
 * Layout of `dir`:
 * - `wal-<seq:16 hex>.log` — segments, written in order; a new one starts past `segmentBytesMax`, and its
 *   first record repeats the hard state so older segments can be deleted once compacted.
 * - `snap-<index:16 hex>.snap` — snapshots, written as `*.tmp`, fsynced, renamed, then the directory fsynced.
 *   A leftover `.tmp` (a crash mid-write) is ignored and removed on open.
 *
 * A record is `[u32 length][u32 crc32c][u8 type][payload]` (little-endian; the CRC covers type and payload).
 * Types: entry, hard state, snapshot marker (the log before it was replaced by a snapshot). Payloads are msgpack.
 * Appending an entry at or below the last index replaces the suffix from there, in memory and on replay alike.
 *
 * Recovery replays every segment. A record cut short or failing its CRC at the very end of the last segment is a
 * torn write from a crash: it is truncated away (it was never acknowledged, because acknowledgement waits for
 * fsync). The same anywhere else is corruption, and opening fails with `WalCorruptError` naming file and offset.
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
import { entriesIn, termAt } from './log-slice.js';
import type { Storage, StorageUpdate } from './storage.js';

/** A segment is closed and a new one started once it grows past this. */
export const segmentBytesMaxDefault = 64 << 20;
/** The largest record accepted on write or read. */
export const recordBytesMax = 64 << 20;
/** Snapshot files kept besides the newest. */
const snapshotsKeptOld = 1;
const headerBytes = 9;
const recEntry = 1;
const recHardState = 2;
const recSnapshotMarker = 3;
const snapMagic = 0x54524c53; // "TRLS"

/** The WAL holds a damaged record that is not a torn tail: the log cannot be trusted, and nothing is opened. */
export class WalCorruptError extends TrellisError {
  override readonly name = 'WalCorruptError';
  readonly code = 'RAFT_WAL_CORRUPT';
  constructor(
    readonly file: string,
    readonly offset: number,
    readonly reason: string,
  ) {
    super(`WAL corrupt in ${file} at byte ${offset}: ${reason}`);
  }
}

/** The storage was used after close. */
export class StorageClosedError extends TrellisError {
  override readonly name = 'StorageClosedError';
  readonly code = 'RAFT_STORAGE_CLOSED';
}

export interface FileStorageOptions {
  readonly segmentBytesMax?: number;
  /** fsync when `save` is asked to; off only for benchmarks that say so. Default true. */
  readonly fsync?: boolean;
}

const entryTypes: readonly EntryType[] = ['normal', 'conf'];
const hex16 = (n: number): string => n.toString(16).padStart(16, '0');

/** One encoder for WAL records: `record` copies its payload at once, so the shared buffer is never kept. */
const recordEncoder = new Encoder();
const recordBody = (value: unknown): Uint8Array => recordEncoder.encodeSharedRef(value);

function record(type: number, payload: Uint8Array): Uint8Array {
  assert(payload.length + 1 <= recordBytesMax, 'record too large', { bytes: payload.length });
  const out = new Uint8Array(headerBytes + payload.length);
  const view = new DataView(out.buffer);
  out[8] = type;
  out.set(payload, headerBytes);
  view.setUint32(0, payload.length + 1, true);
  view.setUint32(4, crc32c(out, 8), true);
  return out;
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

export class FileStorage implements Storage {
  readonly #dir: string;
  readonly #segmentBytesMax: number;
  readonly #fsync: boolean;
  #hardState: HardState = emptyHardState;
  #snapshot: Snapshot = { meta: { index: 0, term: 0, conf: emptyConfState }, data: new Uint8Array(0) };
  /** Entries after the snapshot index: `#entries[i]` has index `#snapshot.meta.index + 1 + i`. */
  #entries: Entry[] = [];
  #segment: { handle: FileHandle; seq: number; bytes: number } | undefined;
  /** Highest entry index written to each segment, for deleting compacted segments. */
  readonly #segmentMaxIndex = new Map<number, number>();
  #pending: { bytes: Uint8Array; mustSync: boolean; resolve: () => void; reject: (e: unknown) => void }[] =
    [];
  #writing = false;
  #closed = false;

  private constructor(dir: string, options: FileStorageOptions) {
    this.#dir = dir;
    this.#segmentBytesMax = options.segmentBytesMax ?? segmentBytesMaxDefault;
    this.#fsync = options.fsync ?? true;
  }

  /** Opens (creating if needed) the storage in `dir` and recovers its state. Throws WalCorruptError. */
  static async open(dir: string, options: FileStorageOptions = {}): Promise<FileStorage> {
    await mkdir(dir, { recursive: true });
    const s = new FileStorage(dir, options);
    await s.#recover();
    return s;
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

  async save(update: StorageUpdate, mustSync: boolean): Promise<void> {
    this.#checkOpen();
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
      parts.push(record(recEntry, recordBody([e.term, e.index, entryTypes.indexOf(e.type), e.data])));
    }
    if (update.hardState !== undefined) {
      assert(update.hardState.commit <= this.lastIndex(), 'commit <= lastIndex', {
        commit: update.hardState.commit,
        lastIndex: this.lastIndex(),
      });
      this.#hardState = update.hardState;
      parts.push(this.#hardStateRecord());
    }
    if (parts.length === 0) return;
    const maxIndex =
      update.entries.length > 0 ? (update.entries[update.entries.length - 1] as Entry).index : 0;
    await this.#enqueue(concat(parts), mustSync || update.snapshot !== undefined, maxIndex);
  }

  async createSnapshot(index: number, conf: ConfState, data: Uint8Array): Promise<Snapshot> {
    this.#checkOpen();
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
    await this.#enqueue(record(recSnapshotMarker, recordBody([index, meta.term, 1])), true, 0);
    return snap;
  }

  async compact(index: number): Promise<void> {
    this.#checkOpen();
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

  async close(): Promise<void> {
    if (this.#closed) return;
    await this.#enqueue(new Uint8Array(0), true, 0);
    this.#closed = true;
    await this.#segment?.handle.close();
    this.#segment = undefined;
  }

  // ---- internals ----

  #checkOpen(): void {
    if (this.#closed) throw new StorageClosedError('storage is closed');
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

  #enqueue(bytes: Uint8Array, mustSync: boolean, maxIndex: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#pending.push({ bytes, mustSync, resolve, reject });
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
          const bytes = concat(batch.map((b) => b.bytes));
          const seg = await this.#currentSegment(bytes.length);
          if (bytes.length > 0) {
            await seg.handle.write(bytes, 0, bytes.length, seg.bytes);
            seg.bytes += bytes.length;
            if (maxIndex > 0)
              this.#segmentMaxIndex.set(seg.seq, Math.max(this.#segmentMaxIndex.get(seg.seq) ?? 0, maxIndex));
          }
          if (this.#fsync && batch.some((b) => b.mustSync)) await seg.handle.datasync();
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
    // The hard state leads every segment, so deleting older segments never loses it.
    const lead = this.#hardStateRecord();
    await handle.write(lead, 0, lead.length, 0);
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
    for (const f of files.filter((x) => x.endsWith('.tmp'))) await rm(join(this.#dir, f), { force: true });
    // The newest snapshot whose checksum holds; an older one is used if the newest is damaged.
    for (const f of files.filter((x) => x.endsWith('.snap')).reverse()) {
      const bytes = new Uint8Array(await readFile(join(this.#dir, f)));
      const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      if (
        bytes.length < 8 ||
        view.getUint32(0, true) !== snapMagic ||
        view.getUint32(4, true) !== crc32c(bytes, 8)
      )
        continue;
      const [index, term, voters, learners, outgoing, data] = decode(bytes.subarray(8)) as [
        number,
        number,
        string[],
        string[],
        string[],
        Uint8Array,
      ];
      this.#snapshot = { meta: { index, term, conf: { voters, learners, votersOutgoing: outgoing } }, data };
      break;
    }
    const segments = files.filter((x) => /^wal-[0-9a-f]{16}\.log$/.test(x));
    for (const [i, f] of segments.entries()) {
      await this.#replaySegment(f, i === segments.length - 1);
    }
    const last = segments[segments.length - 1];
    if (last !== undefined) {
      const seq = Number.parseInt(last.slice(4, 20), 16);
      const handle = await open(join(this.#dir, last), 'a+');
      const { size } = await handle.stat();
      this.#segment = { handle, seq, bytes: size };
    }
    if (this.#hardState.commit > this.lastIndex()) {
      throw new WalCorruptError(
        this.#dir,
        0,
        `commit ${this.#hardState.commit} is past the last entry ${this.lastIndex()}`,
      );
    }
  }

  async #replaySegment(file: string, isLast: boolean): Promise<void> {
    const path = join(this.#dir, file);
    const bytes = new Uint8Array(await readFile(path));
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const seq = Number.parseInt(file.slice(4, 20), 16);
    this.#segmentMaxIndex.set(seq, 0);
    let off = 0;
    while (off < bytes.length) {
      let problem: string | undefined;
      let length = 0;
      if (off + headerBytes > bytes.length) problem = 'record header cut short';
      else {
        length = view.getUint32(off, true);
        if (length < 1 || length > recordBytesMax) problem = `impossible record length ${length}`;
        else if (off + 8 + length > bytes.length) problem = 'record cut short';
        else if (view.getUint32(off + 4, true) !== crc32c(bytes, off + 8, off + 8 + length))
          problem = 'checksum mismatch';
      }
      if (problem !== undefined) {
        // Torn tail: only the last record of the last segment, reaching the end of the file, may be damaged.
        // A crash can also leave the file extended with zeros the data never reached: that is a torn tail too.
        const zerosToEnd = bytes.subarray(off).every((b) => b === 0);
        const reachesEnd = problem.includes('cut short') || off + 8 + length >= bytes.length || zerosToEnd;
        if (isLast && reachesEnd) {
          const h = await open(path, 'r+');
          try {
            await h.truncate(off);
            if (this.#fsync) await h.sync();
          } finally {
            await h.close();
          }
          return;
        }
        throw new WalCorruptError(path, off, problem);
      }
      this.#replayRecord(
        bytes[off + 8] as number,
        bytes.subarray(off + headerBytes, off + 8 + length),
        path,
        off,
        seq,
      );
      off += 8 + length;
    }
  }

  #replayRecord(type: number, payload: Uint8Array, path: string, off: number, seq: number): void {
    let fields: unknown;
    try {
      fields = decode(payload);
    } catch {
      throw new WalCorruptError(path, off, 'record payload is not msgpack');
    }
    if (!Array.isArray(fields)) throw new WalCorruptError(path, off, 'record payload has the wrong shape');
    if (type === recHardState) {
      const [term, vote, commit] = fields as [number, string, number];
      this.#hardState = { term, vote, commit };
    } else if (type === recEntry) {
      const [term, index, typeCode, data] = fields as [number, number, number, Uint8Array];
      if (index <= this.#snapshot.meta.index) return; // Covered by the snapshot already.
      if (index > this.lastIndex() + 1)
        throw new WalCorruptError(path, off, `gap: entry ${index} after ${this.lastIndex()}`);
      this.#appendInMemory({ term, index, type: entryTypes[typeCode] ?? 'normal', data });
      this.#segmentMaxIndex.set(seq, Math.max(this.#segmentMaxIndex.get(seq) ?? 0, index));
    } else if (type === recSnapshotMarker) {
      const [index, term, local] = fields as [number, number, number | undefined];
      if (index > this.#snapshot.meta.index && local === undefined) {
        // A snapshot from the leader was applied here, but its file is missing: the log cannot be rebuilt.
        throw new WalCorruptError(
          path,
          off,
          `snapshot ${index} (term ${term}) was applied but its file is gone`,
        );
      }
      if (local === undefined && index === this.#snapshot.meta.index) this.#entries = [];
      else if (index <= this.#snapshot.meta.index) {
        // A local snapshot: entries at or below it are in the snapshot; keep the rest.
        this.#entries = this.#entries.filter((e) => e.index > this.#snapshot.meta.index);
      }
    } else {
      throw new WalCorruptError(path, off, `unknown record type ${type}`);
    }
  }
}
