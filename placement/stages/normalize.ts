/**
 * Stage 3 — normalisation: every scorer yields a value in [0, 1]; the node's final score is the weighted mean
 * of the scorers that apply to the request (as Nomad's ScoreNormalizationIterator averages), so adding a
 * preference never drowns the strategy and scores stay comparable across requests.
 */
import type { IndexReader } from '../cluster-index.js';
import type { CompiledRequest } from './request.js';
import { antiAffinityScore, zoneSpreadScore } from './score-affinity.js';
import {
  type BinpackScorer,
  binpackBlend,
  binpackDominant,
  binpackDot,
  binpackInto,
} from './score-binpack.js';
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

/** strategyScore written to `to[toAt]` (see scoreWithStrategyInto: no boxed double on the hot path). */
export function strategyScoreInto(
  index: IndexReader,
  req: CompiledRequest,
  slot: number,
  binpack: BinpackScorer,
  to: Float64Array,
  toAt: number,
): void {
  // A named scorer writes its value (strategyScore's returned value was boxed: ~65 KiB a batch of 1,000).
  if (req.strategy !== 'spread' && typeof binpack === 'string')
    binpackInto(binpack, index, req, slot, to, toAt);
  else to[toAt] = strategyScore(index, req, slot, binpack);
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
  return weighted(index, req, slot, strategy);
}

/**
 * The placer's form of scoreWithStrategy: reads the strategy value from `from[fromAt]` and writes the final score
 * to `to[toAt]`. A double that crosses a call V8 does not inline is boxed (a heap number per candidate: ~190 KiB
 * a batch of 1,000 in allocation profiles), so on the hot path scores stay in typed arrays end to end.
 */
export function scoreWithStrategyInto(
  index: IndexReader,
  req: CompiledRequest,
  slot: number,
  from: Float64Array,
  fromAt: number,
  to: Float64Array,
  toAt: number,
): void {
  to[toAt] = weighted(index, req, slot, from[fromAt] as number);
}

/** The placer's form of scoreNode: the strategy value, then the final score, both in `to[toAt]`. */
export function scoreNodeInto(
  index: IndexReader,
  req: CompiledRequest,
  slot: number,
  binpack: BinpackScorer,
  to: Float64Array,
  toAt: number,
): void {
  strategyScoreInto(index, req, slot, binpack, to, toAt);
  to[toAt] = weighted(index, req, slot, to[toAt] as number);
}

/** The one weighted mean every form above shares, so their scores are identical. */
function weighted(index: IndexReader, req: CompiledRequest, slot: number, strategy: number): number {
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
  if (req.imageId !== undefined) {
    sum += scorerWeights.locality * imageLocalityScore(index, req, slot);
    weight += scorerWeights.locality;
  }
  if (req.preferences.length > 0) {
    sum += scorerWeights.preferences * preferenceScore(index, req, slot);
    weight += scorerWeights.preferences;
  }
  return sum / weight;
}
