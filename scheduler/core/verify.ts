/**
 * Stage 4 of the leader pipeline, the verifier (pure): checks a plan against the newest committed state just before it is proposed,
 * dropping placements that can no longer stand — the node was drained, cordoned or removed since the
 * snapshot the planner used, or the request id has committed meanwhile (other than as `pending`: a pending
 * sandbox is placed by a `place` item like a new one). What it keeps is still
 * re-checked by `apply` (capacity included); the verifier only avoids proposing what would surely fail.
 */
import type { ClusterIndex, Plan } from '../../placement/index.js';
import type { PlaceItem } from './commands.js';
import type { CoreRequest } from './request.js';
import type { SlotTable } from './slot-table.js';
import { type DedupEntry, type PlaceHint, type SchedulerState, specDigest } from './state.js';

/**
 * A request as the verifier reads it: `admittedNewIn`, when set, is the dedup table instance in which admission
 * found its id absent (the leader's LiveRequest sets it). While the newest state still has that very table, the
 * verifier need not look the id up again: a table version never changes.
 */
export type VerifiedRequest = CoreRequest & {
  readonly admittedNewIn?: SlotTable<DedupEntry> | undefined;
};

export interface Verified<R extends CoreRequest = CoreRequest> {
  readonly items: PlaceItem[];
  /**
   * Which items' request ids this call found absent from `state.dedup`, for the `place` entry built from
   * `items` when this process applies it (`applyCommand`'s hint; never replicated).
   */
  readonly hint: PlaceHint;
  /** Requests to place again, with the reason their placement was dropped. */
  readonly retry: { readonly req: R; readonly reason: string }[];
  /** Requests placement found no node for, with placement's reason. */
  readonly unplaced: { readonly req: R; readonly reason: string }[];
  /** Requests whose id committed meanwhile: resolve them with the committed sandbox. */
  readonly committed: R[];
}

const noGpuShares = Object.freeze([]) as unknown as PlaceItem['gpuDevices'];

export function verify<R extends VerifiedRequest>(
  plan: Plan,
  batch: readonly R[],
  state: SchedulerState,
  /** `batch` by request id, when the caller has built it already (the last request of an id wins). */
  batchById?: ReadonlyMap<string, R>,
  /**
   * The index `plan` was made on, when the caller knows it (the leader's planner): the hint then carries the
   * plan, so the `place` apply may adopt its index (see PlanOrigin; `batch` must be the requests planned, in order).
   */
  planBase?: ClusterIndex,
): Verified<R> {
  // Built only for a plan without its planner's base (`placements` by id) or with rejections: the leader's plans
  // are read from `plan.placed`, which holds each placement's batch index.
  let byIdMap = batchById;
  const byId = (): ReadonlyMap<string, R> => {
    byIdMap ??= new Map(batch.map((r) => [r.requestId, r] as const));
    return byIdMap;
  };
  const dedup = state.dedup;
  const items: PlaceItem[] = [];
  const unseen: boolean[] = [];
  const hint: PlaceHint =
    planBase === undefined
      ? { dedup, items, unseen }
      : { dedup, items, unseen, origin: { base: planBase, plan, requests: batch } };
  const out: Verified<R> = { items, hint, retry: [], unplaced: [], committed: [] };
  // Requests of one batch often share a spec object (a workload's shape, a retried request): digest each
  // object once per call. Local to the call, so a caller that reuses and edits a spec object later is safe.
  const digests = new Map<R['spec'], string>();
  const digestOf = (spec: R['spec']): string => {
    let d = digests.get(spec);
    if (d === undefined) {
      d = specDigest(spec);
      digests.set(spec, d);
    }
    return d;
  };
  const index = state.index;
  if (planBase !== undefined) {
    keepPlaced(plan, batch, state, out, digestOf);
  } else {
    // Where each request id was first kept: an id kept twice (a request batched twice) gets no hint, as its
    // first item adds it before the second applies.
    const firstAt = new Map<string, number>();
    for (const p of plan.placements) {
      const req = byId().get(p.requestId) as R;
      const kept = keepOne(req, p.nodeId, index.slotOf(p.nodeId), state, out, firstAt);
      if (kept !== undefined) items.push(itemOf(req, kept, p.nodeId, p.gpuDevices, digestOf));
    }
  }
  for (const r of plan.rejections) {
    out.unplaced.push({ req: byId().get(r.requestId) as R, reason: `${r.code}: ${r.message}` });
  }
  return out;
}

/** What `keepOne` found: the committed dedup entry of the request's id, if any (a pending sandbox's). */
type Kept = { readonly seen: DedupEntry | undefined };
const keptNew: Kept = Object.freeze({ seen: undefined });

/**
 * Whether the placement of `req` on `nodeId` (at `slot` in `state.index`, undefined when not registered) is kept:
 * its id has not committed (other than as a pending sandbox) and the node is ready. Else it goes to `out`'s
 * committed or retry list and undefined is returned. `firstAt` tracks ids kept twice (see verify).
 */
function keepOne<R extends VerifiedRequest>(
  req: R,
  nodeId: string,
  slot: number | undefined,
  state: SchedulerState,
  out: Verified<R>,
  firstAt: Map<string, number> | undefined,
): Kept | undefined {
  const dedup = state.dedup;
  // One dedup read per request on the leader: admission's answer stands while the table is the same version.
  const seen = req.admittedNewIn === dedup ? undefined : dedup.get(req.requestId);
  if (seen !== undefined && state.sandbox(seen.sandboxId)?.state !== 'pending') {
    out.committed.push(req);
    return undefined;
  }
  // The node's state from the index, which holds every registered node's (in step with `nodes`: apply's
  // `nodeCheck` reads it the same way): a slot read instead of a HAMT read of the node record, which was ~4% of
  // the 1M-event simulation.
  const index = state.index;
  if (slot === undefined || !index.isReady(slot)) {
    const was = slot === undefined ? 'gone' : index.stateOf(slot);
    out.retry.push({ req, reason: `node ${nodeId} is ${was}` });
    return undefined;
  }
  const unseen = out.hint.unseen as boolean[];
  if (firstAt === undefined) unseen.push(seen === undefined);
  else {
    const first = firstAt.get(req.requestId);
    if (first === undefined) {
      firstAt.set(req.requestId, out.items.length);
      unseen.push(seen === undefined);
    } else {
      unseen[first] = false;
      unseen.push(false);
    }
  }
  return seen === undefined ? keptNew : { seen };
}

function itemOf<R extends VerifiedRequest>(
  req: R,
  kept: Kept,
  nodeId: string,
  gpuDevices: readonly { readonly device: number; readonly milli: number }[],
  digestOf: (spec: R['spec']) => string,
): PlaceItem {
  return {
    requestId: req.requestId,
    // A new sandbox takes its request's id; a committed pending one keeps the id it was recorded with.
    sandboxId: kept.seen?.sandboxId ?? req.requestId,
    spec: req.spec,
    specDigest: digestOf(req.spec),
    nodeId,
    // Most items take no GPU: one frozen empty list for them (an array per item otherwise).
    gpuDevices: gpuDevices.length === 0 ? noGpuShares : gpuDevices.map((g) => ({ ...g })),
  };
}

/**
 * The planner's plan read from its flat arrays (`plan.placed`): placement k is request `batch[placed.request[k]]`
 * on slot `placed.slot[k]` of `plan.index` — no placement object, no lookup by id. planBatch refuses a batch
 * holding an id twice, so no id is kept twice. A node's slot in `plan.index` is its slot in `state.index` unless
 * the node was removed since (and the slot maybe reused): the id at the slot says which.
 */
function keepPlaced<R extends VerifiedRequest>(
  plan: Plan,
  batch: readonly R[],
  state: SchedulerState,
  out: Verified<R>,
  digestOf: (spec: R['spec']) => string,
): void {
  const placed = plan.placed;
  const planIndex = plan.index;
  const index = state.index;
  for (let k = 0; k < placed.count; k++) {
    const req = batch[placed.request[k] as number] as R;
    const planSlot = placed.slot[k] as number;
    const nodeId = planIndex.nodeId(planSlot);
    const sameNode = index.isLive(planSlot) && index.nodeId(planSlot) === nodeId;
    const slot = sameNode ? planSlot : index.slotOf(nodeId);
    const kept = keepOne(req, nodeId, slot, state, out, undefined);
    if (kept === undefined) continue;
    out.items.push(itemOf(req, kept, nodeId, placed.gpuDevices.get(k) ?? noGpuShares, digestOf));
  }
}
