/**
 * The read side both storages share: a log held in memory as the snapshot's position plus the entries after
 * it (`entries[i].index === snapshot.index + 1 + i`), read as the LogReader contract demands.
 */
import { EntryUnavailableError, LogCompactedError } from '../core/errors.js';
import type { Entry, SnapshotMeta } from '../core/types.js';

/** The term at `index`: the snapshot's for its own index; throws outside [snapshot.index, last]. */
export function termAt(snap: SnapshotMeta, entries: readonly Entry[], index: number): number {
  if (index < snap.index)
    throw new LogCompactedError(`index ${index} is compacted (first ${snap.index + 1})`);
  if (index === snap.index) return snap.term;
  const e = entries[index - snap.index - 1];
  if (e === undefined)
    throw new EntryUnavailableError(`index ${index} is past the last index ${snap.index + entries.length}`);
  return e.term;
}

/** Entries in [lo, hi), stopping once their data passes `bytesMax` (at least one when the range is not empty). */
export function entriesIn(
  snap: SnapshotMeta,
  entries: readonly Entry[],
  lo: number,
  hi: number,
  bytesMax: number,
): Entry[] {
  const first = snap.index + 1;
  const last = snap.index + entries.length;
  if (lo < first) throw new LogCompactedError(`index ${lo} is compacted (first ${first})`);
  if (hi > last + 1) throw new EntryUnavailableError(`range end ${hi} is past ${last + 1}`);
  const out: Entry[] = [];
  let bytes = 0;
  for (let i = lo; i < hi; i++) {
    const e = entries[i - first] as Entry;
    bytes += e.data.length;
    if (out.length > 0 && bytes > bytesMax) break;
    out.push(e);
  }
  return out;
}
