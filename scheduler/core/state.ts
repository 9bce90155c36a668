/**
 * SchedulerState: one immutable version of everything the scheduler has committed, and `applyCommand`,
 * the deterministic function from (state, command) to the next state. Every replica applies the same log
 * with it and so holds the same state; time comes only from the command's `atMs`.
 *
 * A command is checked in full before anything is written, so a rejected command leaves the state object
 * untouched (the very same instance is returned). A place batch is the exception by design: it is
 * checked and applied item by item, and an item that no longer fits (the planner worked on an older
 * snapshot, or another leader's plan landed first) is rejected alone with its reason while the rest
 * commit. Capacity is re-checked against the ClusterIndex for every item, so committed state can never
 * over-commit a node whatever a planner proposed (compare Nomad's plan applier, which evaluates each
 * node's part of a plan against the latest state before committing it).
 */
import { Map as IMap, type OrderedMap } from 'immutable';
import {
  type AllocationShape,
  ClusterIndex,
  DuplicateNodeError,
  type IndexBuilder,
  NodeBusyError,
  type NodeSpec,
  OverCommitError,
  type Plan,
  UnknownNodeError,
  validateNodeSpec,
} from '../../placement/index.js';
import { assert } from '../../src/lib/assert.js';
import { TrellisError, ValidationError } from '../../src/lib/errors.js';
import { isDeepFrozen } from '../../src/lib/freeze.js';
import type { Command, PendItem, PlaceItem, Quota, ReconcileReport, SandboxSpec } from './commands.js';
import { type DedupEntry, emptyDedupTable } from './dedup-table.js';
import {
  type ErrorResult,
  errorResult,
  IllegalTransitionError,
  NoCapacityError,
  NodeNotReadyError,
  QuotaExceededError,
  RequestIdConflictError,
  UnknownSandboxError,
} from './errors.js';
import {
  holdsAllocation,
  isFinished,
  type NodeHeldState,
  type SandboxState,
  terminateTarget,
  transition,
} from './lifecycle.js';
import { SlotTable, type SlotTableDraft } from './slot-table.js';
import type { LostFrom, NodeRecord, Sandbox, SchedulerEvent, Usage } from './types.js';

/**
 * Request ids remembered for idempotency (creates and every other command that carries one), oldest
 * evicted first. Kept in the snapshot. The rule, applied after every entry: drop the oldest ids while more
 * than `dedupEntriesMax` are kept or while the oldest is older than `dedupRetentionMs` by the entry's own
 * `atMs` (the leader's clock stamped into the command, never a clock read in apply), so every replica
 * evicts the same ids at the same index. A retry after that is treated as a new request.
 */
export const dedupEntriesMax = 1_000_000;
/**
 * Cleanup terminates owed to nodes (`StateData.cleanups`), at most; beyond it the oldest are forgotten (an eighth
 * of the bound at once, see `withCleanup`), and that node's next reconcile stops the copy as an orphan instead.
 */
export const cleanupsMax = 16_384;
/** How long a request id is remembered, in the leader's milliseconds. */
export const dedupRetentionMs = 24 * 60 * 60 * 1000;

/** What the dedup table remembers of a request (held in columns: dedup-table.ts). */
export type { DedupEntry } from './dedup-table.js';

/**
 * What the leader's verifier learned, in this process, about the items of a `place` entry it built: which
 * items' request ids it found absent from the dedup table `dedup` (the very table instance it read). Never
 * replicated: a replica applying the entry from the log has no hint and looks every id up. `applyCommand`
 * trusts it only for the command built from exactly `items` and only while the dedup table, as it stands
 * before that command, is still that instance (a SlotTable version never changes, so the lookup would give
 * the same answer); the verifier flags only ids that occur once among the items, so no earlier item of the
 * same entry can have added one. The apply's result is the same with or without it.
 */
export interface PlaceHint {
  readonly dedup: SlotTable<DedupEntry>;
  readonly items: readonly PlaceItem[];
  /** Per item, in order: true when its request id is known absent from `dedup`. */
  readonly unseen: readonly boolean[];
  /** The plan `items` were built from, when the leader hands it over (see `PlanOrigin`). */
  readonly origin?: PlanOrigin | undefined;
}

/**
 * The plan a `place` entry's items came from, so the apply may take the plan's index as the draft's instead of
 * allocating every item again on a fresh index builder (each builder copies the ~20 hot pages a window touches).
 * Trusted, like the rest of the hint, only for the very `items` it was built with, and only when both hold:
 *   (a) the draft's index, as it stands before this command, is `base` itself (identity: nothing else edited the
 *       index since the plan was made on it);
 *   (b) every item is placed, as a new sandbox, exactly as the plan placed it: item k is placement k (same request,
 *       spec, node slot and GPU devices) and none is rejected, dropped by the verifier, a duplicate or a pending
 *       sandbox's placement.
 * Then the apply's allocations would be the planner's, call for call, on the same index (the planner's
 * `allocateSlot` checked each fits, as the apply's `fitsSlot` would), so `index` is the index the apply would
 * publish. Otherwise the apply allocates as it always did. Never replicated: a replica applying the entry from
 * the log has no hint and allocates every item (same state, more work).
 */
export interface PlanOrigin {
  /** The index the plan was made on. */
  readonly base: ClusterIndex;
  readonly plan: Plan;
  /** The requests given to `planBatch`, in its order (`plan.placed.request` indexes them). */
  readonly requests: readonly { readonly requestId: string; readonly spec: SandboxSpec }[];
}

/** The result of one place item. */
export type PlaceItemResult =
  | {
      readonly requestId: string;
      readonly sandboxId: string;
      readonly outcome: 'placed';
      readonly nodeId: string;
    }
  | { readonly requestId: string; readonly sandboxId: string; readonly outcome: 'duplicate' }
  /** A pend item recorded: the sandbox is committed `pending`. */
  | { readonly requestId: string; readonly sandboxId: string; readonly outcome: 'pending' }
  | {
      readonly requestId: string;
      readonly sandboxId: string;
      readonly outcome: 'rejected';
      readonly error: ErrorResult;
    };

/**
 * What a `node.reconcile` did. `restored`: lost sandboxes given back to the node, in the state it reported.
 * `lost`: sandboxes the state placed on the node that it did not report. `failed`: stateful sandboxes it
 * reported that no longer fit on it (their only copy must stop). `orphans`: reported sandboxes the node
 * must stop, each with why. Every list is sorted by sandbox id.
 */
export interface ReconcileResult {
  readonly restored: readonly { readonly sandboxId: string; readonly state: SandboxState }[];
  readonly lost: readonly string[];
  readonly failed: readonly string[];
  readonly orphans: readonly { readonly sandboxId: string; readonly reason: string }[];
}

/** What applying a command returns to its proposer. */
export type CommandResult =
  | {
      readonly ok: true;
      readonly items?: readonly PlaceItemResult[];
      readonly itemErrors?: readonly ErrorResult[];
      readonly reconciled?: ReconcileResult;
    }
  | { readonly ok: false; readonly error: ErrorResult };

export interface StateData {
  readonly applied: number;
  readonly nodes: IMap<string, NodeRecord>;
  /** Sandbox records by id, in dense slots (see slot-table.ts): one `Map` read and an array index per get. */
  readonly sandboxes: SlotTable<Sandbox>;
  /**
   * The sandboxes holding resources on each node, in the order they came (see `NodeLists`: one mutable index
   * handed from version to version; undefined, or owned by another version, means this version builds its own
   * when asked). (A per-tenant index would be a copy of up to every sandbox per draft; tenants' lists are
   * derived on demand instead, see `sandboxesOfTenant`.)
   */
  readonly byNode: NodeLists | undefined;
  readonly usage: IMap<string, Usage>;
  readonly quotas: IMap<string, Quota>;
  /** Remembered request ids, oldest first (slot order is admission order, which eviction follows). */
  readonly dedup: SlotTable<DedupEntry>;
  /**
   * Sandboxes that left the state (terminated) while a node may still hold a copy the node was never told
   * to end — straight from `placed` (the create may have reached it) or `suspended` (it keeps the snapshot)
   * — by sandbox id, the node, oldest first. The leader's dispatcher owes each node a terminate for these,
   * derived from here and not from its memory, so a leader change does not lose it. An entry goes when the
   * node reports the sandbox `terminated`, reconciles, or is removed; at most `cleanupsMax`.
   */
  readonly cleanups: SlotTable<string>;
  readonly index: ClusterIndex;
}

type SandboxEvent = Extract<SchedulerEvent, { kind: 'sandbox' }>;

const zeroUsage: Usage = Object.freeze({ cpu: 0, memory: 0, disk: 0, sandboxes: 0 });
const noIds: ReadonlySet<string> = new Set<string>();
const noIdList: readonly string[] = Object.freeze([]);

/**
 * The sandboxes holding resources on each node, in the order they came: read by a node's failure, reconcile and
 * removal and by `sandboxesOfNode`, written by every placement and release. One mutable index shared by a line
 * of versions and valid for exactly one of them, its `owner`: a draft records its links and unlinks in a journal
 * (`Draft.linkNode`) and, when it publishes, replays them into the index its base owns and hands the index to the
 * new version. Any other version — an older one, a fork, the base of a dropped draft — builds its own from its
 * sandboxes, once, when first asked (O(sandboxes)), so no version ever reads lists that are not its own.
 *
 * Why not a persistent table of per-node lists (as before): each draft copied every node list it touched and
 * the 256-node table page holding it, ~15% of a capacity simulation's allocation, and most list copies outlived
 * a scavenge (a node's list is copied again only when a later draft touches it), filling the old generation.
 */
export class NodeLists {
  /** The version these lists describe: set by the version's constructor, which takes them over. */
  owner: SchedulerState | undefined;
  /**
   * Plain arrays edited in place, not Sets: a Set hashes each sandbox id (reading its characters, cold by then)
   * where a list of a few dozen is scanned (the replay was 5.4% of a simulation with Sets); see NodeList.
   */
  readonly #lists: Map<string, NodeList>;

  private constructor(lists: Map<string, NodeList>) {
    this.#lists = lists;
  }

  /** Lists built by a restore (each node's ids in the order given), for the version about to be made. */
  static of(m: ReadonlyMap<string, readonly string[]>): NodeLists {
    const lists = new Map<string, NodeList>();
    for (const [nodeId, ids] of m) {
      if (ids.length === 0) continue;
      const list: NodeList = [];
      for (const id of ids) list.push(idTag(id), id);
      lists.set(nodeId, list);
    }
    return new NodeLists(lists);
  }

  /** The lists of a version from its sandboxes (slot order, as a restore builds them). */
  static build(sandboxes: Iterable<Sandbox>): NodeLists {
    const lists = new Map<string, NodeList>();
    for (const sb of sandboxes) {
      if (!holdsAllocation(sb.state) || sb.nodeId === undefined) continue;
      const list = lists.get(sb.nodeId);
      if (list === undefined) lists.set(sb.nodeId, [idTag(sb.id), sb.id]);
      else list.push(idTag(sb.id), sb.id);
    }
    return new NodeLists(lists);
  }

  /** The node's sandbox ids in the order they came (a new array). */
  get(nodeId: string): readonly string[] | undefined {
    const list = this.#lists.get(nodeId);
    if (list === undefined) return undefined;
    const ids: string[] = [];
    for (let k = 1; k < list.length; k += 2) ids.push(list[k] as string);
    return ids;
  }

  /** Applies a draft's journal: `sandboxIds[i]` joins (`signs[i]` 1) or leaves (-1) `nodeIds[i]`. */
  replay(nodeIds: readonly string[], sandboxIds: readonly string[], signs: readonly number[]): void {
    for (let i = 0; i < nodeIds.length; i++) {
      const nodeId = nodeIds[i] as string;
      const id = sandboxIds[i] as string;
      let list = this.#lists.get(nodeId);
      if (signs[i] === 1) {
        if (list === undefined) {
          list = [];
          this.#lists.set(nodeId, list);
        }
        list.push(idTag(id), id);
        continue;
      }
      const at = list === undefined ? -1 : lastIndexIn(list, id);
      assert(list !== undefined && at >= 0, 'a sandbox leaving a node was linked to it', {
        nodeId,
        sandboxId: id,
      });
      // Shifted by a plain loop: splice allocates the array of what it removed (a micro-benchmark of 12-id
      // lists: loop ~0.05 µs, splice ~0.09, copyWithin ~0.29).
      for (let k = at; k < list.length - 2; k++) list[k] = list[k + 2] as number | string;
      list.pop();
      list.pop();
      // An emptied list goes, so the index holds only nodes that hold something.
      if (list.length === 0) this.#lists.delete(nodeId);
    }
  }
}

/**
 * A node's sandboxes in the order they came, each as two elements: its tag (`idTag`), then its id. A removal reads
 * the tags, small integers held in the array itself, and compares an id only where its tag matches: comparing the
 * ids (as `lastIndexOf` did) read the header of each id string passed over, objects last touched about a minute
 * of virtual time earlier and so cold (~5% of a 1M-event simulation). One array, not an array of tags beside one
 * of ids: a second array per node was one more cold object per link and unlink.
 */
type NodeList = (number | string)[];

/**
 * @internal A hash of a sandbox id (FNV-1a) cut to 30 bits, so that it is a small integer (a Smi) in a list.
 * Exported for the test that makes two ids share a tag.
 */
export function idTag(id: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < id.length; i++) h = Math.imul(h ^ id.charCodeAt(i), 0x01000193);
  return h & 0x3fffffff;
}

/** Where `id`'s tag sits in `list` (its last occurrence), or -1. */
function lastIndexIn(list: NodeList, id: string): number {
  const tag = idTag(id);
  for (let k = list.length - 2; k >= 0; k -= 2) if (list[k] === tag && list[k + 1] === id) return k;
  return -1;
}
/**
 * The GPU devices of a sandbox that holds none: one frozen array for all of them rather than an empty array
 * each (a record per sandbox lives as long as the sandbox, so each array was one more old-generation object).
 */
const noGpuDevices: Sandbox['gpuDevices'] = Object.freeze([]);
const gpuDevicesOf = (g: Sandbox['gpuDevices']): Sandbox['gpuDevices'] => (g.length === 0 ? noGpuDevices : g);

export class SchedulerState {
  readonly #d: StateData;
  private constructor(d: StateData) {
    this.#d = d;
    // The node lists handed over with the data describe this version now (see NodeLists).
    if (d.byNode !== undefined) d.byNode.owner = this;
  }

  static empty(): SchedulerState {
    return new SchedulerState({
      applied: 0,
      nodes: IMap(),
      sandboxes: SlotTable.empty(),
      byNode: NodeLists.of(new Map()),
      usage: IMap(),
      quotas: IMap(),
      dedup: emptyDedupTable(),
      cleanups: SlotTable.empty(),
      index: ClusterIndex.empty(),
    });
  }

  /** @internal Builds a state from its parts; used by restore. */
  static fromData(d: StateData): SchedulerState {
    return new SchedulerState(d);
  }

  /**
   * @internal This version's node lists: the shared index while this version owns it, else built from its sandboxes
   * (once; this version then owns what it built).
   */
  nodeLists(): NodeLists {
    let lists = this.#d.byNode;
    if (lists?.owner === this) return lists;
    lists = this.#ownLists;
    if (lists?.owner !== this) {
      lists = NodeLists.build(this.#d.sandboxes.values());
      lists.owner = this;
      this.#ownLists = lists;
    }
    return lists;
  }
  /** Lists this version built for itself (it never owned the shared ones, or gave them to a successor). */
  #ownLists: NodeLists | undefined;
  /** @internal The node lists this version owns now, if any, without building them (for a draft's publish). */
  ownedNodeLists(): NodeLists | undefined {
    if (this.#d.byNode?.owner === this) return this.#d.byNode;
    return this.#ownLists?.owner === this ? this.#ownLists : undefined;
  }

  /** The Raft index of the last entry applied. */
  get applied(): number {
    return this.#d.applied;
  }
  get index(): ClusterIndex {
    return this.#d.index;
  }
  get nodes(): IMap<string, NodeRecord> {
    return this.#d.nodes;
  }
  get sandboxes(): SlotTable<Sandbox> {
    return this.#d.sandboxes;
  }
  get quotas(): IMap<string, Quota> {
    return this.#d.quotas;
  }
  get dedup(): SlotTable<DedupEntry> {
    return this.#d.dedup;
  }
  /** Cleanup terminates owed to nodes: sandbox id → node (see `StateData.cleanups`). */
  get cleanups(): SlotTable<string> {
    return this.#d.cleanups;
  }
  sandbox(id: string): Sandbox | undefined {
    return this.#d.sandboxes.get(id);
  }
  sandboxesOfNode(nodeId: string): ReadonlySet<string> {
    // A copy: the shared lists change in place once a successor is published.
    const ids = this.nodeLists().get(nodeId);
    return ids === undefined ? noIds : new Set(ids);
  }
  /**
   * A tenant's sandboxes. Built on the first call for this version with one pass over all sandboxes and
   * kept with it (a version never changes), so apply does not maintain a per-tenant index on every create.
   */
  sandboxesOfTenant(tenant: string): ReadonlySet<string> {
    if (this.#byTenant === undefined) {
      const byTenant = new Map<string, Set<string>>();
      for (const sb of this.#d.sandboxes.values()) {
        const ids = byTenant.get(sb.tenant);
        if (ids === undefined) byTenant.set(sb.tenant, new Set([sb.id]));
        else ids.add(sb.id);
      }
      this.#byTenant = byTenant;
    }
    return this.#byTenant.get(tenant) ?? noIds;
  }
  #byTenant: Map<string, ReadonlySet<string>> | undefined;
  usage(tenant: string): Usage {
    return this.#d.usage.get(tenant) ?? zeroUsage;
  }
  /** @internal The raw parts, for the draft and the snapshot writer. */
  data(): StateData {
    return this.#d;
  }
  /** A copy with `applied` advanced (for entries that change nothing else, such as the leader's no-op). */
  withApplied(applied: number): SchedulerState {
    assert(applied >= this.#d.applied, 'applied index went backwards', { applied, was: this.#d.applied });
    return new SchedulerState({ ...this.#d, applied });
  }
}

/**
 * `cleanups` with `nodeId` owed a terminate for `sandboxId`; beyond `max` the oldest debts are dropped, an
 * eighth of `max` at once. One at a time was a trap: an OrderedMap leaves a hole where its first entry was,
 * and finding the next first entry walks every hole, so at the bound each terminate cost O(holes) — it made
 * the capacity simulation, whose sandboxes all end unstarted, five times slower (21.6 s to 100 s).
 */
export function withCleanup(
  cleanups: OrderedMap<string, string>,
  sandboxId: string,
  nodeId: string,
  max = cleanupsMax,
): OrderedMap<string, string> {
  const next = cleanups.set(sandboxId, nodeId);
  if (next.size <= max) return next;
  return next.slice(Math.max(next.size - max, Math.ceil(max / 8)));
}

/**
 * The same rule as `withCleanup` on the state's own table (a SlotTable draft, edited in place): `nodeId` is
 * owed a terminate for `sandboxId` (one already owed keeps its place, as in an OrderedMap), and beyond `max` the oldest are dropped, an eighth of `max` at once, so the
 * kept set is exactly what `withCleanup` keeps. A SlotTable drops its oldest in O(1), so the eighth is kept
 * only so that every replica, old or new, forgets the same debts.
 */
export function oweCleanupIn(
  cleanups: SlotTableDraft<string>,
  sandboxId: string,
  nodeId: string,
  max = cleanupsMax,
): void {
  cleanups.set(sandboxId, nodeId);
  if (cleanups.size <= max) return;
  const drop = Math.max(cleanups.size - max, Math.ceil(max / 8));
  cleanups.dropOldest(drop);
}

/** The allocation a sandbox takes on its node; release gives back exactly the same shape. */
export function shapeOf(
  spec: SandboxSpec,
  tenant: string,
  gpuDevices: Sandbox['gpuDevices'],
): AllocationShape {
  if (spec.antiAffinity === undefined && spec.spread === undefined)
    return { resources: spec.resources, gpuDevices };
  return {
    resources: spec.resources,
    gpuDevices,
    ...(spec.antiAffinity === undefined ? {} : { antiAffinityGroup: spec.antiAffinity.group }),
    ...(spec.spread === undefined
      ? {}
      : { spread: { group: spec.spread.group ?? tenant, label: spec.spread.label } }),
  };
}

/**
 * A stable digest of a spec (keys sorted), so "same request id, different spec" is detected without
 * keeping every spec. Two 32-bit FNV-1a lanes over the canonical JSON.
 */
export function specDigest(spec: SandboxSpec): string {
  // A deeply frozen spec cannot change (freezing is for good), so its digest is kept with it: a workload's few
  // shared spec objects are digested once per run instead of once per batch (canonical JSON sorts every
  // level's keys). Any other spec (one decoded from the log or a request) is digested every time.
  if (!Object.isFrozen(spec)) return digestOf(canonicalJson(spec));
  let digest = frozenSpecDigests.get(spec);
  if (digest === undefined) {
    digest = digestOf(canonicalJson(spec));
    if (isDeepFrozen(spec)) frozenSpecDigests.set(spec, digest);
  }
  return digest;
}

/** Digests of deeply frozen specs (see `specDigest`). */
const frozenSpecDigests = new WeakMap<SandboxSpec, string>();

/**
 * A digest of what the caller asked a command to do: its type and arguments, without `atMs`, the request
 * id, or what the leader decided for it (a resume's node), so the same call retried on another leader has
 * the same digest and a call with other arguments does not. Prefixed with the type so it never equals a
 * create's spec digest by construction of the input.
 */
export function commandDigest(cmd: Command): string {
  const { atMs: _atMs, requestId: _rid, ...args } = cmd as Command & { requestId?: string };
  const asked =
    cmd.type === 'resume' ? { type: cmd.type, sandboxId: cmd.sandboxId } : (args as Record<string, unknown>);
  return digestOf(`cmd:${canonicalJson(asked)}`);
}

function digestOf(s: string): string {
  let a = 0x811c9dc5;
  let b = 0x01000193 ^ s.length;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    a = Math.imul(a ^ c, 0x01000193) >>> 0;
    b = Math.imul(b ^ c, 0x5bd1e995) >>> 0;
  }
  return a.toString(16).padStart(8, '0') + b.toString(16).padStart(8, '0');
}

function canonicalJson(v: unknown): string {
  if (v === null || typeof v !== 'object') return JSON.stringify(v) as string;
  if (Array.isArray(v)) {
    let out = '[';
    // `?? ''` as Array#join writes an element that has no JSON form (undefined).
    for (let i = 0; i < v.length; i++) out += (i === 0 ? '' : ',') + (canonicalJson(v[i]) ?? '');
    return `${out}]`;
  }
  // Plain loops rather than filter/map/join: a verifier digests every item of every batch.
  const o = v as Record<string, unknown>;
  const keys = Object.keys(o).sort();
  let out = '{';
  for (const k of keys) {
    const x = o[k];
    if (x === undefined) continue;
    out += `${out.length === 1 ? '' : ','}${JSON.stringify(k)}:${canonicalJson(x)}`;
  }
  return `${out}}`;
}

/** True when adding `spec` keeps the tenant within its quota. */
export function withinQuota(usage: Usage, quota: Quota | undefined, spec: SandboxSpec): string | undefined {
  if (quota === undefined) return undefined;
  if (quota.sandboxes !== undefined && usage.sandboxes + 1 > quota.sandboxes)
    return `sandboxes ${usage.sandboxes + 1} > quota ${quota.sandboxes}`;
  for (const r of ['cpu', 'memory', 'disk'] as const) {
    const q = quota[r];
    if (q !== undefined && usage[r] + spec.resources[r] > q)
      return `${r} ${usage[r] + spec.resources[r]} > quota ${q}`;
  }
  return undefined;
}

/**
 * The working copy of one apply: immutable maps are reassigned as they change, and the ClusterIndex
 * builder is opened only by the first write that needs it.
 */
class Draft {
  d: { -readonly [K in 'applied' | 'nodes' | 'usage' | 'quotas' | 'index']: StateData[K] };
  readonly #base: StateData;
  readonly #baseState: SchedulerState;
  #builder: IndexBuilder | undefined;
  /** The events of the command being applied (a batch gives each command a fresh list: `nextCommand`). */
  events: SchedulerEvent[] = [];
  /** The Raft index and time of the command being applied (a batch moves them on: `nextCommand`). */
  entryIndex: number;
  atMs: number;
  constructor(base: SchedulerState, entryIndex: number, atMs: number) {
    this.entryIndex = entryIndex;
    this.atMs = atMs;
    // Mutable copies (immutable's transient mode, slot-table drafts): a batch of thousands of items then
    // updates the maps in place instead of allocating a new path per item. The base state is never touched.
    const b = base.data();
    this.#base = b;
    this.#baseState = base;
    this.d = { ...b, applied: entryIndex, nodes: b.nodes.asMutable(), usage: b.usage.asMutable() };
  }
  get builder(): IndexBuilder {
    if (this.#builder === undefined) this.#builder = this.d.index.edit();
    return this.#builder;
  }
  /** Reads the index as it stands in this draft. */
  get reader(): IndexBuilder | ClusterIndex {
    return this.#builder ?? this.d.index;
  }
  /** True when this draft's index is `index` itself, no builder opened on it (condition (a) of `PlanOrigin`). */
  indexIs(index: ClusterIndex): boolean {
    return this.#builder === undefined && this.d.index === index;
  }
  /** Takes a plan's index as this draft's: the caller checked that its allocations are this entry's (PlanOrigin). */
  adoptIndex(base: ClusterIndex, index: ClusterIndex): void {
    assert(this.indexIs(base), "a plan's index is adopted only onto the index it was planned on", {
      version: this.d.index.version,
      baseVersion: base.version,
    });
    this.d.index = index;
  }
  // The tables' drafts are opened by the first access: most entries touch one or two of them.
  #sandboxes: SlotTableDraft<Sandbox> | undefined;
  #dedup: SlotTableDraft<DedupEntry> | undefined;
  #cleanups: SlotTableDraft<string> | undefined;
  get sandboxes(): SlotTableDraft<Sandbox> {
    if (this.#sandboxes === undefined) this.#sandboxes = this.#base.sandboxes.edit();
    return this.#sandboxes;
  }
  get dedup(): SlotTableDraft<DedupEntry> {
    if (this.#dedup === undefined) this.#dedup = this.#base.dedup.edit();
    return this.#dedup;
  }
  /** The dedup table as it stands, without opening a draft of it. */
  get dedupReader(): SlotTableDraft<DedupEntry> | SlotTable<DedupEntry> {
    return this.#dedup ?? this.#base.dedup;
  }
  /**
   * The sandboxes holding resources on `nodeId` as this draft stands: the base version's list with this draft's
   * journal replayed on it (a failure, reconcile or removal reads it; O(journal), once per such entry).
   */
  nodeList(nodeId: string): readonly string[] {
    const ids = [...(this.#baseState.nodeLists().get(nodeId) ?? noIdList)];
    for (let i = 0; i < this.#linkNodes.length; i++) {
      if (this.#linkNodes[i] !== nodeId) continue;
      const id = this.#linkIds[i] as string;
      if (this.#linkSigns[i] === 1) ids.push(id);
      else {
        const at = ids.lastIndexOf(id);
        assert(at >= 0, 'a sandbox leaving a node was linked to it', { nodeId, sandboxId: id });
        ids.splice(at, 1);
      }
    }
    return ids;
  }
  get cleanups(): SlotTableDraft<string> {
    if (this.#cleanups === undefined) this.#cleanups = this.#base.cleanups.edit();
    return this.#cleanups;
  }
  /** The cleanups as they stand, without opening a draft of them. */
  get cleanupsReader(): SlotTableDraft<string> | SlotTable<string> {
    return this.#cleanups ?? this.#base.cleanups;
  }
  /**
   * Ends the command being applied the way `finish` ends an entry — usage records written back — so that the
   * next command of a batch sees, and leaves, exactly what it would after a publish: a tenant removed and added
   * back goes to the end of its map, as it would.
   */
  endCommand(): void {
    if (this.#usage.size > 0) {
      for (const [tenant, u] of this.#usage) {
        this.d.usage =
          u.sandboxes === 0 ? this.d.usage.remove(tenant) : this.d.usage.set(tenant, Object.freeze(u));
      }
      this.#usage.clear();
    }
  }

  /** Moves the draft on to the next command of a batch, at Raft index `entryIndex` and time `atMs`. */
  nextCommand(entryIndex: number, atMs: number): void {
    this.entryIndex = entryIndex;
    this.atMs = atMs;
    this.d.applied = entryIndex;
    this.events = [];
  }

  finish(): SchedulerState {
    this.endCommand();
    if (this.#builder !== undefined) this.d.index = this.#builder.publish();
    const d = this.d;
    return SchedulerState.fromData({
      ...d,
      nodes: d.nodes.asImmutable(),
      usage: d.usage.asImmutable(),
      sandboxes: this.#sandboxes?.publish() ?? this.#base.sandboxes,
      byNode: this.#publishLinks(),
      dedup: this.#dedup?.publish() ?? this.#base.dedup,
      cleanups: this.#cleanups?.publish() ?? this.#base.cleanups,
    });
  }

  /**
   * Tenants' usage as edited by this draft, counted in place (one record per tenant per draft, not per item)
   * and written to the usage map by finish().
   */
  readonly #usage = new Map<string, { cpu: number; memory: number; disk: number; sandboxes: number }>();

  /** A tenant's usage as it stands in this draft. */
  usageOf(tenant: string): Usage {
    return this.#usage.get(tenant) ?? this.d.usage.get(tenant) ?? zeroUsage;
  }

  addUsage(tenant: string, spec: SandboxSpec, sign: 1 | -1): void {
    let u = this.#usage.get(tenant);
    if (u === undefined) {
      u = { ...(this.d.usage.get(tenant) ?? zeroUsage) };
      this.#usage.set(tenant, u);
    }
    u.cpu += sign * spec.resources.cpu;
    u.memory += sign * spec.resources.memory;
    u.disk += sign * spec.resources.disk;
    u.sandboxes += sign;
    assert(u.sandboxes >= 0 && u.cpu >= 0, 'tenant usage went negative', { tenant, next: u });
  }

  /**
   * Records a new sandbox (placed or pending): the record, its tenant's index and usage, its request id in
   * the dedup table, and its first event. A placed one's node allocation and link are the caller's.
   */
  addSandbox(sb: Sandbox, specDigest: string, reason: string | undefined): void {
    this.sandboxes.set(sb.id, sb);
    this.addUsage(sb.tenant, sb.spec, 1);
    // The table copies the fields into its columns (dedup-table.ts): this object is not kept.
    this.dedup.set(sb.requestId, { sandboxId: sb.id, specDigest, atMs: this.atMs });
    this.event(sb, sb.state, reason, 'none');
  }

  /**
   * Puts a sandbox that holds no node (pending, lost or suspended) on `nodeId` in state `to`, allocating its
   * shape there; what it carried about waiting or being lost (reason, lostFrom, pendingUntilMs) is dropped.
   * The caller has checked the transition and the room.
   */
  takeNode(sb: Sandbox, nodeId: string, gpuDevices: Sandbox['gpuDevices'], to: SandboxState): void {
    this.builder.allocate(nodeId, shapeOf(sb.spec, sb.tenant, gpuDevices));
    const { reason: _reason, lostFrom: _lostFrom, pendingUntilMs: _until, ...rest } = sb;
    const next: Sandbox = Object.freeze({
      ...rest,
      state: to,
      nodeId,
      gpuDevices: gpuDevicesOf(gpuDevices),
      updatedAtMs: this.atMs,
    });
    this.sandboxes.set(sb.id, next);
    this.linkNode(nodeId, sb.id, 1);
    this.event(next, to, undefined, sb.state);
  }

  /** `sandboxId` joins (1) or leaves (-1) `nodeId`'s list: journaled, replayed into the lists on publish. */
  linkNode(nodeId: string, sandboxId: string, sign: 1 | -1): void {
    this.#linkNodes.push(nodeId);
    this.#linkIds.push(sandboxId);
    this.#linkSigns.push(sign);
  }

  /** This draft's node-list edits, in order (see NodeLists). */
  readonly #linkNodes: string[] = [];
  readonly #linkIds: string[] = [];
  readonly #linkSigns: number[] = [];

  /**
   * The node lists for the version being published: the base's, with this draft's journal replayed, when the
   * base owns them (the constructor of the new version takes them over); else none, and the new version builds
   * its own when first asked.
   */
  #publishLinks(): NodeLists | undefined {
    const lists = this.#baseState.ownedNodeLists();
    if (lists === undefined) return undefined;
    lists.replay(this.#linkNodes, this.#linkIds, this.#linkSigns);
    return lists;
  }

  /**
   * Moves a sandbox to `to` (already validated by the caller), releasing its allocation when it stops
   * holding one and forgetting it once terminated.
   */
  setState(
    sb: Sandbox,
    to: SandboxState,
    extra: Partial<Pick<Sandbox, 'reason' | 'snapshotNodeId'>> = {},
  ): void {
    if (holdsAllocation(sb.state) && !holdsAllocation(to)) {
      assert(sb.nodeId !== undefined, 'an allocated sandbox has a node', { sandboxId: sb.id });
      const slot = this.reader.slotOf(sb.nodeId);
      assert(slot !== undefined, 'a node holding a sandbox has a slot', { nodeId: sb.nodeId });
      // Exactly the shape it took (validated then), so released without validating it again.
      this.builder.releaseAt(slot, shapeOf(sb.spec, sb.tenant, sb.gpuDevices));
    }
    const wasLive = !isFinished(sb.state);
    const isLive = !isFinished(to);
    if (wasLive && !isLive) this.addUsage(sb.tenant, sb.spec, -1);
    this.event(sb, to, extra.reason);
    const keepsNode = holdsAllocation(to);
    if (!keepsNode && sb.nodeId !== undefined) this.linkNode(sb.nodeId, sb.id, -1);
    if (to === 'terminated') {
      this.sandboxes.remove(sb.id);
      const holder =
        sb.state === 'placed' ? sb.nodeId : sb.state === 'suspended' ? sb.snapshotNodeId : undefined;
      if (holder !== undefined) this.oweCleanup(sb.id, holder);
      return;
    }
    // A sandbox lost from a node remembers where it was, so that node's reconcile can give it back; the
    // memory goes as soon as it leaves `lost`.
    const lostFrom: LostFrom | undefined =
      to === 'lost' && holdsAllocation(sb.state) && sb.nodeId !== undefined
        ? Object.freeze({ nodeId: sb.nodeId, gpuDevices: sb.gpuDevices })
        : undefined;
    const { lostFrom: _lostFrom, ...base } = sb;
    const { nodeId: _node, gpuDevices: _gpu, ...rest } = base;
    const next: Sandbox = keepsNode
      ? { ...base, ...extra, state: to, updatedAtMs: this.atMs }
      : {
          ...rest,
          ...extra,
          gpuDevices: noGpuDevices,
          ...(lostFrom === undefined ? {} : { lostFrom }),
          state: to,
          updatedAtMs: this.atMs,
        };
    this.sandboxes.set(sb.id, Object.freeze(next));
  }

  event(
    sb: Sandbox,
    to: SandboxState,
    reason: string | undefined,
    from: SandboxState | 'none' = sb.state,
  ): void {
    // Optional fields assigned, not spread: one event per item, and conditional spreads allocate twice.
    const e: { -readonly [K in keyof SandboxEvent]: SandboxEvent[K] } = {
      kind: 'sandbox',
      index: this.entryIndex,
      atMs: this.atMs,
      sandboxId: sb.id,
      tenant: sb.tenant,
      from,
      to,
    };
    if (sb.nodeId !== undefined) e.nodeId = sb.nodeId;
    if (reason !== undefined) e.reason = reason;
    this.events.push(e);
  }

  /** Records that `nodeId` is owed a terminate for `sandboxId` (bounded: the oldest goes first). */
  oweCleanup(sandboxId: string, nodeId: string): void {
    oweCleanupIn(this.cleanups, sandboxId, nodeId);
  }

  /** Forgets every cleanup owed to `nodeId` (it reconciled, so it stops what is not its own; or it left). */
  dropCleanupsOf(nodeId: string): void {
    const owed: string[] = [];
    for (const [id, n] of this.cleanupsReader.entries()) if (n === nodeId) owed.push(id);
    for (const id of owed) this.cleanups.remove(id);
  }

  orphanEvent(nodeId: string, sandboxId: string, reason: string): void {
    this.events.push({ kind: 'orphan', index: this.entryIndex, atMs: this.atMs, nodeId, sandboxId, reason });
  }

  nodeEvent(
    nodeId: string,
    change: 'registered' | 'updated' | 'state' | 'removed',
    state?: NodeSpec['state'],
  ): void {
    this.events.push({
      kind: 'node',
      index: this.entryIndex,
      atMs: this.atMs,
      nodeId,
      change,
      ...(state === undefined ? {} : { state }),
    });
  }
}

/** The outcome of applying one entry: the next state, the proposer's result and the committed events. */
export interface Applied {
  readonly state: SchedulerState;
  readonly result: CommandResult;
  readonly events: readonly SchedulerEvent[];
}

/**
 * Applies one command committed at Raft index `entryIndex`. Never throws for a command that is merely
 * wrong for the current state (unknown sandbox, illegal transition, busy node): that is a deterministic
 * rejection, returned as `{ok: false}` with the state unchanged. Throws only on a broken invariant.
 */
export function applyCommand(
  state: SchedulerState,
  cmd: Command,
  entryIndex: number,
  hint?: PlaceHint,
): Applied {
  assert(entryIndex > state.applied, 'entries are applied in order, once', {
    entryIndex,
    applied: state.applied,
  });
  const requestId = 'requestId' in cmd ? cmd.requestId : undefined;
  if (requestId !== undefined) {
    const seen = state.dedup.get(requestId);
    if (seen !== undefined)
      return { state: state.withApplied(entryIndex), result: duplicateOf(seen, cmd), events: [] };
  }
  const draft = new Draft(state, entryIndex, cmd.atMs);
  let result: CommandResult;
  try {
    result = applyTo(draft, cmd, hint);
  } catch (err) {
    if (!(err instanceof TrellisError)) throw err;
    // A refused command changes nothing, its request id included: it had no effect, so a retry that
    // applies later is as if only the retry had been made (and bad input leaves no trace in the state).
    return {
      state: state.withApplied(entryIndex),
      result: { ok: false, error: errorResult(err) },
      events: [],
    };
  }
  if (requestId !== undefined) return recordOutcome(draft, requestId, cmd, result);
  evictDedup(draft);
  return { state: draft.finish(), result, events: draft.events };
}

/** What one command of a batch returned to its proposer, and the events it committed. */
export interface AppliedCommand {
  readonly result: CommandResult;
  readonly events: readonly SchedulerEvent[];
}

/** The outcome of applying a batch of entries: the state after the last, and each command's own outcome. */
export interface AppliedBatch {
  readonly state: SchedulerState;
  readonly applied: readonly AppliedCommand[];
}

/**
 * Applies `cmds`, committed at Raft indexes `firstIndex`, `firstIndex + 1`, …, in ONE draft: one ClusterIndex
 * builder, one draft of each table, one published version at the end, instead of one of each per entry (each
 * builder copies every index page it writes, and a window of the simulator touches most of them). Each
 * command's result and events are exactly those `applyCommand` gives applying them one at a time, and so is
 * the final state (test/scheduler/apply-batch.test.ts compares them on seeded random streams). Readers see
 * no version between two commands of a batch; callers that must read one (the leader deciding between
 * entries) apply one at a time.
 *
 * A refused command (`{ok: false}` from `applyCommand`) may have read a half-checked draft, and a draft
 * cannot be rolled back, so the batch then starts over one entry at a time from `state` (which no draft
 * touched): refusals cost their batch its sharing, never its exactness.
 */
export function applyCommands(
  state: SchedulerState,
  cmds: readonly Command[],
  firstIndex: number,
): AppliedBatch {
  assert(firstIndex > state.applied, 'entries are applied in order, once', {
    firstIndex,
    applied: state.applied,
  });
  const first = cmds[0];
  if (first === undefined) return { state, applied: [] };
  const draft = new Draft(state, firstIndex, first.atMs);
  const applied: AppliedCommand[] = [];
  for (let i = 0; i < cmds.length; i++) {
    const cmd = cmds[i] as Command;
    if (i > 0) draft.nextCommand(firstIndex + i, cmd.atMs);
    const one = applyInDraft(draft, cmd);
    if (one === undefined) return applyOneByOne(state, cmds, firstIndex);
    applied.push(one);
  }
  return { state: draft.finish(), applied };
}

/** One command into a batch's draft; undefined when it was refused (the draft may be half-written). */
function applyInDraft(draft: Draft, cmd: Command): AppliedCommand | undefined {
  const requestId = 'requestId' in cmd ? cmd.requestId : undefined;
  if (requestId !== undefined) {
    const seen = draft.dedupReader.get(requestId);
    if (seen !== undefined) return { result: duplicateOf(seen, cmd), events: [] };
  }
  let result: CommandResult;
  try {
    result = applyTo(draft, cmd);
  } catch (err) {
    if (!(err instanceof TrellisError)) throw err;
    return undefined;
  }
  if (requestId !== undefined) recordIn(draft, requestId, cmd, result);
  evictDedup(draft);
  draft.endCommand();
  return { result, events: draft.events };
}

function applyOneByOne(state: SchedulerState, cmds: readonly Command[], firstIndex: number): AppliedBatch {
  const applied: AppliedCommand[] = [];
  let at = state;
  for (let i = 0; i < cmds.length; i++) {
    const one = applyCommand(at, cmds[i] as Command, firstIndex + i);
    at = one.state;
    applied.push({ result: one.result, events: one.events });
  }
  return { state: at, applied };
}

/**
 * What a command whose request id is already in the dedup table returns: the first outcome when it asks
 * the same thing, else RequestIdConflictError. The state is unchanged either way (one effect, one event).
 */
function duplicateOf(seen: DedupEntry, cmd: Command): CommandResult {
  if (seen.result !== undefined && seen.specDigest === commandDigest(cmd)) return seen.result;
  return { ok: false, error: errorResult(conflict(String((cmd as { requestId?: string }).requestId), seen)) };
}

function conflict(requestId: string, seen: DedupEntry): RequestIdConflictError {
  const what = seen.result === undefined ? `a create (sandbox ${seen.sandboxId})` : 'a different call';
  return new RequestIdConflictError(`request id ${requestId} was already used for ${what}`);
}

function recordOutcome(draft: Draft, requestId: string, cmd: Command, result: CommandResult): Applied {
  recordIn(draft, requestId, cmd, result);
  evictDedup(draft);
  return { state: draft.finish(), result, events: draft.events };
}

/** Remembers a command's request id with its first outcome, which a duplicate gets back. */
function recordIn(draft: Draft, requestId: string, cmd: Command, result: CommandResult): void {
  // Copied into the table's columns (dedup-table.ts); the result is kept as it is, a duplicate gets it back.
  draft.dedup.set(requestId, { sandboxId: '', specDigest: commandDigest(cmd), atMs: draft.atMs, result });
}

function applyTo(draft: Draft, cmd: Command, hint?: PlaceHint): CommandResult {
  switch (cmd.type) {
    case 'node.register':
      return registerNode(draft, cmd.spec as NodeSpec);
    case 'node.update':
      return updateNode(draft, cmd.spec as NodeSpec);
    case 'node.state':
      return setNodeState(draft, cmd.nodeId, cmd.state);
    case 'node.remove':
      return removeNode(draft, cmd.nodeId);
    case 'node.heartbeat':
      return heartbeat(draft, cmd.nodeIds);
    case 'node.reconcile':
      return reconcile(draft, cmd.nodeId, cmd.running);
    case 'place':
      return place(draft, cmd.items, hint);
    case 'pend':
      return pend(draft, cmd.items);
    case 'status':
      return status(draft, cmd.items);
    case 'terminate':
      return terminate(draft, cmd.sandboxId);
    case 'suspend':
      return suspend(draft, cmd.sandboxId);
    case 'resume':
      return resume(draft, cmd.sandboxId, cmd.nodeId, cmd.gpuDevices ?? []);
    case 'quota.set':
      draft.d.quotas = draft.d.quotas.set(cmd.tenant, Object.freeze({ ...cmd.quota }));
      return { ok: true };
    case 'replace':
      return replace(draft, cmd.items);
  }
}

/**
 * Places lost stateless sandboxes again (lost → placed). Each item is checked alone against the state as it
 * is now — still lost, still stateless, the node ready with room — and refused alone, so a plan made on an
 * older snapshot can never over-commit a node. Usage is unchanged: a lost sandbox still counts for its tenant.
 */
function replace(
  draft: Draft,
  items: readonly { sandboxId: string; nodeId: string; gpuDevices: Sandbox['gpuDevices'] }[],
): CommandResult {
  const itemErrors: ErrorResult[] = [];
  for (const item of items) {
    const sb = draft.sandboxes.get(item.sandboxId);
    if (sb === undefined) {
      itemErrors.push(errorResult(new UnknownSandboxError(`sandbox ${item.sandboxId} does not exist`)));
      continue;
    }
    if (sb.state !== 'lost' || sb.spec.stateless !== true) {
      itemErrors.push(
        errorResult(
          new IllegalTransitionError(`sandbox ${sb.id} is ${sb.state}, not a lost stateless sandbox`),
        ),
      );
      continue;
    }
    const shape = shapeOf(sb.spec, sb.tenant, item.gpuDevices);
    if (!nodeCanTake(draft, item.nodeId, shape)) {
      itemErrors.push(
        errorResult(new NoCapacityError(`sandbox ${sb.id}: node ${item.nodeId} cannot take it`)),
      );
      continue;
    }
    transition(sb.id, sb.state, 'placed');
    draft.takeNode(sb, item.nodeId, item.gpuDevices, 'placed');
  }
  return itemErrors.length === 0 ? ok : { ok: true, itemErrors };
}

const ok: CommandResult = Object.freeze({ ok: true });

/** True when the node is registered, ready, and has room for the shape now. */
function nodeCanTake(draft: Draft, nodeId: string, shape: ReturnType<typeof shapeOf>): boolean {
  const rec = draft.d.nodes.get(nodeId);
  const slot = draft.reader.slotOf(nodeId);
  return (
    rec !== undefined &&
    rec.spec.state === 'ready' &&
    slot !== undefined &&
    draft.builder.fitsSlot(slot, shape)
  );
}

function requireNode(draft: Draft, nodeId: string): NodeRecord {
  const rec = draft.d.nodes.get(nodeId);
  if (rec === undefined) throw new UnknownNodeError(`node ${JSON.stringify(nodeId)} is not registered`);
  return rec;
}

function requireSandbox(draft: Draft, sandboxId: string): Sandbox {
  const sb = draft.sandboxes.get(sandboxId);
  if (sb === undefined) throw new UnknownSandboxError(`sandbox ${JSON.stringify(sandboxId)} does not exist`);
  return sb;
}

function registerNode(draft: Draft, spec: NodeSpec): CommandResult {
  if (draft.d.nodes.has(spec.id))
    throw new DuplicateNodeError(`node ${JSON.stringify(spec.id)} already exists`);
  validateNodeSpec(spec);
  draft.builder.registerNode(spec);
  draft.d.nodes = draft.d.nodes.set(
    spec.id,
    Object.freeze({ spec, registeredAtMs: draft.atMs, lastHeartbeatMs: draft.atMs }),
  );
  draft.nodeEvent(spec.id, 'registered', spec.state);
  return ok;
}

function updateNode(draft: Draft, spec: NodeSpec): CommandResult {
  const rec = requireNode(draft, spec.id);
  validateNodeSpec(spec);
  draft.builder.updateNode(spec);
  draft.d.nodes = draft.d.nodes.set(spec.id, Object.freeze({ ...rec, spec }));
  draft.nodeEvent(spec.id, 'updated', spec.state);
  if (spec.state === 'down' && rec.spec.state !== 'down') loseSandboxes(draft, spec.id);
  return ok;
}

function setNodeState(draft: Draft, nodeId: string, state: NodeSpec['state']): CommandResult {
  const rec = requireNode(draft, nodeId);
  if (rec.spec.state === state) return ok;
  const spec: NodeSpec = { ...rec.spec, state };
  draft.builder.setState(nodeId, state);
  // A node coming back counts as a fresh heartbeat, so health checking does not mark it down at once.
  draft.d.nodes = draft.d.nodes.set(nodeId, Object.freeze({ ...rec, spec, lastHeartbeatMs: draft.atMs }));
  draft.nodeEvent(nodeId, 'state', state);
  if (state === 'down') loseSandboxes(draft, nodeId);
  return ok;
}

/**
 * A node went down: every sandbox running on it is lost and gives its allocation back, except one whose
 * terminate was already acknowledged (`terminating`), which ends terminated (`giveUp`).
 */
function loseSandboxes(draft: Draft, nodeId: string): void {
  const ids = [...draft.nodeList(nodeId)].sort();
  for (const id of ids) {
    const sb = draft.sandboxes.get(id);
    assert(sb !== undefined, 'byNode names a known sandbox', { nodeId, id });
    if (holdsAllocation(sb.state)) giveUp(draft, sb, `node ${nodeId} went down`);
  }
}

/**
 * Gives up a sandbox whose node no longer holds it (down, or a reconcile without it): `lost`, or
 * `terminated` when its terminate was already acknowledged. Its machine is gone and the caller asked for
 * it to end, so nothing could ever take it out of `lost` (it showed as stuck in a chaos run). A node that
 * comes back still holding it is told to stop it, as for any sandbox it does not own. Returns the state.
 */
function giveUp(draft: Draft, sb: Sandbox, reason: string): 'lost' | 'terminated' {
  const to = sb.state === 'terminating' ? 'terminated' : 'lost';
  draft.setState(sb, transition(sb.id, sb.state, to), { reason });
  return to;
}

function removeNode(draft: Draft, nodeId: string): CommandResult {
  requireNode(draft, nodeId);
  const held = draft.nodeList(nodeId).length;
  if (held > 0)
    throw new NodeBusyError(`node ${nodeId} still holds ${held} sandboxes`, { details: { held } });
  draft.builder.removeNode(nodeId);
  draft.d.nodes = draft.d.nodes.remove(nodeId);
  draft.dropCleanupsOf(nodeId);
  draft.nodeEvent(nodeId, 'removed');
  return ok;
}

function heartbeat(draft: Draft, nodeIds: readonly string[]): CommandResult {
  // Unknown ids are skipped rather than failing the batch: a node may be removed while its last
  // heartbeat is still in flight.
  for (const id of nodeIds) {
    const rec = draft.d.nodes.get(id);
    if (rec !== undefined && rec.lastHeartbeatMs < draft.atMs)
      draft.d.nodes = draft.d.nodes.set(id, Object.freeze({ ...rec, lastHeartbeatMs: draft.atMs }));
  }
  return ok;
}

/**
 * A returning node's report of what it holds, reconciled against state. Checked whole first (known node,
 * each sandbox listed once), so a bad report changes nothing. Then, in this order:
 *   1. the node is `ready` again if it was `down` (any other state is kept: draining stays draining), with
 *      a fresh heartbeat;
 *   2. each sandbox the state places on the node (holding resources there) that the report leaves out is
 *      lost, "node <id> did not report it", and so eligible for the stateless re-placement (one whose
 *      terminate was acknowledged, `terminating`, ends terminated instead: see `giveUp`);
 *   3. each reported sandbox, in id order:
 *      - held here already (resources on this node, or its snapshot when suspended): unchanged, since
 *        progress is for status reports;
 *      - lost from this node: restored in the reported state, retaking the same shape and GPU shares, if
 *        it still fits (a suspended one needs no room). If it does not, the node must stop it (an orphan):
 *        a stateless one stays lost for re-placement, a stateful one fails, as its only copy is stopping;
 *      - anything else (unknown, finished, placed or lost elsewhere, suspended elsewhere): an orphan,
 *        state unchanged.
 * Restores are checked one by one against the index after the losses of step 2, so the node is never
 * over-committed whatever it reports; when not all fit, lower sandbox ids win.
 */
function reconcile(draft: Draft, nodeId: string, running: ReconcileReport): CommandResult {
  const rec = requireNode(draft, nodeId);
  const reported = new Map<string, NodeHeldState>();
  for (const [i, item] of running.entries()) {
    if (reported.has(item.sandboxId))
      throw new ValidationError(`running.${i}.sandboxId`, `sandbox ${item.sandboxId} is listed twice`);
    reported.set(item.sandboxId, item.state);
  }
  const heartbeatMs = Math.max(rec.lastHeartbeatMs, draft.atMs);
  // The node's report covers the copies it holds: one that is no longer ours comes back as an orphan below.
  draft.dropCleanupsOf(nodeId);
  if (rec.spec.state === 'down') {
    draft.builder.setState(nodeId, 'ready');
    const spec: NodeSpec = { ...rec.spec, state: 'ready' };
    draft.d.nodes = draft.d.nodes.set(nodeId, Object.freeze({ ...rec, spec, lastHeartbeatMs: heartbeatMs }));
    draft.nodeEvent(nodeId, 'state', 'ready');
  } else if (rec.lastHeartbeatMs < heartbeatMs) {
    draft.d.nodes = draft.d.nodes.set(nodeId, Object.freeze({ ...rec, lastHeartbeatMs: heartbeatMs }));
  }
  const lost: string[] = [];
  for (const id of [...draft.nodeList(nodeId)].sort()) {
    if (reported.has(id)) continue;
    const sb = draft.sandboxes.get(id);
    assert(sb !== undefined, 'byNode names a known sandbox', { nodeId, id });
    if (!holdsAllocation(sb.state)) continue;
    if (giveUp(draft, sb, `node ${nodeId} did not report it`) === 'lost') lost.push(id);
  }
  const restored: { sandboxId: string; state: SandboxState }[] = [];
  const failed: string[] = [];
  const orphans: { sandboxId: string; reason: string }[] = [];
  for (const id of [...reported.keys()].sort()) {
    const to = reported.get(id) as NodeHeldState;
    const sb = draft.sandboxes.get(id);
    const verdict = reportedVerdict(sb, nodeId);
    if (verdict.kind === 'held') continue;
    if (verdict.kind === 'orphan') {
      orphans.push({ sandboxId: id, reason: verdict.reason });
      draft.orphanEvent(nodeId, id, verdict.reason);
      continue;
    }
    assert(sb !== undefined, 'a sandbox to restore exists', { id });
    if (restoreLost(draft, sb, nodeId, to)) {
      restored.push({ sandboxId: id, state: to });
      continue;
    }
    const reason = `node ${nodeId} came back without room for it`;
    orphans.push({ sandboxId: id, reason });
    draft.orphanEvent(nodeId, id, reason);
    if (sb.spec.stateless !== true) {
      draft.setState(sb, transition(sb.id, sb.state, 'failed'), { reason });
      failed.push(id);
    }
  }
  return { ok: true, reconciled: { restored, lost, failed, orphans } };
}

type Verdict = { readonly kind: 'held' | 'restore' } | { readonly kind: 'orphan'; readonly reason: string };
const held: Verdict = Object.freeze({ kind: 'held' });
const orphan = (reason: string): Verdict => ({ kind: 'orphan', reason });

/**
 * What to do with one sandbox a node reported: nothing (state agrees it is there), restore it (lost from
 * this node), or tell the node to stop it, saying why.
 */
function reportedVerdict(sb: Sandbox | undefined, nodeId: string): Verdict {
  if (sb === undefined) return orphan('unknown to the scheduler (never placed, or terminated)');
  if (holdsAllocation(sb.state))
    return sb.nodeId === nodeId ? held : orphan(`it runs on node ${String(sb.nodeId)}`);
  if (sb.state === 'suspended') {
    return sb.snapshotNodeId === nodeId
      ? held
      : orphan(`it is suspended with its snapshot on node ${String(sb.snapshotNodeId)}`);
  }
  if (sb.state === 'lost') {
    return sb.lostFrom?.nodeId === nodeId
      ? { kind: 'restore' }
      : orphan(
          `it was lost from ${sb.lostFrom === undefined ? 'an unknown node' : `node ${sb.lostFrom.nodeId}`}`,
        );
  }
  return orphan(`it is ${sb.state}`);
}

/**
 * Gives a sandbox lost from `nodeId` back to it in state `to`, retaking the shape it held there. Returns
 * false, changing nothing, when that shape no longer fits.
 */
function restoreLost(draft: Draft, sb: Sandbox, nodeId: string, to: NodeHeldState): boolean {
  assert(sb.lostFrom?.nodeId === nodeId, 'restores only to the node it was lost from', { sandboxId: sb.id });
  transition(sb.id, sb.state, to);
  const { reason: _reason, lostFrom, ...rest } = sb;
  if (!holdsAllocation(to)) {
    // Suspended: the node kept the memory snapshot, which takes no allocation.
    const next: Sandbox = Object.freeze({
      ...rest,
      state: to,
      snapshotNodeId: nodeId,
      gpuDevices: [],
      updatedAtMs: draft.atMs,
    });
    draft.sandboxes.set(sb.id, next);
    draft.event(next, to, undefined, 'lost');
    return true;
  }
  const shape = shapeOf(sb.spec, sb.tenant, lostFrom.gpuDevices);
  const slot = draft.reader.slotOf(nodeId);
  assert(slot !== undefined, 'a registered node has a slot', { nodeId });
  if (!draft.builder.fitsSlot(slot, shape)) return false;
  draft.takeNode(sb, nodeId, lostFrom.gpuDevices, to);
  return true;
}

/**
 * Checks one place item against the draft: the slot of its node when it can commit (the caller allocates
 * there, so the node id is looked up once), else why it cannot.
 */
function placeCheck(draft: Draft, item: PlaceItem, shape: AllocationShape): TrellisError | number {
  if (draft.sandboxes.has(item.sandboxId))
    return new ValidationError('sandboxId', `sandbox ${item.sandboxId} already exists`);
  return quotaCheck(draft, item.spec) ?? nodeCheck(draft, item, shape);
}

function quotaCheck(draft: Draft, spec: SandboxSpec): TrellisError | undefined {
  const reason = withinQuota(draft.usageOf(spec.tenant), draft.d.quotas.get(spec.tenant), spec);
  return reason === undefined ? undefined : new QuotaExceededError(`tenant ${spec.tenant}: ${reason}`);
}

/**
 * The node is registered, ready, and has room for the item's sandbox: its slot, else why not. Read from the
 * index alone, which holds every registered node's state (kept in step with `nodes` by every node command, and
 * what the planner reads), so the node map is not read per item.
 */
function nodeCheck(draft: Draft, item: PlaceItem, shape: AllocationShape): TrellisError | number {
  const reader = draft.reader;
  const slot = reader.slotOf(item.nodeId);
  if (slot === undefined) {
    assert(!draft.d.nodes.has(item.nodeId), 'a registered node has a slot', { nodeId: item.nodeId });
    return new UnknownNodeError(`node ${item.nodeId} is not registered`);
  }
  if (!reader.isReady(slot))
    return new NodeNotReadyError(`node ${item.nodeId} is ${reader.stateOf(slot)}, not ready`);
  if (!draft.builder.fitsSlot(slot, shape)) {
    return new OverCommitError(`node ${item.nodeId} no longer has room for sandbox ${item.sandboxId}`);
  }
  return slot;
}

/** A new sandbox record for a place or pend item, stamped with the entry's time. */
function newSandbox(
  draft: Draft,
  item: { readonly requestId: string; readonly sandboxId: string; readonly spec: SandboxSpec },
  fields: Pick<Sandbox, 'state' | 'gpuDevices'> &
    Partial<Pick<Sandbox, 'nodeId' | 'reason' | 'pendingUntilMs'>>,
): Sandbox {
  // Built field by field rather than spread: one record per created sandbox.
  // A placed one's node in the literal: added after, it took an out-of-object property array per record, and
  // records live as long as their sandbox (the old generation).
  const sb: { -readonly [K in keyof Sandbox]: Sandbox[K] } =
    fields.nodeId === undefined
      ? {
          id: item.sandboxId,
          requestId: item.requestId,
          tenant: item.spec.tenant,
          spec: item.spec,
          state: fields.state,
          gpuDevices: gpuDevicesOf(fields.gpuDevices),
          createdAtMs: draft.atMs,
          updatedAtMs: draft.atMs,
        }
      : {
          id: item.sandboxId,
          requestId: item.requestId,
          tenant: item.spec.tenant,
          spec: item.spec,
          state: fields.state,
          gpuDevices: gpuDevicesOf(fields.gpuDevices),
          createdAtMs: draft.atMs,
          updatedAtMs: draft.atMs,
          nodeId: fields.nodeId,
        };
  if (fields.reason !== undefined) sb.reason = fields.reason;
  if (fields.pendingUntilMs !== undefined) sb.pendingUntilMs = fields.pendingUntilMs;
  return Object.freeze(sb);
}

function rejectedItem(
  item: { readonly requestId: string; readonly sandboxId: string },
  err: TrellisError,
): PlaceItemResult {
  return {
    requestId: item.requestId,
    sandboxId: item.sandboxId,
    outcome: 'rejected',
    error: errorResult(err),
  };
}

function place(draft: Draft, items: readonly PlaceItem[], hint: PlaceHint | undefined): CommandResult {
  const results: PlaceItemResult[] = [];
  // The verifier's lookups stand only for these very items against the very table it read (see PlaceHint).
  const unseen = hint?.items === items && draft.dedupReader === hint.dedup ? hint.unseen : undefined;
  // The plan's index stands for these very items on the very index it was planned on (see PlanOrigin): the
  // items are allocated on no builder while every one is placed as planned; the first that is not opens the
  // builder, which then takes the items before it, as it would have one by one.
  let origin =
    hint?.items === items &&
    hint.origin !== undefined &&
    hint.origin.plan.placed.count === items.length &&
    draft.indexIs(hint.origin.base)
      ? hint.origin
      : undefined;
  for (let i = 0; i < items.length; i++) {
    const item = items[i] as PlaceItem;
    const seen = unseen?.[i] === true ? undefined : draft.dedup.get(item.requestId);
    if (seen !== undefined && origin !== undefined) origin = allocateUpTo(draft, items, i);
    const waiting = seen === undefined ? undefined : draft.sandboxes.get(seen.sandboxId);
    if (seen !== undefined && waiting?.state === 'pending' && waiting.id === item.sandboxId) {
      results.push(placePending(draft, item, waiting));
      continue;
    }
    if (seen?.result !== undefined) {
      results.push(rejectedItem(item, conflict(item.requestId, seen)));
      continue;
    }
    if (seen !== undefined) {
      // A retried request, or a plan re-proposed by a new leader: the first commit wins, once.
      results.push({ requestId: item.requestId, sandboxId: seen.sandboxId, outcome: 'duplicate' });
      continue;
    }
    const shape = shapeOf(item.spec, item.spec.tenant, item.gpuDevices);
    // The node's slot from the adoption check when it passes (one id → slot read per item, not two).
    const adoptedSlot = origin === undefined ? -1 : adoptedCheck(draft, origin, i, item);
    if (adoptedSlot < 0 && origin !== undefined) origin = allocateUpTo(draft, items, i);
    const slot = origin === undefined ? placeCheck(draft, item, shape) : adoptedSlot;
    if (typeof slot !== 'number') {
      results.push(rejectedItem(item, slot));
      continue;
    }
    const sb = newSandbox(draft, item, { state: 'placed', nodeId: item.nodeId, gpuDevices: item.gpuDevices });
    if (origin === undefined) draft.builder.allocateAt(slot, shape);
    draft.linkNode(item.nodeId, sb.id, 1);
    draft.addSandbox(sb, item.specDigest, undefined);
    results.push({ requestId: item.requestId, sandboxId: sb.id, outcome: 'placed', nodeId: item.nodeId });
  }
  if (origin !== undefined) draft.adoptIndex(origin.base, origin.plan.index);
  return { ok: true, items: results };
}

/**
 * Item `k` of a place entry whose index is being adopted (PlanOrigin) passes every check `placeCheck` makes —
 * a new sandbox id, the tenant's quota, its node registered and ready — and is the plan's placement `k`: the
 * same request and spec (so the same allocation shape), on the same node slot. Its GPU devices are the plan's by
 * construction (the verifier copies them, and the hint stands only for the verifier's very `items`). Room is not
 * checked: the planner's `allocateSlot` checked these very allocations, in this order, on this very index. Returns
 * the node's slot when it passes, else -1.
 */
function adoptedCheck(draft: Draft, origin: PlanOrigin, k: number, item: PlaceItem): number {
  const placed = origin.plan.placed;
  const req = origin.requests[placed.request[k] as number];
  if (req === undefined || req.requestId !== item.requestId || req.spec !== item.spec) return -1;
  // The planned slot still holds the item's node: the id at the slot, not an id → slot map read (the verifier
  // read these very node records for this window, so they are warm; the map's entry is not).
  const index = draft.reader;
  const slot = placed.slot[k] as number;
  if (!index.isLive(slot) || index.nodeId(slot) !== item.nodeId || !index.isReady(slot)) return -1;
  return !draft.sandboxes.has(item.sandboxId) && quotaCheck(draft, item.spec) === undefined ? slot : -1;
}

/**
 * Stops adopting a plan's index at item `end`: allocates items [0, end) — each placed as planned, unallocated so
 * far — on the draft's builder, as the apply would have one at a time. Returns undefined (no origin any more).
 */
function allocateUpTo(draft: Draft, items: readonly PlaceItem[], end: number): undefined {
  // No builder for none: an entry that allocates nothing publishes the index it found (same version).
  if (end === 0) return undefined;
  const builder = draft.builder;
  for (let k = 0; k < end; k++) {
    const item = items[k] as PlaceItem;
    const slot = builder.slotOf(item.nodeId);
    const shape = shapeOf(item.spec, item.spec.tenant, item.gpuDevices);
    // The planner allocated exactly this on exactly this index: not fitting is a broken invariant, not a refusal.
    assert(
      slot !== undefined && builder.fitsSlot(slot, shape),
      'an item placed as planned fits where planned',
      {
        requestId: item.requestId,
        nodeId: item.nodeId,
      },
    );
    builder.allocateAt(slot, shape);
  }
  return undefined;
}

/**
 * A committed pending sandbox gets its node: the same checks as a new placement except quota, which the
 * sandbox already counts against since it was recorded.
 */
function placePending(draft: Draft, item: PlaceItem, sb: Sandbox): PlaceItemResult {
  const slot = nodeCheck(draft, { ...item, spec: sb.spec }, shapeOf(sb.spec, sb.tenant, item.gpuDevices));
  if (typeof slot !== 'number') return rejectedItem({ requestId: item.requestId, sandboxId: sb.id }, slot);
  draft.takeNode(sb, item.nodeId, item.gpuDevices, 'placed');
  return { requestId: item.requestId, sandboxId: sb.id, outcome: 'placed', nodeId: item.nodeId };
}

/**
 * Records requests no node can take yet as `pending` sandboxes, each with its reason and deadline, so a
 * new leader rebuilds its queue from them. Quota counts a pending sandbox like a placed one. A request id
 * already committed (placed meanwhile, or recorded by an earlier entry) is a duplicate and changes nothing.
 */
function pend(draft: Draft, items: readonly PendItem[]): CommandResult {
  const results: PlaceItemResult[] = [];
  for (const item of items) {
    const seen = draft.dedup.get(item.requestId);
    if (seen?.result !== undefined) {
      results.push(rejectedItem(item, conflict(item.requestId, seen)));
      continue;
    }
    if (seen !== undefined) {
      results.push({ requestId: item.requestId, sandboxId: seen.sandboxId, outcome: 'duplicate' });
      continue;
    }
    const refused = draft.sandboxes.has(item.sandboxId)
      ? new ValidationError('sandboxId', `sandbox ${item.sandboxId} already exists`)
      : quotaCheck(draft, item.spec);
    if (refused !== undefined) {
      results.push(rejectedItem(item, refused));
      continue;
    }
    const sb = newSandbox(draft, item, {
      state: 'pending',
      gpuDevices: [],
      reason: item.reason,
      pendingUntilMs: item.deadlineMs,
    });
    draft.addSandbox(sb, item.specDigest, item.reason);
    results.push({ requestId: item.requestId, sandboxId: sb.id, outcome: 'pending' });
  }
  return { ok: true, items: results };
}

function status(
  draft: Draft,
  items: readonly {
    sandboxId: string;
    state: SandboxState;
    reason?: string | undefined;
    nodeId?: string | undefined;
  }[],
): CommandResult {
  // Status reports come from nodes and may be late or repeated; each bad item is reported alone.
  const itemErrors: ErrorResult[] = [];
  for (const item of items) {
    const sb = draft.sandboxes.get(item.sandboxId);
    if (sb === undefined) {
      // The node owed a cleanup terminate says it is done: nothing more is owed.
      const owedTo = draft.cleanupsReader.get(item.sandboxId);
      if (item.state === 'terminated' && owedTo !== undefined && owedTo === item.nodeId) {
        draft.cleanups.remove(item.sandboxId);
        continue;
      }
      itemErrors.push(errorResult(new UnknownSandboxError(`sandbox ${item.sandboxId} does not exist`)));
      continue;
    }
    // Only the node holding the sandbox (or its snapshot, or the node it was lost from) speaks for it: a
    // stray worker's copy must not fail or finish someone else's sandbox.
    const holder = sb.nodeId ?? sb.snapshotNodeId ?? sb.lostFrom?.nodeId;
    if (item.nodeId !== undefined && item.nodeId !== holder) {
      itemErrors.push(
        errorResult(
          new IllegalTransitionError(
            `sandbox ${sb.id} is not on node ${item.nodeId} (${holder ?? 'none'}); its report is ignored`,
          ),
        ),
      );
      continue;
    }
    if (sb.state === item.state) continue;
    try {
      transition(sb.id, sb.state, item.state);
    } catch (err) {
      if (!(err instanceof TrellisError)) throw err;
      itemErrors.push(errorResult(err));
      continue;
    }
    if (
      (!holdsAllocation(sb.state) && holdsAllocation(item.state)) ||
      (sb.state === 'lost' && item.state === 'suspended')
    ) {
      // Taking resources again (lost → placed or running, suspended → resuming) needs a node with room and
      // goes through replace, resume or the node's reconcile, never a bare status report.
      itemErrors.push(
        errorResult(
          new IllegalTransitionError(
            `sandbox ${sb.id}: ${sb.state} → ${item.state} takes resources, which a status report cannot`,
          ),
        ),
      );
    } else if (item.state === 'suspended' && sb.nodeId !== undefined) {
      draft.setState(sb, 'suspended', { snapshotNodeId: sb.nodeId });
    } else {
      draft.setState(sb, item.state, item.reason === undefined ? {} : { reason: item.reason });
    }
  }
  return itemErrors.length === 0 ? ok : { ok: true, itemErrors };
}

function terminate(draft: Draft, sandboxId: string): CommandResult {
  const sb = requireSandbox(draft, sandboxId);
  const to = terminateTarget(sb.state);
  if (sb.state === to) return ok;
  transition(sb.id, sb.state, to);
  draft.setState(sb, to);
  return ok;
}

function suspend(draft: Draft, sandboxId: string): CommandResult {
  const sb = requireSandbox(draft, sandboxId);
  refuseLost(sb, 'suspending');
  transition(sb.id, sb.state, 'suspending');
  draft.setState(sb, 'suspending');
  return ok;
}

/**
 * Resumes a suspended sandbox on `nodeId`, the node the leader chose (the snapshot's node when it could).
 * When there is none, or it no longer fits, the sandbox's policy decides: `fail` fails it, `wait` and
 * `move` leave it suspended and the command is rejected, so the leader may try again later.
 */
function resume(
  draft: Draft,
  sandboxId: string,
  nodeId: string | undefined,
  gpuDevices: Sandbox['gpuDevices'],
): CommandResult {
  const sb = requireSandbox(draft, sandboxId);
  refuseLost(sb, 'resuming');
  transition(sb.id, sb.state, 'resuming');
  const policy = sb.spec.resumePolicy ?? 'wait';
  if (nodeId !== undefined && policy !== 'move' && nodeId !== sb.snapshotNodeId) {
    throw new IllegalTransitionError(
      `sandbox ${sb.id}: policy ${policy} resumes only on ${String(sb.snapshotNodeId)}`,
    );
  }
  const shape = shapeOf(sb.spec, sb.tenant, gpuDevices);
  if (nodeId === undefined || !nodeCanTake(draft, nodeId, shape)) {
    const reason = nodeId === undefined ? 'no node can take it' : `node ${nodeId} cannot take it`;
    if (policy === 'fail') {
      draft.setState(sb, 'failed', { reason: `resume: ${reason}` });
      return ok;
    }
    throw new NoCapacityError(`sandbox ${sb.id}: resume waits, ${reason}`);
  }
  draft.takeNode(sb, nodeId, gpuDevices, 'resuming');
  return ok;
}

/**
 * `lost → suspending` and `lost → resuming` are legal only as a reconcile restore, which re-takes the
 * allocation; a caller's suspend or resume of a lost sandbox would leave it holding nothing in a state that
 * holds resources.
 */
function refuseLost(sb: Sandbox, to: SandboxState): void {
  if (sb.state !== 'lost') return;
  throw new IllegalTransitionError(`sandbox ${sb.id}: cannot go from lost to ${to}; it is not on a node`, {
    details: { sandboxId: sb.id, from: sb.state, to },
  });
}

/** Forgets the oldest request ids beyond the count bound or the retention time. */
function evictDedup(draft: Draft): void {
  // Read first without opening a draft of the table: most entries evict nothing.
  for (let i = 0; i < dedupEntriesMax; i++) {
    const dedup = draft.dedupReader;
    if (dedup.size === 0) return;
    const oldest = dedup.firstKey() as string;
    const entry = dedup.get(oldest) as DedupEntry;
    const expired = entry.atMs + dedupRetentionMs < draft.atMs;
    if (dedup.size <= dedupEntriesMax && !expired) return;
    draft.dedup.remove(oldest);
  }
}
