/**
 * `trellis data check DIR`: what a replica's data directory holds, read-only (no lock taken, no torn tail
 * cut, nothing removed), for an operator deciding whether a replica can start or must be rebuilt.
 *
 * Prints the lock, the snapshot, each WAL segment, the log's range and last term, the hard state, and a torn
 * tail or leftover temp file if there is one (both are what a crash leaves; the next open clears them).
 * Healthy: the last line is `ok`, exit 0. Otherwise one `problem: …` line per problem on stdout, then one
 * `error: … (WAL_CORRUPT)` line on stderr and exit 1. The recovery is in docs/operations.md.
 */
import { basename } from 'node:path';
import type { Command } from 'commander';
import type { LockState } from '../../raft/storage/dir-lock.js';
import type { WalReport } from '../../raft/storage/file.js';
import { TrellisError } from '../lib/errors.js';
import { UsageError } from './errors.js';

/** The data directory has problems that stop a replica from opening it. */
export class DataCheckFailedError extends TrellisError {
  override readonly name = 'DataCheckFailedError';
  readonly code = 'WAL_CORRUPT';
}

export function registerData(program: Command): void {
  const data = program.command('data').description("inspect a replica's data directory");
  data
    .command('check <dir>')
    .description(
      'read a data directory without changing it: print its snapshot, WAL segments, log and hard state, or every problem that stops a replica from opening it (exit 1)',
    )
    .action(async (dir: string) => {
      const report = await inspectDir(dir);
      const { lines, problems } = describe(report);
      process.stdout.write(`${lines.join('\n')}\n`);
      if (problems > 0) {
        throw new DataCheckFailedError(
          `${dir} has ${problems} problem${problems === 1 ? '' : 's'}; a replica will not start on it (see "Recovering a replica" in docs/operations.md)`,
        );
      }
    });
}

async function inspectDir(dir: string): Promise<WalReport> {
  try {
    // The WAL reader (and msgpack) is loaded by this command, not at every CLI start.
    const { FileStorage } = await import('../../raft/storage/file.js');
    return await FileStorage.inspect(dir);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR')
      throw new UsageError(`${dir} is not a directory`, { cause: err });
    throw err;
  }
}

function lockLine(lock: LockState): string {
  switch (lock.state) {
    case 'free':
      return 'lock: free';
    case 'held':
      return `lock: held by process ${lock.owner.pid} on ${lock.owner.host} (it runs: what follows may show its latest write as a torn tail)`;
    case 'stale':
      return `lock: stale, ${lock.why} (the next open takes it over)`;
    case 'unreadable':
      return `lock: not a lock record: ${JSON.stringify(lock.content)}`;
  }
}

/** The report as lines, and how many of them are problems. */
export function describe(r: WalReport): { lines: string[]; problems: number } {
  const lines = [`data directory: ${r.dir}`, lockLine(r.lock)];
  const s = r.snapshot;
  const inUse = r.snapshotFiles.find((f) => f.ok && basename(f.file) === snapName(s.index));
  lines.push(
    s.index === 0
      ? 'snapshot: none'
      : `snapshot: index ${s.index}, term ${s.term}, voters ${s.conf.voters.join(',') || '-'}, learners ${s.conf.learners.join(',') || '-'}${inUse === undefined ? '' : ` (${basename(inUse.file)}, ${inUse.bytes} bytes)`}`,
  );
  for (const f of r.snapshotFiles.filter((x) => x !== inUse && x.ok))
    lines.push(`older snapshot: ${basename(f.file)}, ${f.bytes} bytes`);
  if (r.segments.length === 0) lines.push('segments: none');
  for (const g of r.segments)
    lines.push(
      `segment ${basename(g.file)}: ${g.bytes} bytes, ${g.records} intact records${g.maxIndex > 0 ? `, entries up to ${g.maxIndex}` : ''}`,
    );
  if (r.problems.length === 0) {
    lines.push(
      r.lastIndex >= r.firstIndex
        ? `log: entries ${r.firstIndex}..${r.lastIndex}, last term ${r.lastTerm}`
        : `log: no entries after the snapshot (last index ${r.lastIndex}, term ${r.lastTerm})`,
    );
    const h = r.hardState;
    lines.push(`hard state: term ${h.term}, vote ${h.vote === '' ? '(none)' : h.vote}, commit ${h.commit}`);
  }
  const t = r.tornTail;
  if (t !== undefined)
    lines.push(
      `torn tail: ${basename(t.file)} from byte ${t.offset}, ${t.bytes} bytes (${t.reason}): a write a crash left unfinished, never acknowledged; the next open cuts it away`,
    );
  for (const f of r.leftoverTmp)
    lines.push(`leftover: ${f} (an interrupted write; the next open removes it)`);
  const problems = r.problems.map((p) => `problem: ${p.message}`);
  if (r.lock.state === 'unreadable')
    problems.push(`problem: the lock file is not a lock record; remove it if no process uses ${r.dir}`);
  lines.push(...problems);
  if (problems.length === 0) lines.push('ok');
  return { lines, problems: problems.length };
}

const snapName = (index: number): string => `snap-${index.toString(16).padStart(16, '0')}.snap`;
