/**
 * Scheduler snapshot formats 5 and 6: a state written as a sequence of frames, each up to 1,024 records in
 * columns, so a snapshot is produced and restored piece by piece. Format 6 is written; both are read. (It lives beside the state machine, not
 * in the pure core, because it uses the msgpack codec.)
 *
 * Taking a snapshot needs no copy: a `SchedulerState` is an immutable version, so the writer holds one
 * (O(1)) and walks it frame by frame while apply goes on building newer versions. The shell decides what
 * happens between frames (the replica yields to the event loop, so a snapshot never stalls apply for
 * long); this module only cuts and reads frames and is pure.
 *
 * Layout: the magic `TRS5`, then frames, each a 4-byte big-endian length and a msgpack body:
 *   header    { k: 'h', v: 5, applied, nodes, quotas, sandboxes, dedup, cleanups }   (counts of the records to
 *             follow; `cleanups`, the terminates owed to nodes as [sandbox, node] pairs, absent in older ones)
 *   sandboxes { k: 's', strings, specs, id, rid, tenant, spec, state, node, created, updated, extra }
 *   dedup     { k: 'd', strings, rid, sid, digest, at, results }
 * Repeated strings (tenants, states, node ids) and specs are interned in tables that grow frame by frame:
 * a frame carries only the entries it adds. Numbers sit in typed arrays (little-endian bytes, as msgpack
 * `bin`), one column per field; the rare fields (GPU shares, reasons, lost-from, deadlines, first outcomes)
 * are listed sparsely by row. This keeps a million sandboxes from becoming a million small objects and
 * arrays on either side.
 *
 * Format 6 (magic `TRS6`, header `v: 6`) differs in how strings are carried, so a restore decodes fewer and
 * keeps one per sandbox:
 *   sandboxes { k: 's', strings, specs, ids, idLen, rids, tenant, spec, state, node, created, updated, extra }
 *             `ids` is the frame's sandbox ids concatenated, one string to decode, sliced by `idLen` (UTF-16
 *             lengths, Uint32); `rids` lists only the rows whose request id is not the sandbox id.
 *   dedup     { k: 'd', row, keys, keyLen, sids, digests, digest, at, results }
 *             `row`: 1 + the snapshot row of the sandbox a create made when that sandbox is in the snapshot
 *             with this very request id (its id and request id are then the entry's sandbox id and key, and a
 *             restore shares the record's strings), else 0 and the key is next in `keys` (concatenated, sliced
 *             by `keyLen`), its sandbox id in `sids` when not the key; digests in a per-frame table.
 *
 * Restore checks as it builds: every allocation is re-taken on the rebuilt index, which throws on an
 * over-committed node rather than load it, and the counts in the header must match what the frames held.
 */
import { Decoder, Encoder } from '@msgpack/msgpack';
import { Map as IMap } from 'immutable';
import { type AllocationShape, ClusterIndex, type IndexBuilder, type NodeSpec } from '../placement/index.js';
import { assert } from '../src/lib/assert.js';
import type { Quota, SandboxSpec } from './core/commands.js';
import { emptyDedupTable } from './core/dedup-table.js';
import { holdsAllocation, isFinished, type SandboxState, sandboxStates } from './core/lifecycle.js';
import { SlotTable, slotTableOf } from './core/slot-table.js';
import {
  type CommandResult,
  type DedupEntry,
  NodeLists,
  SchedulerState,
  type StateData,
  shapeOf,
} from './core/state.js';
import type { LostFrom, NodeRecord, Sandbox, Usage } from './core/types.js';

/** The older framed format, still read (and written by `encodeSnapshotV5`, for tests of that). */
export const snapshotV5 = 5;
/** The format version this module writes. */
export const snapshotV6 = 6;
/**
 * Records per frame: one frame must be well under the 50 ms apply-pause bound (16,384 took ~100 ms of CPU per
 * frame at load 20 in the 1M-sandbox bench; 4,096 still took up to 135 ms on the idle machine; 1,024 is a
 * quarter of that), and large enough that the per-frame cost (a msgpack header, a few typed arrays) stays
 * small. Readers take frames of any size, so snapshots written with larger frames still restore.
 */
export const snapshotFrameRecordsMax = 1_024;
/** Distinct spec digests a restore keeps one copy of (specs repeat; a bound keeps the map small regardless). */
const digestsInternedMax = 65_536;
/** A frame longer than this is refused on read (a corrupt length would otherwise allocate gigabytes). */
export const snapshotFrameBytesMax = 256 * 2 ** 20;

const magic = new Uint8Array([0x54, 0x52, 0x53, 0x35]); // "TRS5"
const magicV6 = new Uint8Array([0x54, 0x52, 0x53, 0x36]); // "TRS6"
// Typed-array columns are written in the platform's byte order; every platform Node runs on is little-endian.
assert(
  new Uint8Array(new Uint16Array([1]).buffer)[0] === 1,
  'snapshot columns assume a little-endian host',
  {},
);

/** True when `bytes` start like a format-5 snapshot (a v2–v4 snapshot starts with a msgpack map). */
export function isSnapshotV5(bytes: Uint8Array): boolean {
  return bytes.length >= magic.length && magic.every((b, i) => bytes[i] === b);
}

/** True when `bytes` start like a format-6 snapshot. */
export function isSnapshotV6(bytes: Uint8Array): boolean {
  return bytes.length >= magicV6.length && magicV6.every((b, i) => bytes[i] === b);
}

/** True when `bytes` start like a framed snapshot (format 5 or 6), which `SnapshotReader` reads. */
export function isFramedSnapshot(bytes: Uint8Array): boolean {
  return isSnapshotV5(bytes) || isSnapshotV6(bytes);
}

/**
 * The Sandbox fields format 5 writes. A field added to `Sandbox` without a column here fails the typecheck
 * (below) instead of being dropped from snapshots silently.
 */
type WrittenField =
  | 'id'
  | 'requestId'
  | 'tenant'
  | 'spec'
  | 'state'
  | 'nodeId'
  | 'gpuDevices'
  | 'snapshotNodeId'
  | 'reason'
  | 'lostFrom'
  | 'pendingUntilMs'
  | 'createdAtMs'
  | 'updatedAtMs';
const everyFieldWritten: [Exclude<keyof Sandbox, WrittenField>] extends [never] ? true : never = true;
assert(everyFieldWritten, 'every sandbox field has a snapshot column', {});

/** A sandbox's rare fields, present only when at least one of them is set. */
interface SandboxExtra {
  readonly gpu?: Sandbox['gpuDevices'];
  readonly snap?: string;
  readonly reason?: string;
  readonly lost?: LostFrom;
  readonly until?: number;
}

interface HeaderFrame {
  readonly k: 'h';
  readonly v: number;
  readonly applied: number;
  readonly nodes: readonly NodeRecord[];
  readonly quotas: readonly (readonly [string, Quota])[];
  readonly sandboxes: number;
  readonly dedup: number;
  /** Cleanup terminates owed to nodes, oldest first (at most `cleanupsMax`, so they fit the header). */
  readonly cleanups?: readonly (readonly [string, string])[];
}

interface SandboxFrame {
  readonly k: 's';
  readonly strings: readonly string[];
  readonly specs: readonly SandboxSpec[];
  readonly id: readonly string[];
  /** The request id, or null when it equals the sandbox id (every create's sandbox takes its request's id). */
  readonly rid: readonly (string | null)[];
  readonly tenant: Uint8Array; // Uint32 string-table indexes
  readonly spec: Uint8Array; // Uint32 spec-table indexes
  readonly state: Uint8Array; // Uint32 string-table indexes
  readonly node: Uint8Array; // Uint32 string-table index + 1, 0 for none
  readonly created: Uint8Array; // Float64
  readonly updated: Uint8Array; // Float64
  readonly extra: readonly (readonly [number, SandboxExtra])[];
}

interface DedupFrame {
  readonly k: 'd';
  readonly strings: readonly string[];
  readonly rid: readonly string[];
  /** The sandbox id a create made, null when it equals the request id, '' for other commands. */
  readonly sid: readonly (string | null)[];
  readonly digest: readonly string[];
  readonly at: Uint8Array; // Float64
  readonly results: readonly (readonly [number, CommandResult])[];
}

interface SandboxFrameV6 {
  readonly k: 's';
  readonly strings: readonly string[];
  readonly specs: readonly SandboxSpec[];
  /** The frame's sandbox ids concatenated (one string to decode), cut by `idLen`. */
  readonly ids: string;
  readonly idLen: Uint8Array; // Uint32 UTF-16 lengths
  /** [row, request id] for the rows whose request id is not the sandbox id. */
  readonly rids: readonly (readonly [number, string])[];
  readonly tenant: Uint8Array;
  readonly spec: Uint8Array;
  readonly state: Uint8Array;
  readonly node: Uint8Array;
  readonly created: Uint8Array;
  readonly updated: Uint8Array;
  readonly extra: readonly (readonly [number, SandboxExtra])[];
}

interface DedupFrameV6 {
  readonly k: 'd';
  /** Uint32 per entry: 1 + the snapshot row of the sandbox it created (key and sandbox id are its), or 0. */
  readonly row: Uint8Array;
  /** The keys of the entries with row 0, concatenated, cut by `keyLen`. */
  readonly keys: string;
  readonly keyLen: Uint8Array; // Uint32 UTF-16 lengths
  /** [entry, sandbox id] for entries with row 0 whose sandbox id is not the key ('' for other commands). */
  readonly sids: readonly (readonly [number, string])[];
  /** This frame's distinct digests; `digest` indexes them (Uint32 per entry). */
  readonly digests: readonly string[];
  readonly digest: Uint8Array;
  readonly at: Uint8Array; // Float64
  readonly results: readonly (readonly [number, CommandResult])[];
}

type Frame = HeaderFrame | SandboxFrame | DedupFrame | SandboxFrameV6 | DedupFrameV6;

const encoder = new Encoder({ ignoreUndefined: true });

/** Interns strings (or specs, by identity) into a table that a frame ships only the new part of. */
class Interner<T> {
  readonly #index = new Map<T, number>();
  #fresh: T[] = [];
  of(v: T): number {
    let i = this.#index.get(v);
    if (i === undefined) {
      i = this.#index.size;
      this.#index.set(v, i);
      this.#fresh.push(v);
    }
    return i;
  }
  /** The entries added since the last call, in index order. */
  takeFresh(): T[] {
    const fresh = this.#fresh;
    this.#fresh = [];
    return fresh;
  }
}

function frameBytes(frame: Frame): Uint8Array {
  const body = encoder.encodeSharedRef(frame); // A view into the encoder's buffer: copied just below.
  const out = new Uint8Array(4 + body.length);
  new DataView(out.buffer).setUint32(0, body.length);
  out.set(body, 4);
  return out;
}

const bytesOf = (a: Uint32Array | Float64Array): Uint8Array => new Uint8Array(a.buffer, 0, a.byteLength);

/**
 * The frames of a snapshot of `state`, magic first, produced lazily: each `next()` does one frame's work,
 * reading only `state`, which never changes. Concatenated, the frames are the snapshot. Format 6 unless
 * `version` asks for 5 (kept so tests can check that what older replicas wrote still restores).
 */
export function* snapshotFrames(
  state: SchedulerState,
  recordsPerFrame = snapshotFrameRecordsMax,
  version: 5 | 6 = snapshotV6,
): Generator<Uint8Array> {
  assert(recordsPerFrame >= 1 && recordsPerFrame <= snapshotFrameRecordsMax, 'records per frame in range', {
    recordsPerFrame,
  });
  const d = state.data();
  yield (version === snapshotV5 ? magic : magicV6).slice();
  const header: HeaderFrame = {
    k: 'h',
    v: version,
    applied: d.applied,
    nodes: [...d.nodes.values()],
    quotas: [...d.quotas.entries()],
    sandboxes: d.sandboxes.size,
    dedup: d.dedup.size,
    cleanups: [...d.cleanups.entries()],
  };
  yield frameBytes(header);
  const strings = new Interner<string>();
  const specs = new Interner<SandboxSpec>();
  const rows = d.sandboxes.values();
  for (let done = 0; done < header.sandboxes; done += recordsPerFrame) {
    const n = Math.min(recordsPerFrame, header.sandboxes - done);
    yield frameBytes(
      version === snapshotV5
        ? sandboxFrame(rows, n, strings, specs)
        : sandboxFrameV6(rows, n, strings, specs),
    );
  }
  const entries = d.dedup.entries();
  const walk = new RowWalk(d.sandboxes);
  for (let done = 0; done < header.dedup; done += recordsPerFrame) {
    const n = Math.min(recordsPerFrame, header.dedup - done);
    yield frameBytes(
      version === snapshotV5 ? dedupFrame(entries, n, strings) : dedupFrameV6(entries, n, walk),
    );
  }
}

function sandboxFrame(
  rows: IterableIterator<Sandbox>,
  n: number,
  strings: Interner<string>,
  specs: Interner<SandboxSpec>,
): SandboxFrame {
  const id: string[] = new Array(n);
  const rid: (string | null)[] = new Array(n);
  const tenant = new Uint32Array(n);
  const spec = new Uint32Array(n);
  const state = new Uint32Array(n);
  const node = new Uint32Array(n);
  const created = new Float64Array(n);
  const updated = new Float64Array(n);
  const extra: [number, SandboxExtra][] = [];
  for (let i = 0; i < n; i++) {
    const next = rows.next();
    assert(next.done !== true, 'the sandbox map holds the count it reported', { i, n });
    const sb = next.value;
    id[i] = sb.id;
    rid[i] = sb.requestId === sb.id ? null : sb.requestId;
    tenant[i] = strings.of(sb.tenant);
    spec[i] = specs.of(sb.spec);
    state[i] = strings.of(sb.state);
    node[i] = sb.nodeId === undefined ? 0 : strings.of(sb.nodeId) + 1;
    created[i] = sb.createdAtMs;
    updated[i] = sb.updatedAtMs;
    if (
      sb.gpuDevices.length > 0 ||
      sb.snapshotNodeId !== undefined ||
      sb.reason !== undefined ||
      sb.lostFrom !== undefined ||
      sb.pendingUntilMs !== undefined
    ) {
      extra.push([
        i,
        {
          ...(sb.gpuDevices.length > 0 ? { gpu: sb.gpuDevices } : {}),
          ...(sb.snapshotNodeId === undefined ? {} : { snap: sb.snapshotNodeId }),
          ...(sb.reason === undefined ? {} : { reason: sb.reason }),
          ...(sb.lostFrom === undefined ? {} : { lost: sb.lostFrom }),
          ...(sb.pendingUntilMs === undefined ? {} : { until: sb.pendingUntilMs }),
        },
      ]);
    }
  }
  return {
    k: 's',
    strings: strings.takeFresh(),
    specs: specs.takeFresh(),
    id,
    rid,
    tenant: bytesOf(tenant),
    spec: bytesOf(spec),
    state: bytesOf(state),
    node: bytesOf(node),
    created: bytesOf(created),
    updated: bytesOf(updated),
    extra,
  };
}

function dedupFrame(
  entries: IterableIterator<[string, DedupEntry]>,
  n: number,
  strings: Interner<string>,
): DedupFrame {
  const rid: string[] = new Array(n);
  const sid: (string | null)[] = new Array(n);
  const digest: string[] = new Array(n);
  const at = new Float64Array(n);
  const results: [number, CommandResult][] = [];
  for (let i = 0; i < n; i++) {
    const next = entries.next();
    assert(next.done !== true, 'the dedup table holds the count it reported', { i, n });
    const [r, e] = next.value;
    rid[i] = r;
    sid[i] = e.sandboxId === r ? null : e.sandboxId;
    digest[i] = e.specDigest;
    at[i] = e.atMs;
    if (e.result !== undefined) results.push([i, e.result]);
  }
  return { k: 'd', strings: strings.takeFresh(), rid, sid, digest, at: bytesOf(at), results };
}

/** The rare fields of a sandbox, or undefined when it has none (the common case). */
function extraOf(sb: Sandbox): SandboxExtra | undefined {
  if (
    sb.gpuDevices.length === 0 &&
    sb.snapshotNodeId === undefined &&
    sb.reason === undefined &&
    sb.lostFrom === undefined &&
    sb.pendingUntilMs === undefined
  )
    return undefined;
  return {
    ...(sb.gpuDevices.length > 0 ? { gpu: sb.gpuDevices } : {}),
    ...(sb.snapshotNodeId === undefined ? {} : { snap: sb.snapshotNodeId }),
    ...(sb.reason === undefined ? {} : { reason: sb.reason }),
    ...(sb.lostFrom === undefined ? {} : { lost: sb.lostFrom }),
    ...(sb.pendingUntilMs === undefined ? {} : { until: sb.pendingUntilMs }),
  };
}

function sandboxFrameV6(
  rows: IterableIterator<Sandbox>,
  n: number,
  strings: Interner<string>,
  specs: Interner<SandboxSpec>,
): SandboxFrameV6 {
  const ids: string[] = new Array(n);
  const idLen = new Uint32Array(n);
  const rids: [number, string][] = [];
  const tenant = new Uint32Array(n);
  const spec = new Uint32Array(n);
  const state = new Uint32Array(n);
  const node = new Uint32Array(n);
  const created = new Float64Array(n);
  const updated = new Float64Array(n);
  const extra: [number, SandboxExtra][] = [];
  for (let i = 0; i < n; i++) {
    const next = rows.next();
    assert(next.done !== true, 'the sandbox map holds the count it reported', { i, n });
    const sb = next.value;
    ids[i] = sb.id;
    idLen[i] = sb.id.length;
    if (sb.requestId !== sb.id) rids.push([i, sb.requestId]);
    tenant[i] = strings.of(sb.tenant);
    spec[i] = specs.of(sb.spec);
    state[i] = strings.of(sb.state);
    node[i] = sb.nodeId === undefined ? 0 : strings.of(sb.nodeId) + 1;
    created[i] = sb.createdAtMs;
    updated[i] = sb.updatedAtMs;
    const x = extraOf(sb);
    if (x !== undefined) extra.push([i, x]);
  }
  return {
    k: 's',
    strings: strings.takeFresh(),
    specs: specs.takeFresh(),
    ids: ids.join(''),
    idLen: bytesOf(idLen),
    rids,
    tenant: bytesOf(tenant),
    spec: bytesOf(spec),
    state: bytesOf(state),
    node: bytesOf(node),
    created: bytesOf(created),
    updated: bytesOf(updated),
    extra,
  };
}

/**
 * Finds the snapshot row of the sandbox a dedup entry created, walking the sandbox table once alongside the
 * dedup table: a create adds its sandbox and its request id in the same apply, so the creates whose sandbox
 * is still held come in the same order in both tables. Each row it gives was checked (the sandbox at that row
 * has the entry's sandbox id and request id); should the orders ever differ, the walk runs out and the rest
 * of the entries carry their keys instead, so the snapshot is right either way, only larger.
 */
class RowWalk {
  readonly #sandboxes: SchedulerState['sandboxes'];
  readonly #rows: IterableIterator<Sandbox>;
  #row = -1;
  #at: Sandbox | undefined;
  #done = false;

  constructor(sandboxes: SchedulerState['sandboxes']) {
    this.#sandboxes = sandboxes;
    this.#rows = sandboxes.values();
  }

  /** The row of sandbox `sandboxId` made by request `key`, or -1 when it is not in the snapshot as such. */
  rowOf(key: string, sandboxId: string): number {
    if (this.#done || sandboxId === '') return -1;
    const sb = this.#sandboxes.get(sandboxId);
    if (sb === undefined || sb.requestId !== key) return -1;
    while (this.#at?.id !== sandboxId) {
      const next = this.#rows.next();
      if (next.done === true) {
        this.#done = true;
        return -1;
      }
      this.#row++;
      this.#at = next.value;
    }
    return this.#row;
  }
}

function dedupFrameV6(
  entries: IterableIterator<[string, DedupEntry]>,
  n: number,
  walk: RowWalk,
): DedupFrameV6 {
  const row = new Uint32Array(n);
  const keys: string[] = [];
  const keyLen: number[] = [];
  const sids: [number, string][] = [];
  const digests = new Interner<string>();
  const digest = new Uint32Array(n);
  const at = new Float64Array(n);
  const results: [number, CommandResult][] = [];
  for (let i = 0; i < n; i++) {
    const next = entries.next();
    assert(next.done !== true, 'the dedup table holds the count it reported', { i, n });
    const [key, e] = next.value;
    const r = walk.rowOf(key, e.sandboxId);
    if (r >= 0) row[i] = r + 1;
    else {
      keys.push(key);
      keyLen.push(key.length);
      if (e.sandboxId !== key) sids.push([i, e.sandboxId]);
    }
    digest[i] = digests.of(e.specDigest);
    at[i] = e.atMs;
    if (e.result !== undefined) results.push([i, e.result]);
  }
  return {
    k: 'd',
    row: bytesOf(row),
    keys: keys.join(''),
    keyLen: bytesOf(Uint32Array.from(keyLen)),
    sids,
    digests: digests.takeFresh(),
    digest: bytesOf(digest),
    at: bytesOf(at),
    results,
  };
}

/** A whole format-5 snapshot in one buffer (what replicas wrote before format 6; tests restore it). */
export function encodeSnapshotV5(state: SchedulerState): Uint8Array {
  return concatFrames([...snapshotFrames(state, snapshotFrameRecordsMax, snapshotV5)]);
}

/** A whole format-6 snapshot in one buffer (the frames of `snapshotFrames`, concatenated). */
export function encodeSnapshotV6(state: SchedulerState): Uint8Array {
  return concatFrames([...snapshotFrames(state)]);
}

export function concatFrames(frames: readonly Uint8Array[]): Uint8Array {
  let length = 0;
  for (const f of frames) length += f.length;
  const out = new Uint8Array(length);
  let at = 0;
  for (const f of frames) {
    out.set(f, at);
    at += f.length;
  }
  return out;
}

const u32 = (b: Uint8Array): Uint32Array => new Uint32Array(b.slice().buffer);

/** Cuts one concatenated string into its parts by their UTF-16 lengths (Uint32 column `lengths`). */
function cut(joined: string, lengths: Uint8Array): string[] {
  assert(typeof joined === 'string', 'a frame carries its strings as one', { type: typeof joined });
  const len = u32(lengths);
  const out: string[] = new Array(len.length);
  let at = 0;
  for (let i = 0; i < len.length; i++) {
    const end = at + (len[i] as number);
    out[i] = joined.slice(at, end);
    at = end;
  }
  assert(at === joined.length, 'the lengths cover the concatenated strings', { at, length: joined.length });
  return out;
}
const f64 = (b: Uint8Array): Float64Array => new Float64Array(b.slice().buffer);

/**
 * Rebuilds a state from a format-5 snapshot one frame at a time: `step()` reads and applies the next
 * frame and returns false once the last is done; `finish()` then returns the state. The shell may yield
 * between steps.
 */
export class SnapshotReader {
  readonly #bytes: Uint8Array;
  readonly #view: DataView;
  readonly #decoder = new Decoder();
  #at = magic.length;
  #header: HeaderFrame | undefined;
  readonly #strings: string[] = [];
  readonly #specs: SandboxSpec[] = [];
  readonly #builder: IndexBuilder = ClusterIndex.empty().edit();
  readonly #nodes = IMap<string, NodeRecord>().asMutable();
  readonly #sandboxes = SlotTable.empty<Sandbox>().edit();
  readonly #byNode = new Map<string, string[]>();
  readonly #usage = new Map<string, { cpu: number; memory: number; disk: number; sandboxes: number }>();
  readonly #dedup = emptyDedupTable().edit();
  /** The format the magic names (5 or 6); the header must name the same. */
  readonly #version: number;
  /** Format 6: the restored records by snapshot row, which dedup entries name by row. */
  readonly #rows: Sandbox[] = [];

  constructor(bytes: Uint8Array) {
    assert(isFramedSnapshot(bytes), 'a framed snapshot starts with its magic', { length: bytes.length });
    this.#version = isSnapshotV6(bytes) ? snapshotV6 : snapshotV5;
    this.#bytes = bytes;
    this.#view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  /** Reads and applies one frame; false when there was none left. */
  step(): boolean {
    if (this.#at === this.#bytes.length) return false;
    assert(this.#at + 4 <= this.#bytes.length, 'a snapshot frame has its length', { at: this.#at });
    const length = this.#view.getUint32(this.#at);
    assert(length <= snapshotFrameBytesMax, 'a snapshot frame is within the bound', { length });
    const start = this.#at + 4;
    assert(start + length <= this.#bytes.length, 'a snapshot frame is whole', { at: this.#at, length });
    const frame = this.#decoder.decode(this.#bytes.subarray(start, start + length)) as Frame;
    this.#at = start + length;
    if (frame.k === 'h') this.#readHeader(frame);
    else if (frame.k === 's') this.#readSandboxes(frame);
    else if (frame.k === 'd' && this.#version === snapshotV6) this.#readDedupV6(frame as DedupFrameV6);
    else if (frame.k === 'd') this.#readDedup(frame as DedupFrame);
    else assert(false, 'a snapshot frame has a known kind', { kind: (frame as { k?: unknown }).k });
    return true;
  }

  #readHeader(h: HeaderFrame): void {
    assert(this.#header === undefined, 'a snapshot has one header', {});
    assert(h.v === this.#version, 'the header names the format of the magic', {
      v: h.v,
      magic: this.#version,
    });
    this.#header = h;
    // Size the key maps once for the counts the header gives (no growth during a restore); a count is capped by
    // the snapshot's own length (a record takes more than 8 bytes), so a bad header cannot reserve gigabytes.
    const recordsMax = Math.floor(this.#bytes.length / 8);
    if (Number.isSafeInteger(h.sandboxes) && h.sandboxes > 0)
      this.#sandboxes.reserve(Math.min(h.sandboxes, recordsMax));
    if (Number.isSafeInteger(h.dedup) && h.dedup > 0) this.#dedup.reserve(Math.min(h.dedup, recordsMax));
    for (const rec of h.nodes) {
      this.#builder.registerNode(rec.spec as NodeSpec);
      this.#nodes.set(rec.spec.id, Object.freeze(rec));
    }
  }

  #readSandboxes(f: SandboxFrame | SandboxFrameV6): void {
    assert(this.#header !== undefined, 'the header comes first', {});
    for (const s of f.strings) this.#strings.push(stateNames.get(s) ?? s);
    for (const s of f.specs) this.#specs.push(s);
    const [tenant, spec, state, node] = [u32(f.tenant), u32(f.spec), u32(f.state), u32(f.node)];
    const [created, updated] = [f64(f.created), f64(f.updated)];
    const extras = new Map(f.extra);
    const v6 = this.#version === snapshotV6;
    // Format 6: one string per frame for the ids, cut here; the few request ids unlike their sandbox's by row.
    const ids = v6 ? cut((f as SandboxFrameV6).ids, (f as SandboxFrameV6).idLen) : (f as SandboxFrame).id;
    const rids = v6 ? (f as SandboxFrameV6).rids : undefined;
    const ridOf = rids === undefined || rids.length === 0 ? undefined : new Map(rids);
    const n = ids.length;
    for (const column of [v6 ? ids : (f as SandboxFrame).rid, tenant, spec, state, node, created, updated]) {
      assert(column.length === n, 'a frame has whole columns', { n, column: column.length });
    }
    for (let i = 0; i < n; i++) {
      const id = ids[i] as string;
      const specOf = this.#specs[spec[i] as number];
      assert(specOf !== undefined, 'a snapshot row names a known spec', { id, spec: spec[i] });
      const nodeAt = node[i] as number;
      const tenantOf = this.#string(tenant[i] as number);
      const stateOf = this.#string(state[i] as number) as SandboxState;
      const nodeId = nodeAt === 0 ? undefined : this.#string(nodeAt - 1);
      const requestId = v6 ? (ridOf?.get(i) ?? id) : ((f as SandboxFrame).rid[i] ?? id);
      const createdAtMs = asApplied(created[i] as number);
      const updatedAtMs = asApplied(updated[i] as number);
      const x = extras.get(i);
      // The common record is built here as one literal (no intermediate object per row, a million of them).
      this.#add(
        x === undefined
          ? Object.freeze(
              nodeId === undefined
                ? {
                    id,
                    requestId,
                    tenant: tenantOf,
                    spec: specOf,
                    state: stateOf,
                    gpuDevices: noGpus,
                    createdAtMs,
                    updatedAtMs,
                  }
                : {
                    id,
                    requestId,
                    tenant: tenantOf,
                    spec: specOf,
                    state: stateOf,
                    gpuDevices: noGpus,
                    createdAtMs,
                    updatedAtMs,
                    // Last, as state.ts's newSandbox has it: same fields in the same order are one hidden
                    // class, so code that reads records stays monomorphic after a restore.
                    nodeId,
                  },
            )
          : sandboxRecord(
              {
                id,
                requestId,
                tenant: tenantOf,
                spec: specOf,
                state: stateOf,
                nodeId,
                createdAtMs,
                updatedAtMs,
              },
              x,
            ),
      );
    }
  }

  #string(at: number): string {
    const s = this.#strings[at];
    assert(s !== undefined, 'a snapshot row names a known string', { at });
    return s;
  }

  /** Files one restored sandbox: the map, its node's allocation and set, its tenant's usage. */
  #add(sb: Sandbox): void {
    // Into the key map in one pass sorted by cell at finish(), which also refuses an id listed twice.
    this.#sandboxes.appendUnindexed(sb.id, sb);
    if (this.#version === snapshotV6) this.#rows.push(sb);
    if (holdsAllocation(sb.state)) {
      assert(sb.nodeId !== undefined, 'an allocated sandbox has a node', { sandboxId: sb.id });
      this.#allocate(sb);
      const ids = this.#byNode.get(sb.nodeId);
      if (ids === undefined) this.#byNode.set(sb.nodeId, [sb.id]);
      else ids.push(sb.id);
    }
    if (!isFinished(sb.state)) {
      let u = this.#usage.get(sb.tenant);
      if (u === undefined) {
        u = { cpu: 0, memory: 0, disk: 0, sandboxes: 0 };
        this.#usage.set(sb.tenant, u);
      }
      u.cpu += sb.spec.resources.cpu;
      u.memory += sb.spec.resources.memory;
      u.disk += sb.spec.resources.disk;
      u.sandboxes += 1;
    }
  }

  /**
   * Re-takes a restored sandbox's allocation on the index. The first sandbox of each spec goes through
   * `allocate`, which validates the shape; later ones of the same spec (and tenant, no GPU shares) reuse
   * that validated shape on the node's slot. Both refuse an allocation that does not fit.
   */
  #allocate(sb: Sandbox): void {
    const plain = sb.gpuDevices.length === 0 && sb.tenant === sb.spec.tenant;
    const known = plain ? this.#shapes.get(sb.spec) : undefined;
    if (known === undefined) {
      const shape = shapeOf(sb.spec, sb.tenant, sb.gpuDevices);
      this.#builder.allocate(sb.nodeId as string, shape);
      if (plain) this.#shapes.set(sb.spec, shape);
      return;
    }
    const nodeId = sb.nodeId as string;
    let slot = this.#slots.get(nodeId);
    if (slot === undefined) {
      slot = this.#builder.slotOf(nodeId);
      assert(slot !== undefined, 'a restored allocation names a registered node', { nodeId });
      this.#slots.set(nodeId, slot);
    }
    if (known.antiAffinityGroup !== undefined || known.spread !== undefined) {
      this.#builder.allocateSlot(slot, known);
      return;
    }
    // Resources only: counted per node and taken in one write per (shape, node) at finish().
    let counts = this.#runs.get(known);
    if (counts === undefined) {
      counts = new Map();
      this.#runs.set(known, counts);
    }
    counts.set(slot, (counts.get(slot) ?? 0) + 1);
  }
  /** Shapes already validated by `allocate`, by spec. */
  readonly #shapes = new Map<SandboxSpec, AllocationShape>();
  /** Node id -> slot, read once per node rather than once per sandbox from the index's persistent map. */
  readonly #slots = new Map<string, number>();
  /**
   * Resource-only allocations not yet written: per validated shape, per slot, how many. `allocateSlotTimes`
   * then writes each as one step whose end state (columns, version, bucket) equals that many single writes,
   * and refuses one that does not fit, so a snapshot that over-commits a node is still refused.
   */
  readonly #runs = new Map<AllocationShape, Map<number, number>>();

  #takeRuns(): void {
    for (const [shape, counts] of this.#runs)
      for (const [slot, times] of counts) this.#builder.allocateSlotTimes(slot, shape, times);
    this.#runs.clear();
  }

  #readDedup(f: DedupFrame): void {
    assert(this.#header !== undefined, 'the header comes first', {});
    for (const s of f.strings) this.#strings.push(stateNames.get(s) ?? s);
    const at = f64(f.at);
    const results = new Map(f.results);
    for (const column of [f.sid, f.digest, at]) {
      assert(column.length === f.rid.length, 'a frame has whole columns', {
        n: f.rid.length,
        column: column.length,
      });
    }
    const entry = scratchEntry();
    for (let i = 0; i < f.rid.length; i++) {
      const rid = f.rid[i] as string;
      const result = results.get(i);
      const sandboxId = f.sid[i] ?? rid;
      const specDigest = this.#digest(f.digest[i] as string);
      const atMs = at[i] as number;
      entry.sandboxId = sandboxId;
      entry.specDigest = specDigest;
      entry.atMs = atMs;
      entry.result = result === undefined ? undefined : Object.freeze(result);
      // Indexed at finish(), as the sandboxes are (a request id listed twice is refused there).
      this.#dedup.appendUnindexed(rid, entry as DedupEntry);
    }
  }

  /**
   * Format 6: an entry that names its sandbox's row takes that record's request id and id (the same strings,
   * not copies); the others carry their key (cut from one string per frame) and, when not the key, their id.
   */
  #readDedupV6(f: DedupFrameV6): void {
    assert(this.#header !== undefined, 'the header comes first', {});
    const [row, digest, at] = [u32(f.row), u32(f.digest), f64(f.at)];
    const n = row.length;
    for (const column of [digest, at]) {
      assert(column.length === n, 'a frame has whole columns', { n, column: column.length });
    }
    const keys = cut(f.keys, f.keyLen);
    const digests = f.digests.map((d) => this.#digest(d));
    const sids = f.sids.length === 0 ? undefined : new Map(f.sids);
    const results = f.results.length === 0 ? undefined : new Map(f.results);
    let k = 0;
    const entry = scratchEntry();
    for (let i = 0; i < n; i++) {
      const r = row[i] as number;
      let key: string;
      let sandboxId: string;
      if (r === 0) {
        assert(k < keys.length, 'a dedup frame has a key for each entry without a row', {
          i,
          keys: keys.length,
        });
        key = keys[k++] as string;
        sandboxId = sids?.get(i) ?? key;
      } else {
        const sb = this.#rows[r - 1];
        assert(sb !== undefined, 'a dedup entry names a restored sandbox row', { i, row: r });
        key = sb.requestId;
        sandboxId = sb.id;
      }
      const specDigest = digests[digest[i] as number];
      assert(specDigest !== undefined, 'a dedup entry names a digest of its frame', { i, digest: digest[i] });
      const atMs = at[i] as number;
      const result = results?.get(i);
      entry.sandboxId = sandboxId;
      entry.specDigest = specDigest;
      entry.atMs = atMs;
      entry.result = result === undefined ? undefined : Object.freeze(result);
      // Indexed at finish(), as the sandboxes are (a request id listed twice is refused there).
      this.#dedup.appendUnindexed(key, entry as DedupEntry);
    }
    assert(k === keys.length, 'a dedup frame has no keys left over', { used: k, keys: keys.length });
  }

  /**
   * One string per distinct digest: the live state shares a spec's digest among its requests, a decoded
   * column gives each row its own copy (a million of them at 1M entries, held as long as the entries are).
   */
  #digest(d: string): string {
    const known = this.#digests.get(d);
    if (known !== undefined) return known;
    if (this.#digests.size < digestsInternedMax) this.#digests.set(d, d);
    return d;
  }
  readonly #digests = new Map<string, string>();

  /** The restored state; every frame must have been read. */
  finish(): SchedulerState {
    const h = this.#header;
    assert(h !== undefined, 'a snapshot has a header', {});
    assert(this.#at === this.#bytes.length, 'every frame was read', {
      at: this.#at,
      length: this.#bytes.length,
    });
    assert(this.#sandboxes.size === h.sandboxes, 'the snapshot holds the sandboxes its header counts', {
      read: this.#sandboxes.size,
      header: h.sandboxes,
    });
    assert(this.#dedup.size === h.dedup, 'the snapshot holds the request ids its header counts', {
      read: this.#dedup.size,
      header: h.dedup,
    });
    this.#takeRuns();
    const usage = IMap<string, Usage>().asMutable();
    for (const [tenant, u] of this.#usage) usage.set(tenant, Object.freeze(u));
    const data: StateData = {
      applied: h.applied,
      nodes: this.#nodes.asImmutable(),
      sandboxes: this.#sandboxes.publish(),
      byNode: NodeLists.of(this.#byNode),
      usage: usage.asImmutable(),
      quotas: IMap(h.quotas.map(([t, q]) => [t, Object.freeze(q)] as const)),
      dedup: this.#dedup.publish(),
      cleanups: slotTableOf(new Map((h.cleanups ?? []).map(([sb, node]) => [sb, node] as [string, string]))),
      index: this.#builder.publish(),
    };
    return SchedulerState.fromData(data);
  }
}

const noGpus: Sandbox['gpuDevices'] = Object.freeze([]);

/**
 * One dedup entry a frame refills for each of its rows: the dedup table copies an entry's fields into its
 * columns and keeps nothing of the object (dedup-table.ts), so a restore need not make a million short-lived
 * entries (and a boxed time each) for the scavenger.
 */
function scratchEntry(): {
  sandboxId: string;
  specDigest: string;
  atMs: number;
  result: CommandResult | undefined;
} {
  return { sandboxId: '', specDigest: '', atMs: 0.5, result: undefined };
}

/**
 * The state names as apply's code spells them: a decoded string equal to one is replaced by it, so restored
 * records hold the very (internalized) strings live ones do and a state comparison is one pointer compare.
 */
const stateNames = new Map<string, string>(sandboxStates.map((s) => [s, s]));

/**
 * A time read from a Float64 column, as apply stores it: V8 boxes a double read from a typed array, and a
 * record field once given a boxed double changes representation for every record (its hidden class is
 * deprecated, the live records migrate, and each restored record carried two boxes). An integer within 31
 * bits (tests, the benchmark) stays an unboxed small integer, as the live record has it; larger times (real
 * clocks) are doubles on both sides.
 */
function asApplied(ms: number): number {
  return (ms | 0) === ms ? ms | 0 : ms;
}

/** The fields every restored sandbox has (nodeId undefined when it has none). */
interface SandboxCommon {
  readonly id: string;
  readonly requestId: string;
  readonly tenant: string;
  readonly spec: SandboxSpec;
  readonly state: SandboxState;
  readonly nodeId: string | undefined;
  readonly createdAtMs: number;
  readonly updatedAtMs: number;
}

/**
 * A restored sandbox record with extras (GPUs, a reason, a pending deadline...). The common record, with none,
 * is built as one literal in `#readSandboxes` itself: no intermediate object per row, a million times.
 */
function sandboxRecord(c: SandboxCommon, x: SandboxExtra): Sandbox {
  const { id, requestId, tenant, spec, state, nodeId, createdAtMs, updatedAtMs } = c;
  const sb: { -readonly [K in keyof Sandbox]: Sandbox[K] } = {
    id,
    requestId,
    tenant,
    spec,
    state,
    gpuDevices: x.gpu ?? noGpus,
    createdAtMs,
    updatedAtMs,
  };
  if (nodeId !== undefined) sb.nodeId = nodeId;
  if (x.snap !== undefined) sb.snapshotNodeId = x.snap;
  if (x.reason !== undefined) sb.reason = x.reason;
  if (x.lost !== undefined) sb.lostFrom = Object.freeze(x.lost);
  if (x.until !== undefined) sb.pendingUntilMs = x.until;
  return Object.freeze(sb);
}

/** Restores a whole framed snapshot (format 5 or 6) at once. */
export function decodeSnapshotV5(bytes: Uint8Array): SchedulerState {
  const reader = new SnapshotReader(bytes);
  while (reader.step()) {}
  return reader.finish();
}
