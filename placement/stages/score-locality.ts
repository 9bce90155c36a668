/**
 * Stage 2d — locality and soft preferences: a node that already holds the request's image or snapshot saves a
 * download; soft label preferences add their weights.
 */
import type { IndexReader } from '../cluster-index.js';
import { constraintHolds } from './feasibility.js';
import type { CompiledRequest } from './request.js';

/** 1 when the node holds the request's image, else 0. */
export function imageLocalityScore(index: IndexReader, req: CompiledRequest, slot: number): number {
  const holders = req.imageHolders;
  if (holders !== undefined) return ((holders[slot >>> 5] ?? 0) >>> (slot & 31)) & 1;
  const image = req.imageId;
  return image !== undefined && index.hasImage(slot, image) ? 1 : 0;
}

/** The matched share of the request's preference weights, in [0, 1]. */
export function preferenceScore(index: IndexReader, req: CompiledRequest, slot: number): number {
  if (req.preferences.length === 0) return 0;
  const labels = index.meta(slot).spec.labels;
  let matched = 0;
  let total = 0;
  for (const p of req.preferences) {
    total += p.weight;
    if (constraintHolds(p.constraint, labels)) matched += p.weight;
  }
  return matched / total;
}
