import { mkdtemp, readdir, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { EntryUnavailableError, LogCompactedError } from '../../../raft/core/errors.js';
import type { Entry } from '../../../raft/core/types.js';
import { crc32c } from '../../../raft/storage/crc32c.js';
import { FileStorage, WalCorruptError } from '../../../raft/storage/file.js';

const dirs: string[] = [];
async function freshDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'trellis-wal-'));
  dirs.push(d);
  return d;
}
afterEach(async () => {
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

const entry = (index: number, term: number, size = 16): Entry => ({
  index,
  term,
  type: 'normal',
  data: Uint8Array.from({ length: size }, (_, i) => (index * 31 + i) & 0xff),
});
const range = (lo: number, hi: number, term: number): Entry[] =>
  Array.from({ length: hi - lo }, (_, i) => entry(lo + i, term));

async function walFiles(dir: string): Promise<string[]> {
  return (await readdir(dir)).filter((f) => f.endsWith('.log')).sort();
}

describe('raft/storage/crc32c', () => {
  it('raft/storage/crc32c - matches the RFC 3720 test vectors', () => {
    // 32 bytes of zeros, of ones, ascending and descending, and the classic "123456789".
    const v = (b: Uint8Array): string => crc32c(b).toString(16).padStart(8, '0');
    expect(v(new Uint8Array(32))).toBe('8a9136aa');
    expect(v(new Uint8Array(32).fill(0xff))).toBe('62a8ab43');
    expect(v(Uint8Array.from({ length: 32 }, (_, i) => i))).toBe('46dd794e');
    expect(v(Uint8Array.from({ length: 32 }, (_, i) => 31 - i))).toBe('113fdb5c');
    expect(v(new TextEncoder().encode('123456789'))).toBe('e3069283');
  });
});

describe('raft/storage/file', () => {
  it('raft/storage/file - serves the log contract and reopens to the same state', async () => {
    // Appends, sets hard state, reads ranges with a byte cap, then closes and reopens and compares.
    const dir = await freshDir();
    const s = await FileStorage.open(dir);
    await s.save({ entries: range(1, 11, 1), hardState: { term: 1, vote: 'a', commit: 5 } }, true);
    expect([s.firstIndex(), s.lastIndex(), s.term(7)]).toEqual([1, 10, 1]);
    expect(s.entries(3, 6, 1 << 20).map((e) => e.index)).toEqual([3, 4, 5]);
    expect(s.entries(3, 6, 20).map((e) => e.index)).toEqual([3]);
    expect(() => s.entries(3, 12, 100)).toThrow(EntryUnavailableError);
    expect(() => s.term(11)).toThrow(EntryUnavailableError);
    await s.close();
    const r = await FileStorage.open(dir);
    expect(r.initialState().hardState).toEqual({ term: 1, vote: 'a', commit: 5 });
    expect(r.entries(1, 11, 1 << 30)).toEqual(range(1, 11, 1));
    await r.close();
  });

  it('raft/storage/file - a conflicting suffix is replaced, and stays replaced after reopen', async () => {
    // Entries 1..10 of term 1, then 6..8 of term 2: the log must end at 8 with the new term, on disk too.
    const dir = await freshDir();
    const s = await FileStorage.open(dir);
    await s.save({ entries: range(1, 11, 1) }, true);
    await s.save({ entries: range(6, 9, 2) }, true);
    expect([s.lastIndex(), s.term(6), s.term(5)]).toEqual([8, 2, 1]);
    await s.close();
    const r = await FileStorage.open(dir);
    expect([r.lastIndex(), r.term(8), r.term(5)]).toEqual([8, 2, 1]);
    await r.close();
  });

  it('raft/storage/file - a torn last record is truncated at any cut point', async () => {
    // Writes 5 entries, then cuts the file at every byte inside the last record: reopening must give exactly
    // the first 4 entries and accept new writes after them.
    const dir = await freshDir();
    const s = await FileStorage.open(dir);
    await s.save({ entries: range(1, 5, 1) }, true);
    const [wal] = await walFiles(dir);
    const path = join(dir, wal ?? '');
    const before = (await stat(path)).size;
    await s.save({ entries: [entry(5, 1, 200)] }, true);
    await s.close();
    const full = await readFile(path);
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: before, max: full.length - 1 }), async (cut) => {
        await writeFile(path, full.subarray(0, cut));
        const r = await FileStorage.open(dir);
        expect(r.lastIndex()).toBe(4);
        await r.save({ entries: [entry(5, 2)] }, true);
        await r.close();
        const again = await FileStorage.open(dir);
        expect([again.lastIndex(), again.term(5)]).toEqual([5, 2]);
        await again.close();
      }),
      { seed: 17, numRuns: 40 },
    );
  });

  it('raft/storage/file - a damaged record in the middle is refused with the file and offset', async () => {
    // Flips one byte inside the first entry record while later records are intact: open must throw.
    const dir = await freshDir();
    const s = await FileStorage.open(dir);
    await s.save({ entries: range(1, 4, 1) }, true);
    await s.save({ entries: range(4, 8, 1) }, true);
    await s.close();
    const [wal] = await walFiles(dir);
    const path = join(dir, wal ?? '');
    const bytes = await readFile(path);
    bytes[40] = (bytes[40] ?? 0) ^ 0x55;
    await writeFile(path, bytes);
    const err = await FileStorage.open(dir).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WalCorruptError);
    expect((err as WalCorruptError).file).toBe(path);
    expect((err as WalCorruptError).offset).toBeLessThan(40);
  });

  it('raft/storage/file - zeros left past the end by a crash are a torn tail, not corruption', async () => {
    // A file extended with zeros the data never reached must reopen with every record before them.
    const dir = await freshDir();
    const s = await FileStorage.open(dir);
    await s.save({ entries: range(1, 4, 1) }, true);
    await s.close();
    const [wal] = await walFiles(dir);
    const path = join(dir, wal ?? '');
    await truncate(path, (await stat(path)).size + 4096);
    const r = await FileStorage.open(dir);
    expect(r.lastIndex()).toBe(3);
    await r.close();
  });

  it('raft/storage/file - rolls segments, recovers across them, and compaction releases old ones', async () => {
    // With 4 KiB segments, 200 entries span many files; after a snapshot at 150 and compact, only segments
    // holding entries above 150 (and the current one) remain, and a reopen still sees 151..200.
    const dir = await freshDir();
    const s = await FileStorage.open(dir, { segmentBytesMax: 4096 });
    for (let i = 1; i <= 200; i += 10)
      await s.save(
        {
          entries: range(i, i + 10, 1).map((e) => entry(e.index, 1, 100)),
          hardState: { term: 1, vote: '', commit: i + 9 },
        },
        true,
      );
    const many = (await walFiles(dir)).length;
    expect(many).toBeGreaterThan(3);
    const snap = await s.createSnapshot(
      150,
      { voters: ['a', 'b', 'c'], learners: [], votersOutgoing: [] },
      new Uint8Array([1, 2, 3]),
    );
    expect(snap.meta).toEqual({
      index: 150,
      term: 1,
      conf: { voters: ['a', 'b', 'c'], learners: [], votersOutgoing: [] },
    });
    await s.compact(150);
    expect((await walFiles(dir)).length).toBeLessThan(many);
    expect(() => s.entries(100, 151, 1 << 20)).toThrow(LogCompactedError);
    expect(s.term(150)).toBe(1);
    await s.close();
    const r = await FileStorage.open(dir, { segmentBytesMax: 4096 });
    expect([r.firstIndex(), r.lastIndex()]).toEqual([151, 200]);
    expect(r.snapshot().data).toEqual(new Uint8Array([1, 2, 3]));
    expect(r.initialState().hardState.commit).toBe(200);
    expect(r.initialState().confState.voters).toEqual(['a', 'b', 'c']);
    await r.close();
  });

  it('raft/storage/file - a snapshot from the leader replaces the log; a leftover temp file is ignored', async () => {
    // Saves a received snapshot at 50 over a log of 10 entries, adds a stray .tmp, reopens.
    const dir = await freshDir();
    const s = await FileStorage.open(dir);
    await s.save({ entries: range(1, 11, 1) }, true);
    const conf = { voters: ['a'], learners: [], votersOutgoing: [] };
    await s.save(
      { entries: [], snapshot: { meta: { index: 50, term: 3, conf }, data: new Uint8Array([9]) } },
      true,
    );
    await s.save({ entries: [entry(51, 3)] }, true);
    await s.close();
    await writeFile(join(dir, 'snap-0000000000000063.snap.tmp'), 'half a snapshot');
    const r = await FileStorage.open(dir);
    expect([r.firstIndex(), r.lastIndex(), r.term(50), r.term(51)]).toEqual([51, 51, 3, 3]);
    expect((await readdir(dir)).some((f) => f.endsWith('.tmp'))).toBe(false);
    await r.close();
  });

  it('raft/storage/file - concurrent saves share fsyncs and keep their order', async () => {
    // 64 saves issued at once: all resolve, and the log holds them in issue order.
    const dir = await freshDir();
    const s = await FileStorage.open(dir);
    await Promise.all(Array.from({ length: 64 }, (_, i) => s.save({ entries: [entry(i + 1, 1)] }, true)));
    expect(s.lastIndex()).toBe(64);
    await s.close();
    const r = await FileStorage.open(dir);
    expect(r.entries(1, 65, 1 << 30).map((e) => e.index)).toEqual(
      Array.from({ length: 64 }, (_, i) => i + 1),
    );
    await r.close();
  });
});
