/**
 * Stage 5 — pick: the highest score wins; ties go to the lower slot, so a plan never depends on visit order
 * between equal nodes.
 */
export class BestNode {
  slot = -1;
  score = Number.NEGATIVE_INFINITY;
  offer(slot: number, score: number): void {
    if (score > this.score || (score === this.score && slot < this.slot)) {
      this.slot = slot;
      this.score = score;
    }
  }
  get found(): boolean {
    return this.slot >= 0;
  }
}
