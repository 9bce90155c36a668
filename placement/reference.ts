/**
 * The naive reference placer — for tests only, never used by the scheduler. It scans every node and scores
 * every feasible one, with no buckets, no class shortcuts and no candidate limit, so the fast placer can be
 * checked against it: same batch order, same scorers, exhaustive search.
 */
import type { ClusterIndex, IndexBuilder } from './cluster-index.js';
import { diagnose } from './diagnose.js';
import {
  antiAffinityHolds,
  constraintHolds,
  pickGpuDevices,
  resourcesFit,
  spreadHolds,
} from './stages/feasibility.js';
import { scoreNode } from './stages/normalize.js';
import { BestNode } from './stages/pick.js';
import { type CompiledRequest, compileRequest } from './stages/request.js';
import type { BinpackScorer } from './stages/score-binpack.js';
import type { PlacementRequest, PlanOutcome, Strategy } from './types.js';

/**
 * Feasibility evaluated from the node's spec directly (not through feasibility classes): state, pinned node,
 * GPU model, every constraint, anti-affinity, spread and resources.
 */
export function referenceFeasible(
  index: IndexBuilder | ClusterIndex,
  req: CompiledRequest,
  slot: number,
): boolean {
  const spec = index.meta(slot).spec;
  if (spec.state !== 'ready') return false;
  if (req.req.pinnedNode !== undefined && spec.id !== req.req.pinnedNode) return false;
  if (req.gpu !== undefined) {
    if (spec.gpu === undefined) return false;
    if (req.gpu.model !== undefined && spec.gpu.model !== req.gpu.model) return false;
  }
  if (!req.constraints.every((c) => constraintHolds(c, spec.labels))) return false;
  return antiAffinityHolds(req, slot) && spreadHolds(index, req, slot) && resourcesFit(index, req, slot);
}

/** Places one request by exhaustive scan on `builder` (allocating it there). */
export function referencePlace(
  builder: IndexBuilder,
  request: PlacementRequest,
  strategy: Strategy = 'binpack',
  binpack: BinpackScorer = 'dot',
): PlanOutcome {
  const req = compileRequest(builder, request, strategy);
  const best = new BestNode();
  for (const slot of builder.slots()) {
    if (referenceFeasible(builder, req, slot)) best.offer(slot, scoreNode(builder, req, slot, binpack));
  }
  if (!best.found) return { kind: 'rejected', rejection: diagnose(builder, req) };
  const gpuDevices = req.gpu === undefined ? [] : (pickGpuDevices(builder, best.slot, req.gpu) ?? []);
  builder.allocate(builder.nodeId(best.slot), req.allocation(gpuDevices));
  return {
    kind: 'placed',
    placement: { requestId: request.id, nodeId: builder.nodeId(best.slot), gpuDevices, score: best.score },
  };
}
