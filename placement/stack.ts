/**
 * The placement chain for one request, wired in the order Nomad's stack uses, each stage for a reason:
 *
 * 1. select (stages/select.ts) — decides which nodes are looked at at all, because on a large cluster the
 *    cheapest node check is the one never made;
 * 2. feasibility (stages/feasibility.ts) — drops nodes that cannot take the request, before any scoring cost;
 * 3. scoring (stages/score-*.ts) — rates each feasible node per concern, each scorer knowing only its own;
 * 4. normalisation (stages/normalize.ts) — folds the scores into one comparable number;
 * 5. pick (stages/pick.ts) — keeps the best, with a deterministic tie-break.
 * Only when nothing is feasible does diagnose.ts visit every node to explain why.
 */
import type { Rng } from '../src/lib/prng.js';
import type { IndexBuilder } from './cluster-index.js';
import { diagnose } from './diagnose.js';
import { pickGpuDevices } from './stages/feasibility.js';
import type { CompiledRequest } from './stages/request.js';
import type { BinpackScorer } from './stages/score-binpack.js';
import { type SelectLimits, selectNode } from './stages/select.js';
import type { PlanOutcome } from './types.js';

export function placeOne(
  builder: IndexBuilder,
  req: CompiledRequest,
  binpack: BinpackScorer,
  limits: SelectLimits,
  rng: Rng,
): PlanOutcome {
  const best = selectNode(builder, req, binpack, limits, rng);
  if (!best.found) return { kind: 'rejected', rejection: diagnose(builder, req) };
  const slot = best.slot;
  const gpuDevices = req.gpu === undefined ? [] : (pickGpuDevices(builder, slot, req.gpu) ?? []);
  builder.allocateSlot(slot, req.allocation(gpuDevices));
  return {
    kind: 'placed',
    placement: { requestId: req.req.id, nodeId: builder.nodeId(slot), gpuDevices, score: best.score },
  };
}
