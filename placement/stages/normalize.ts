/**
 * Stage 3 — normalisation: every scorer yields a value in [0, 1]; the node's final score is the weighted mean
 * of the scorers that apply to the request (as Nomad's ScoreNormalizationIterator averages), so adding a
 * preference never drowns the strategy and scores stay comparable across requests.
 */
import type { IndexReader } from '../cluster-index.js';
import type { CompiledRequest } from './request.js';
import { antiAffinityScore, zoneSpreadScore } from './score-affinity.js';
import { type BinpackScorer, binpackBlend, binpackDominant, binpackDot } from './score-binpack.js';
import { imageLocalityScore, preferenceScore } from './score-locality.js';
import { leastLoaded } from './score-spread.js';

/** Weights of the scorers; the strategy scorer always applies, the others when the request asks for them. */
export const scorerWeights = Object.freeze({
  strategy: 1,
  antiAffinity: 0.5,
  zoneSpread: 0.5,
  locality: 0.5,
  preferences: 1,
});

export function scoreNode(
  index: IndexReader,
  req: CompiledRequest,
  slot: number,
  binpack: BinpackScorer,
): number {
  return scoreWithStrategy(index, req, slot, strategyScore(index, req, slot, binpack));
}

/** The strategy scorer's value alone (bin-pack or spread), before weighting. */
export function strategyScore(
  index: IndexReader,
  req: CompiledRequest,
  slot: number,
  binpack: BinpackScorer,
): number {
  if (req.strategy === 'spread') return leastLoaded(index, req, slot);
  if (typeof binpack === 'object') return binpack.score(index, req, slot);
  if (binpack === 'dominant') return binpackDominant(index, req, slot);
  if (binpack === 'dot') return binpackDot(index, req, slot);
  return binpackBlend(index, req, slot);
}

/**
 * The final score given the strategy scorer's value: a caller that knows the value (a class walk caches it per
 * node version) skips recomputing it; the arithmetic is the same as scoreNode's, so the result is identical.
 */
export function scoreWithStrategy(
  index: IndexReader,
  req: CompiledRequest,
  slot: number,
  strategy: number,
): number {
  let sum = strategy * scorerWeights.strategy;
  let weight = scorerWeights.strategy;
  if (req.antiAffinity !== undefined) {
    sum += scorerWeights.antiAffinity * antiAffinityScore(req, slot);
    weight += scorerWeights.antiAffinity;
  }
  if (req.spread !== undefined) {
    sum += scorerWeights.zoneSpread * zoneSpreadScore(index, req, slot);
    weight += scorerWeights.zoneSpread;
  }
  if (req.req.imageId !== undefined) {
    sum += scorerWeights.locality * imageLocalityScore(index, req, slot);
    weight += scorerWeights.locality;
  }
  if (req.preferences.length > 0) {
    sum += scorerWeights.preferences * preferenceScore(index, req, slot);
    weight += scorerWeights.preferences;
  }
  return sum / weight;
}
