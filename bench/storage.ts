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
import { benchFlags, machineLine, percentile, table, writeJsonLines } from './lib/report.js';

const flags = benchFlags();
const durationMs = flags.quick ? 1_000 : 5_000;
const data = new Uint8Array(256).fill(7);

async function run(inFlight: number): Promise<Record<string, string | number>> {
  const dir = await mkdtemp(join(tmpdir(), 'trellis-bench-wal-'));
  const s = await FileStorage.open(dir);
  let next = 1;
  const latencies: number[] = [];
  const end = performance.now() + durationMs;
  const worker = async (): Promise<void> => {
    while (performance.now() < end) {
      const index = next++;
      const t0 = performance.now();
      await s.save({ entries: [{ index, term: 1, type: 'normal', data }] }, true);
      latencies.push(performance.now() - t0);
    }
  };
  await Promise.all(Array.from({ length: inFlight }, worker));
  await s.close();
  await rm(dir, { recursive: true, force: true });
  latencies.sort((a, b) => a - b);
  return {
    inFlight,
    savesPerSec: Math.round(latencies.length / (durationMs / 1000)),
    p50Ms: percentile(latencies, 50),
    p99Ms: percentile(latencies, 99),
    fsync: 'on',
  };
}

console.log(`storage benchmark — ${machineLine()}`);
const rows = [await run(1), await run(64)];
console.log(table(rows));
writeJsonLines(flags.json, rows);
