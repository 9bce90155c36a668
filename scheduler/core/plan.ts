/**
 * Stage 3 of the leader pipeline, the planner (pure: the shell calls it and awaits the commit): places a batch with `planBatch` against the newest committed index plus an overlay
 * of the plans still in Raft, so several batches can be in flight without planning onto capacity an
 * earlier batch already took. The overlay is the index the last plan produced; it is dropped once no
 * plan is in flight, and the next plan starts again from committed state (which then also shows what was
 * freed meanwhile). Seeds come from the batch number and the index version, so a run can be replayed.
 */
import {
  type ClusterIndex,
  type PlacementRequest,
  type Plan,
  type PlanOptions,
  planBatch,
} from '../../placement/index.js';
import { placementRequestOf } from './admission.js';
import type { CoreRequest } from './request.js';

/** A plan and the index it was made on (the `place` apply may adopt `plan.index` on that very index: PlanOrigin). */
export interface Planned {
  readonly plan: Plan;
  readonly base: ClusterIndex;
}

export class Planner {
  #overlay: ClusterIndex | undefined;
  #inFlight = 0;
  #batches = 0;
  /** Placement's options but the seed, which the planner derives per batch (the capacity simulator's policy). */
  constructor(readonly options: Omit<PlanOptions, 'seed'> = {}) {}

  get inFlight(): number {
    return this.#inFlight;
  }

  /** Batches planned so far (the next batch's seed is this plus one). */
  get batches(): number {
    return this.#batches;
  }

  /** Plans `requests` on `committed`, or on the last plan's index while plans are in flight; `base` is which. */
  plan(requests: readonly CoreRequest[], committed: ClusterIndex): Planned {
    const base = this.#overlay ?? committed;
    this.#batches += 1;
    const plan = planBatch(base, requests.map(requestOf), {
      strategy: 'binpack',
      ...this.options,
      seed: this.#batches,
    });
    this.#overlay = plan.index;
    this.#inFlight += 1;
    return { plan, base };
  }

  /** A planned batch was committed (or refused); the overlay is dropped when none is left in flight. */
  settled(): void {
    this.#inFlight -= 1;
    if (this.#inFlight === 0) this.#overlay = undefined;
  }
}

/**
 * A request as placement reads it. A spec with none of the optional fields placement reads (most of them: a
 * workload's plain shapes) is built directly; `placementRequestOf` writes each optional field by a conditional
 * spread, and each of its seven `{}` was an object allocated per request (6.6% of a 200,000-event simulation's
 * allocation). The same object either way (`test/scheduler/plan-request.test.ts`).
 */
export function requestOf(r: CoreRequest): PlacementRequest {
  const s = r.spec;
  if (
    s.gpu === undefined &&
    s.priority === undefined &&
    s.constraints === undefined &&
    s.antiAffinity === undefined &&
    s.spread === undefined &&
    s.image === undefined &&
    s.strategy === undefined
  )
    return { id: r.requestId, tenant: s.tenant, resources: s.resources };
  return placementRequestOf(r.requestId, s);
}
