/**
 * The dedup table's values in columns: a SlotTable (slot-table.ts) keyed by request id whose entries are not
 * one frozen object each but, per page of `slotPageSize` slots, a Float64Array of times, an array of digest
 * strings (shared: every create of one spec points at the same digest), and, only on pages that need them, an
 * array of sandbox ids that differ from the request id (a create's sandbox takes its request's id, so usually
 * none; '' for other commands) and an array of first outcomes (other commands). At a million entries that is
 * about 4,000 pages of a few arrays each instead of a million entry objects, each with a boxed time, for the
 * GC to mark and a restore to allocate.
 *
 * `get` returns a new view object on each call (young, short-lived); `set` copies the entry's fields in, so the
 * caller's object is not kept. Pages are copied on write by the SlotTable, so a version never changes for
 * its readers.
 */
import { assert } from '../../src/lib/assert.js';
import { SlotTable, slotPageSize, type ValuePages } from './slot-table.js';
import type { CommandResult } from './state.js';

/**
 * What the dedup table remembers of a request. A create: the sandbox it created and a digest of its spec.
 * Any other command: `sandboxId` is empty, the digest is of the caller's arguments (`commandDigest`), and
 * `result` is the first outcome, which a duplicate gets back.
 */
export interface DedupEntry {
  readonly sandboxId: string;
  readonly specDigest: string;
  readonly atMs: number;
  readonly result?: CommandResult;
}

/** One page of dedup entries in columns (slot i of each). */
class DedupPage {
  constructor(
    readonly digest: (string | undefined)[],
    readonly at: Float64Array,
    /** The sandbox id where it is not the request id itself (undefined there); absent while no slot needs it. */
    public sid: (string | undefined)[] | undefined,
    /** First outcomes; absent while no slot of the page has one. */
    public res: (CommandResult | undefined)[] | undefined,
  ) {}
}

/** The page's sandbox-id column, made on first need. */
function sidsOf(p: DedupPage): (string | undefined)[] {
  if (p.sid === undefined) p.sid = new Array(slotPageSize);
  return p.sid;
}

/** The page's outcome column, made on first need. */
function resultsOf(p: DedupPage): (CommandResult | undefined)[] {
  if (p.res === undefined) p.res = new Array(slotPageSize);
  return p.res;
}

const dedupPages: ValuePages<DedupEntry> = {
  create(): object {
    return new DedupPage(new Array(slotPageSize), new Float64Array(slotPageSize), undefined, undefined);
  },
  copy(page: object): object {
    const p = page as DedupPage;
    return new DedupPage(p.digest.slice(), p.at.slice(), p.sid?.slice(), p.res?.slice());
  },
  read(page: object, i: number, key: string): DedupEntry {
    const p = page as DedupPage;
    const sandboxId = p.sid?.[i] ?? key;
    const specDigest = p.digest[i] as string;
    const atMs = p.at[i] as number;
    const result = p.res?.[i];
    return result === undefined ? { sandboxId, specDigest, atMs } : { sandboxId, specDigest, atMs, result };
  },
  write(page: object, i: number, e: DedupEntry, key: string): void {
    const p = page as DedupPage;
    assert(typeof e.specDigest === 'string', 'a dedup entry has a digest', { key });
    p.digest[i] = e.specDigest;
    p.at[i] = e.atMs;
    if (e.sandboxId !== key) sidsOf(p)[i] = e.sandboxId;
    else if (p.sid !== undefined) p.sid[i] = undefined;
    if (e.result !== undefined) resultsOf(p)[i] = e.result;
    else if (p.res !== undefined) p.res[i] = undefined;
  },
  move(from: object, i: number, to: object, j: number, _key: string): void {
    const a = from as DedupPage;
    const b = to as DedupPage;
    b.digest[j] = a.digest[i];
    b.at[j] = a.at[i] as number;
    const sid = a.sid?.[i];
    if (sid !== undefined) sidsOf(b)[j] = sid;
    const res = a.res?.[i];
    if (res !== undefined) resultsOf(b)[j] = res;
  },
  clear(page: object, i: number): void {
    const p = page as DedupPage;
    p.digest[i] = undefined;
    if (p.sid !== undefined) p.sid[i] = undefined;
    if (p.res !== undefined) p.res[i] = undefined;
  },
};

/** An empty dedup table (entries in columns); `capacityHint` as `SlotTable.empty`. */
export function emptyDedupTable(capacityHint = 0): SlotTable<DedupEntry> {
  return SlotTable.empty<DedupEntry>(capacityHint, dedupPages);
}
