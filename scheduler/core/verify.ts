/**
 * Stage 4 of the leader pipeline, the verifier (pure): checks a plan against the newest committed state just before it is proposed,
 * dropping placements that can no longer stand — the node was drained, cordoned or removed since the
 * snapshot the planner used, or the request id has committed meanwhile (other than as `pending`: a pending
 * sandbox is placed by a `place` item like a new one). What it keeps is still
 * re-checked by `apply` (capacity included); the verifier only avoids proposing what would surely fail.
 */
import type { Plan } from '../../placement/index.js';
import type { PlaceItem } from './commands.js';
import type { CoreRequest } from './request.js';
import { type SchedulerState, specDigest } from './state.js';

export interface Verified<R extends CoreRequest = CoreRequest> {
  readonly items: PlaceItem[];
  /** Requests to place again, with the reason their placement was dropped. */
  readonly retry: { readonly req: R; readonly reason: string }[];
  /** Requests placement found no node for, with placement's reason. */
  readonly unplaced: { readonly req: R; readonly reason: string }[];
  /** Requests whose id committed meanwhile: resolve them with the committed sandbox. */
  readonly committed: R[];
}

export function verify<R extends CoreRequest>(
  plan: Plan,
  batch: readonly R[],
  state: SchedulerState,
): Verified<R> {
  const byId = new Map(batch.map((r) => [r.requestId, r] as const));
  const out: Verified<R> = { items: [], retry: [], unplaced: [], committed: [] };
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
  for (const p of plan.placements) {
    const req = byId.get(p.requestId) as R;
    const seen = state.dedup.get(req.requestId);
    if (seen !== undefined && state.sandbox(seen.sandboxId)?.state !== 'pending') {
      out.committed.push(req);
      continue;
    }
    const node = state.nodes.get(p.nodeId);
    if (node === undefined || node.spec.state !== 'ready') {
      out.retry.push({ req, reason: `node ${p.nodeId} is ${node?.spec.state ?? 'gone'}` });
      continue;
    }
    out.items.push({
      requestId: req.requestId,
      // A new sandbox takes its request's id; a committed pending one keeps the id it was recorded with.
      sandboxId: seen?.sandboxId ?? req.requestId,
      spec: req.spec,
      specDigest: digestOf(req.spec),
      nodeId: p.nodeId,
      gpuDevices: p.gpuDevices.map((g) => ({ ...g })),
    });
  }
  for (const r of plan.rejections) {
    out.unplaced.push({ req: byId.get(r.requestId) as R, reason: `${r.code}: ${r.message}` });
  }
  return out;
}
