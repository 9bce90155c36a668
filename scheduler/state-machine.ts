/**
 * The scheduler as a Raft state machine: decodes each committed entry with the command codec, applies it
 * with `applyCommand`, and serialises the whole state for snapshots.
 *
 * The snapshot stores records, not the ClusterIndex: restore re-registers the nodes and re-allocates every
 * sandbox that holds resources, which rebuilds the index (and checks it: an allocation that does not fit
 * fails the restore loudly instead of loading an over-committed state). Entries that are not commands
 * (the leader's empty no-op) only advance `applied`.
 */
import { Decoder, Encoder } from '@msgpack/msgpack';
import { Map as IMap } from 'immutable';
import { ClusterIndex, type NodeSpec } from '../placement/index.js';
import type { Entry } from '../raft/core/types.js';
import type { StateMachine } from '../raft/state-machine.js';
import { assert } from '../src/lib/assert.js';
import { createCodec } from '../src/lib/codec.js';
import { parseWith } from '../src/lib/validate.js';
import { fastCheckedCommand } from './command-fast-check.js';
import {
  type Command,
  commandBytesMax,
  commandCodec,
  commandSchema,
  type Quota,
  type SandboxSpec,
} from './commands.js';
import { emptyDedupTable } from './core/dedup-table.js';
import { SlotTable } from './core/slot-table.js';
import { holdsAllocation, isFinished, type SandboxState } from './lifecycle.js';
import { encodePlaceFrame } from './place-encoding.js';
import {
  concatFrames,
  decodeSnapshotV5,
  encodeSnapshotV6,
  isFramedSnapshot,
  SnapshotReader,
  snapshotFrames,
  snapshotV6,
} from './snapshot.js';
import {
  type Applied,
  applyCommand,
  type CommandResult,
  NodeLists,
  SchedulerState,
  shapeOf,
} from './state.js';
import type { LostFrom, NodeRecord, Sandbox, SchedulerEvent, Usage } from './types.js';

/** Snapshot format version written: 6, framed columns (scheduler/snapshot.ts; format 5 is still read). */
export const snapshotVersion = snapshotV6;
/**
 * Versions restore reads: 3 is 4 without the first outcome of non-create request ids in `dedup` (it had
 * none); 2 is 3 without `lostFrom` and `pendingUntilMs` (its lost sandboxes cannot be restored by a
 * reconcile; it had no pending sandboxes).
 */
const snapshotVersionsReadable: readonly number[] = [2, 3, 4]; // Formats 5 and 6 are told apart by their magic.

/**
 * A sandbox as a tuple: [id, requestId, tenant, spec (index into `specs`), state, nodeId, gpuDevices,
 * snapshotNodeId, reason, createdAtMs, updatedAtMs, lostFrom, pendingUntilMs], null for an absent field
 * (version 2 rows stop after updatedAtMs). Tuples and a shared spec table keep a million-sandbox snapshot
 * from encoding ten million key strings.
 */
type SandboxRow = [
  string,
  string,
  string,
  number,
  SandboxState,
  string | null,
  Sandbox['gpuDevices'],
  string | null,
  string | null,
  number,
  number,
  (LostFrom | null)?,
  (number | null)?,
];

interface SnapshotBody {
  readonly v: number;
  readonly applied: number;
  readonly nodes: readonly NodeRecord[];
  readonly specs: readonly SandboxSpec[];
  readonly sandboxes: readonly SandboxRow[];
  readonly quotas: readonly (readonly [string, Quota])[];
  /** [requestId, sandboxId, digest, atMs, first outcome of a non-create command (v4)]. */
  readonly dedup: readonly (readonly [string, string, string, number, (CommandResult | null)?])[];
}

const encoder = new Encoder({ ignoreUndefined: true });
const decoder = new Decoder();

/** Serialises a state in the current format (6). */
export function encodeSnapshot(state: SchedulerState): Uint8Array {
  return encodeSnapshotV6(state);
}

/**
 * Serialises a state as format 4 did, one msgpack map of records; kept so tests can check that snapshots a
 * replica wrote before format 5 still restore. Node order is the registration order, so restore rebuilds
 * the same index.
 */
export function encodeSnapshotV4(state: SchedulerState): Uint8Array {
  // Specs are shared by identity: every sandbox of one place item keeps the object apply was given.
  const specIndex = new Map<SandboxSpec, number>();
  const specs: SandboxSpec[] = [];
  const rows: SandboxRow[] = [];
  for (const sb of state.sandboxes.values()) {
    let si = specIndex.get(sb.spec);
    if (si === undefined) {
      si = specs.length;
      specs.push(sb.spec);
      specIndex.set(sb.spec, si);
    }
    rows.push([
      sb.id,
      sb.requestId,
      sb.tenant,
      si,
      sb.state,
      sb.nodeId ?? null,
      sb.gpuDevices,
      sb.snapshotNodeId ?? null,
      sb.reason ?? null,
      sb.createdAtMs,
      sb.updatedAtMs,
      sb.lostFrom ?? null,
      sb.pendingUntilMs ?? null,
    ]);
  }
  const body: SnapshotBody = {
    v: 4,
    applied: state.applied,
    nodes: [...state.nodes.values()],
    specs,
    sandboxes: rows,
    quotas: [...state.quotas.entries()],
    dedup: [...state.dedup.entries()].map(
      ([rid, e]) => [rid, e.sandboxId, e.specDigest, e.atMs, e.result ?? null] as const,
    ),
  };
  return encoder.encode(body);
}

function sandboxOf(row: SandboxRow, specs: readonly SandboxSpec[]): Sandbox {
  const [
    id,
    requestId,
    tenant,
    si,
    state,
    nodeId,
    gpuDevices,
    snapshotNodeId,
    reason,
    createdAtMs,
    updatedAtMs,
    lostFrom,
    pendingUntilMs,
  ] = row;
  const spec = specs[si];
  assert(spec !== undefined, 'snapshot row names a known spec', { id, si });
  return Object.freeze({
    id,
    requestId,
    tenant,
    spec,
    state,
    ...(nodeId === null ? {} : { nodeId }),
    gpuDevices,
    ...(snapshotNodeId === null ? {} : { snapshotNodeId }),
    ...(reason === null ? {} : { reason }),
    ...(lostFrom === null || lostFrom === undefined ? {} : { lostFrom: Object.freeze(lostFrom) }),
    ...(pendingUntilMs === null || pendingUntilMs === undefined ? {} : { pendingUntilMs }),
    createdAtMs,
    updatedAtMs,
  });
}

/** Rebuilds a state from a snapshot of any readable format (2 to 5), index included. */
export function decodeSnapshot(bytes: Uint8Array): SchedulerState {
  if (isFramedSnapshot(bytes)) return decodeSnapshotV5(bytes);
  const body = decoder.decode(bytes) as SnapshotBody;
  assert(snapshotVersionsReadable.includes(body.v), 'unsupported scheduler snapshot version', { v: body.v });
  const builder = ClusterIndex.empty().edit();
  let nodes = IMap<string, NodeRecord>().asMutable();
  for (const rec of body.nodes) {
    builder.registerNode(rec.spec as NodeSpec);
    nodes.set(rec.spec.id, Object.freeze(rec));
  }
  const sandboxes = SlotTable.empty<Sandbox>().edit();
  const byNode = new Map<string, string[]>();
  const usage = new Map<string, Usage>();
  for (const row of body.sandboxes) {
    const sb = sandboxOf(row, body.specs);
    sandboxes.set(sb.id, sb);
    if (holdsAllocation(sb.state)) {
      assert(sb.nodeId !== undefined, 'an allocated sandbox has a node', { sandboxId: sb.id });
      builder.allocate(sb.nodeId, shapeOf(sb.spec, sb.tenant, sb.gpuDevices));
      push(byNode, sb.nodeId, sb.id);
    }
    if (!isFinished(sb.state)) {
      const u = usage.get(sb.tenant) ?? { cpu: 0, memory: 0, disk: 0, sandboxes: 0 };
      usage.set(sb.tenant, {
        cpu: u.cpu + sb.spec.resources.cpu,
        memory: u.memory + sb.spec.resources.memory,
        disk: u.disk + sb.spec.resources.disk,
        sandboxes: u.sandboxes + 1,
      });
    }
  }
  nodes = nodes.asImmutable();
  const dedup = emptyDedupTable().edit();
  for (const [rid, sandboxId, specDigest, atMs, result] of body.dedup) {
    const first = result === null || result === undefined ? {} : { result: Object.freeze(result) };
    dedup.set(rid, { sandboxId, specDigest, atMs, ...first });
  }
  return SchedulerState.fromData({
    applied: body.applied,
    nodes,
    sandboxes: sandboxes.publish(),
    byNode: NodeLists.of(byNode),
    usage: IMap(usage),
    quotas: IMap(body.quotas.map(([t, q]) => [t, Object.freeze(q)] as const)),
    dedup: dedup.publish(),
    cleanups: SlotTable.empty(),
    index: builder.publish(),
  });
}

/** Lets the event loop run (timers and I/O included) before the next piece of a long job. */
const yieldToLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/**
 * Serialises `state` like `encodeSnapshot`, one frame per event-loop turn: the state is an immutable
 * version, so apply may go on between frames without changing what is written.
 */
export async function writeSnapshot(state: SchedulerState): Promise<Uint8Array> {
  const frames: Uint8Array[] = [];
  for (const frame of snapshotFrames(state)) {
    frames.push(frame);
    await yieldToLoop();
  }
  return concatFrames(frames);
}

/** Restores like `decodeSnapshot`, one frame per event-loop turn for formats 5 and 6 (older ones at once). */
export async function readSnapshot(bytes: Uint8Array): Promise<SchedulerState> {
  if (!isFramedSnapshot(bytes)) return decodeSnapshot(bytes);
  const reader = new SnapshotReader(bytes);
  while (reader.step()) await yieldToLoop();
  return reader.finish();
}

function push(m: Map<string, string[]>, k: string, v: string): void {
  const list = m.get(k);
  if (list === undefined) m.set(k, [v]);
  else list.push(v);
}

/** Called after every applied entry, in log order, with what it changed. */
export type ApplyListener = (applied: Applied, entry: Entry) => void;

/** Turns a committed entry's bytes into a command; throws CodecError when they do not decode. */
export type EntryDecoder = (entry: Entry) => Command;

/**
 * `commandCodec` for reading committed entries, with the hot commands checked by hand first
 * (command-fast-check.ts): the same frames accepted, the same values and the same errors, since whatever
 * the fast check does not vouch for goes to `commandSchema` exactly as `commandCodec` sends it.
 */
export const entryCodec = createCodec<Command>({
  kind: commandCodec.kind,
  version: commandCodec.version,
  frameBytesMax: commandBytesMax,
  decoders: { 1: (body) => fastCheckedCommand(body) ?? parseWith(commandSchema, body) },
});

/**
 * Commands this process encoded for a proposal, by the encoded bytes (the object, not their content). Raft
 * carries the proposer's own bytes object to this process's apply (the log, the loopback transport and
 * the in-process followers pass it on as is), so the command is not decoded again here: for a `place` of 4,000
 * items that was ~5 MB of fresh objects and strings per entry, and their specs were each a new object where
 * the proposer's share one per shape. Bytes read back from storage or received from another process are other
 * objects and are decoded as always. Weak: an entry's bytes, once dropped, take their command along.
 */
const proposed = new WeakMap<Uint8Array, Command>();

/**
 * Encodes `cmd` for a proposal (as `commandCodec.encode`) and remembers it for this process's apply, when the
 * fast check vouches for it: it is then valid, and plain data whose msgpack round trip is equal to it, so
 * applying it is applying what every other replica decodes from the same bytes. The caller must not change
 * `cmd` afterwards (apply never does).
 */
export function encodeProposal(cmd: Command): Uint8Array {
  if (fastCheckedCommand(cmd) !== cmd) return commandCodec.encode(cmd);
  // A vouched place is plain items: written with its repeated parts encoded once (the same bytes).
  const data = (cmd.type === 'place' ? encodePlaceFrame(cmd) : undefined) ?? commandCodec.encode(cmd);
  proposed.set(data, cmd);
  return data;
}

const decodeEntry: EntryDecoder = (entry) => proposed.get(entry.data) ?? entryCodec.decode(entry.data);

/**
 * A decoder for replicas in one process: an entry is decoded (and validated) once, and the other replicas
 * reuse the same frozen-by-convention command. Raft's log matching makes this safe: entries with the same
 * index and term are the same entry. Only the last `window` entries are kept; a replica further behind
 * decodes for itself. Apply never mutates a command.
 */
export function sharedEntryDecoder(window = 256): EntryDecoder {
  const recent = new Map<string, { readonly cmd?: Command; readonly err?: unknown }>();
  return (entry) => {
    const key = `${entry.term}:${entry.index}`;
    let hit = recent.get(key);
    if (hit === undefined) {
      try {
        hit = { cmd: decodeEntry(entry) };
      } catch (err) {
        hit = { err };
      }
      recent.set(key, hit);
      if (recent.size > window) recent.delete(recent.keys().next().value as string);
    }
    if (hit.cmd === undefined) throw hit.err;
    return hit.cmd;
  };
}

/** The scheduler's replica state machine. `state` is the latest applied version, shared read-only. */
export class SchedulerStateMachine implements StateMachine<CommandResult> {
  #state = SchedulerState.empty();
  readonly #listeners = new Set<ApplyListener>();
  readonly #decode: EntryDecoder;

  constructor(decode: EntryDecoder = decodeEntry) {
    this.#decode = decode;
  }

  get state(): SchedulerState {
    return this.#state;
  }

  /**
   * Forgets the applied state, keeping the listeners: a replica restarting from its storage replays into
   * the same machine, so its listeners see the replayed entries again (their `index` tells them apart).
   */
  reset(): void {
    this.#state = SchedulerState.empty();
  }

  /** Registers a listener for applied entries; returns its removal. */
  onApply(listener: ApplyListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  apply(entry: Entry): CommandResult {
    if (entry.type !== 'normal' || entry.data.byteLength === 0) {
      this.#state = this.#state.withApplied(entry.index);
      return { ok: true };
    }
    // A committed entry that does not decode was written by a broken or newer proposer; every replica
    // refuses it the same way, so the state stays identical across replicas.
    let cmd: Command;
    try {
      cmd = this.#decode(entry);
    } catch (err) {
      this.#state = this.#state.withApplied(entry.index);
      return { ok: false, error: { code: 'CODEC', message: (err as Error).message } };
    }
    const applied = applyCommand(this.#state, cmd, entry.index);
    this.#state = applied.state;
    for (const l of this.#listeners) l(applied, entry);
    return applied.result;
  }

  snapshot(): Uint8Array {
    return encodeSnapshot(this.#state);
  }

  /**
   * Takes the current version now (O(1): a version never changes) and returns a writer that serialises it
   * frame by frame, yielding to the event loop between frames, so apply goes on meanwhile and no frame
   * holds the loop for long.
   */
  snapshotLater(): () => Promise<Uint8Array> {
    const version = this.#state;
    return () => writeSnapshot(version);
  }

  restore(data: Uint8Array): void {
    this.#state = decodeSnapshot(data);
  }
}

export type { SchedulerEvent };

/**
 * A canonical summary of a state for comparing replicas: every record sorted by id, plus each node's
 * allocation as the index holds it. Two replicas that applied the same log give equal digests.
 */
export function stateDigest(state: SchedulerState): string {
  const byId = <T>(m: Iterable<[string, T]> & { entries(): IterableIterator<[string, T]> }): [string, T][] =>
    [...m.entries()].sort((a, b) => (a[0] < b[0] ? -1 : 1));
  const alloc = [...state.nodes.keys()].sort().map((id) => {
    const v = state.index.get(id);
    return [id, v?.state, v?.allocated, v?.gpuFree];
  });
  // Keys sorted at every level: a record rebuilt from a snapshot may list its fields in another order.
  const canonical = (_k: string, v: unknown): unknown =>
    v !== null && typeof v === 'object' && !Array.isArray(v)
      ? Object.fromEntries(Object.entries(v as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : 1)))
      : v;
  return JSON.stringify(
    {
      nodes: byId(state.nodes),
      sandboxes: byId(state.sandboxes),
      quotas: byId(state.quotas),
      dedup: [...state.dedup.entries()],
      usage: [...state.sandboxes.values()]
        .map((s) => s.tenant)
        .sort()
        .filter((t, i, a) => a[i - 1] !== t)
        .map((t) => [t, state.usage(t)]),
      alloc,
    },
    canonical,
  );
}
