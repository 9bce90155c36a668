/**
 * Stage 5 — pick: the highest score wins; ties go to the lower slot, so a plan never depends on visit order
 * between equal nodes.
 */

/** Offers a BestNode holds before its arrays grow (a walk offers `candidateLimit` plus image holders). */
const offersInitial = 32;

export class BestNode {
  slot = -1;
  score = Number.NEGATIVE_INFINITY;
  /**
   * Every feasible node offered, with its score, in offer order (a node may appear twice): entries
   * [0, offeredCount). Typed arrays reused across requests: emptying a JS array with `length = 0` drops its
   * backing store, and refilling it allocated ~140 KiB per batch of 1,000 in allocation profiles.
   */
  offeredSlots = new Int32Array(offersInitial);
  offeredScores = new Float64Array(offersInitial);
  offeredCount = 0;

  /** Empties the pick for the next request; the planner reuses one BestNode for a whole batch. */
  reset(): this {
    this.slot = -1;
    this.score = Number.NEGATIVE_INFINITY;
    this.offeredCount = 0;
    return this;
  }

  offer(slot: number, score: number): void {
    const i = this.offeredCount;
    if (i === this.offeredSlots.length) this.#grow();
    this.offeredSlots[i] = slot;
    this.offeredScores[i] = score;
    this.offeredCount = i + 1;
    if (beats(slot, score, this.slot, this.score)) {
      this.slot = slot;
      this.score = score;
    }
  }

  /**
   * The entry the next offer will take, grown if needed: the caller writes its score to `offeredScores[i]` and
   * then calls `offerAt(slot)` — the score never crosses a call as a (boxed) double. Call it before reading
   * `offeredScores`: growing replaces the array.
   */
  nextScoreAt(): number {
    if (this.offeredCount === this.offeredSlots.length) this.#grow();
    return this.offeredCount;
  }

  /** Offers `slot` with the score already written at `nextScoreAt()`. */
  offerAt(slot: number): void {
    const i = this.offeredCount;
    this.offeredSlots[i] = slot;
    this.offeredCount = i + 1;
    const score = this.offeredScores[i] as number;
    if (beats(slot, score, this.slot, this.score)) {
      this.slot = slot;
      this.score = score;
    }
  }

  #grow(): void {
    const slots = new Int32Array(this.offeredSlots.length * 2);
    slots.set(this.offeredSlots);
    this.offeredSlots = slots;
    const scores = new Float64Array(this.offeredScores.length * 2);
    scores.set(this.offeredScores);
    this.offeredScores = scores;
  }

  get found(): boolean {
    return this.slot >= 0;
  }
}

/** The pick order: higher score, then lower slot. */
export function beats(slot: number, score: number, otherSlot: number, otherScore: number): boolean {
  return score > otherScore || (score === otherScore && slot < otherSlot);
}
