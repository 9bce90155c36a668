/**
 * Raft storage micro-benchmark: `npm run build && node dist/bench/storage.js [--json FILE]`.
 *
 * FileStorage with fsync on, 256-byte entries: one save at a time (each waits for its fsync), and 64 saves in
 * flight at once (group commit: one write and one fsync serve every save queued meanwhile). Fixed duration.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileStorage } from '../raft/storage/file.js';
import { benchFlags, closedLoop, machineLine, table, writeJsonLines } from './lib/report.js';

const flags = benchFlags();
const durationMs = flags.quick ? 1_000 : 5_000;
const data = new Uint8Array(256).fill(7);

async function run(inFlight: number): Promise<Record<string, string | number>> {
  const dir = await mkdtemp(join(tmpdir(), 'trellis-bench-wal-'));
  const s = await FileStorage.open(dir);
  let next = 1;
  const r = await closedLoop(inFlight, durationMs, () =>
    s.save({ entries: [{ index: next++, term: 1, type: 'normal', data }] }, true),
  );
  await s.close();
  await rm(dir, { recursive: true, force: true });
  return { inFlight, savesPerSec: r.opsPerSec, p50Ms: r.p50Ms, p99Ms: r.p99Ms, fsync: 'on' };
}

console.log(`storage benchmark — ${machineLine()}`);
const rows = [await run(1), await run(64)];
console.log(table(rows));
writeJsonLines(flags.json, rows);
