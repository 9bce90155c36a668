/**
 * Stage 5 — pick: the highest score wins; ties go to the lower slot, so a plan never depends on visit order
 * between equal nodes.
 */
export class BestNode {
  slot = -1;
  score = Number.NEGATIVE_INFINITY;
  /** Every feasible node offered, with its score, in offer order (a node may appear twice). */
  readonly offeredSlots: number[] = [];
  readonly offeredScores: number[] = [];

  /** Empties the pick for the next request; the planner reuses one BestNode for a whole batch. */
  reset(): this {
    this.slot = -1;
    this.score = Number.NEGATIVE_INFINITY;
    this.offeredSlots.length = 0;
    this.offeredScores.length = 0;
    return this;
  }

  offer(slot: number, score: number): void {
    this.offeredSlots.push(slot);
    this.offeredScores.push(score);
    if (beats(slot, score, this.slot, this.score)) {
      this.slot = slot;
      this.score = score;
    }
  }
  get found(): boolean {
    return this.slot >= 0;
  }
}

/** The pick order: higher score, then lower slot. */
export function beats(slot: number, score: number, otherSlot: number, otherScore: number): boolean {
  return score > otherScore || (score === otherScore && slot < otherSlot);
}
