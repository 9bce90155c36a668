/**
 * Stage 4 — bounded candidate selection: which nodes are offered to feasibility and scoring at all.
 *
 * - A pinned request is offered its one node.
 * - A small cluster (at most `exactScanNodesMax` nodes) is scanned whole: the pick is the exact best.
 * - A very selective request (its passing feasibility classes hold fewer than 1/`selectiveRatio` of the
 *   nodes, e.g. a GPU model or a rare label) is offered the nodes of those classes, up to `candidateLimit`
 *   feasible ones.
 * - Otherwise the free-capacity buckets are walked — tightest first for bin-packing, emptiest first for spread —
 *   and the walk stops after `candidateLimit` feasible nodes (or, for spread-strategy and group-rule requests,
 *   `visitAfterFirstMax` visits once one was found). A bin-packing request without group rules keeps its walk
 *   across the batch per walk class (class-walk.ts), with no visit bound. Nodes in buckets below the request's own capacity key cannot fit (cluster-index.ts, bucketOf), so the walk finds a feasible node whenever one
 *   exists: a rejection is always exact; only the choice among feasible nodes is bounded.
 * - Nodes holding the request's image (at most `localityCandidatesMax`) are always offered too, so locality
 *   is found even when those nodes sit late in the walk.
 */
import type { Rng } from '../../src/lib/prng.js';
import { bucketCount, bucketOf, capacityKey, type IndexReader } from '../cluster-index.js';
import { classVerdict, feasible, verdictPass } from './feasibility.js';
import { scoreNodeInto, scoreWithStrategyInto, strategyScoreInto } from './normalize.js';
import { passMaskOf } from './pass-mask.js';
import { BestNode } from './pick.js';
import type { CompiledRequest } from './request.js';
import type { BinpackScorer } from './score-binpack.js';

export interface SelectLimits {
  /** Feasible nodes scored per request on a large cluster. */
  readonly candidateLimit: number;
  /** Clusters up to this many nodes are scanned whole. */
  readonly exactScanNodesMax: number;
  /**
   * After the first feasible node, at most this many more nodes are visited (spread-strategy and group-rule
   * walks; a class walk's frontier bounds its cost instead, see class-walk.ts).
   */
  readonly visitAfterFirstMax: number;
  /** Nodes holding the request's image offered in addition to the walk. */
  readonly localityCandidatesMax: number;
  /** A request is "very selective" when its classes hold under 1/selectiveRatio of the nodes. */
  readonly selectiveRatio: number;
}

export const defaultSelectLimits: SelectLimits = Object.freeze({
  candidateLimit: 8,
  exactScanNodesMax: 64,
  visitAfterFirstMax: 512,
  localityCandidatesMax: 8,
  selectiveRatio: 8,
});

/**
 * The least value of each limit. A candidate limit of 0 would stop a walk before its first feasible node and
 * reject a request that fits; the ratio must keep "selective" meaningful.
 */
export const selectLimitsMin: Readonly<Record<keyof SelectLimits, number>> = Object.freeze({
  candidateLimit: 1,
  exactScanNodesMax: 0,
  visitAfterFirstMax: 0,
  localityCandidatesMax: 0,
  selectiveRatio: 1,
});

function offer(
  index: IndexReader,
  req: CompiledRequest,
  slot: number,
  binpack: BinpackScorer,
  best: BestNode,
): boolean {
  if (!feasible(index, req, slot)) return false;
  // The entry first: nextScoreAt() may grow (replace) offeredScores.
  const at = best.nextScoreAt();
  scoreNodeInto(index, req, slot, binpack, best.offeredScores, at);
  best.offerAt(slot);
  return true;
}

/** Finds the node for `req`, or returns a BestNode with `found === false` when no node is feasible. */
export function selectNode(
  index: IndexReader,
  req: CompiledRequest,
  binpack: BinpackScorer,
  limits: SelectLimits,
  rng: Rng,
  best: BestNode = new BestNode(),
): BestNode {
  if (req.pinnedSlot !== undefined) {
    if (req.pinnedSlot >= 0 && index.isLive(req.pinnedSlot)) offer(index, req, req.pinnedSlot, binpack, best);
    return best;
  }
  if (index.nodeCount <= limits.exactScanNodesMax) {
    for (const slot of index.slots()) offer(index, req, slot, binpack, best);
    return best;
  }
  if (req.imageId !== undefined) {
    const holders = req.batch.imageCandidates(index, req.imageId, limits.localityCandidatesMax);
    for (let i = 0; i < holders.length; i++) offer(index, req, holders[i] as number, binpack, best);
  }
  if (req.constraints.length > 0 || req.gpu !== undefined) {
    let passing = req.shared.passing;
    if (passing === undefined) {
      const classes: number[] = [];
      let nodes = 0;
      for (const info of index.classes) {
        if (classVerdict(index, req, info.id) !== verdictPass) continue;
        classes.push(info.id);
        nodes += index.slotsOfClass(info.id).size;
      }
      passing = { classes, nodes };
      req.shared.passing = passing;
    }
    if (passing.nodes * limits.selectiveRatio < index.nodeCount) {
      let found = 0;
      for (const classId of passing.classes) {
        for (const slot of index.slotsOfClass(classId)) {
          if (offer(index, req, slot, binpack, best) && ++found >= limits.candidateLimit) return best;
        }
      }
      return best;
    }
  }
  // Bin-packing requests without group rules (most of a typical batch, in a few classes) keep their walk across
  // the batch (class-walk.ts); requests with group rules, whose feasibility moves with placements elsewhere, and
  // spread-strategy ones (seeded start page) walk per request.
  if (req.strategy !== 'spread' && req.spread === undefined && req.antiAffinity === undefined) {
    const walk = req.batch.classWalk(index, req, limits.candidateLimit);
    walk.refresh(index, req);
    // A named bin-pack scorer reads only the node's numbers and the shape, so a candidate's strategy score is
    // kept per node version (requests of one walk class share the shape) and only locality and preferences are
    // added per request.
    const cached = typeof binpack === 'string';
    const fits = walk.fitScores;
    for (let i = 0; i < walk.count; i++) {
      const slot = walk.slots[i] as number;
      if (!cached || Number.isNaN(fits[i] as number)) strategyScoreInto(index, req, slot, binpack, fits, i);
      const at = best.nextScoreAt();
      scoreWithStrategyInto(index, req, slot, fits, i, best.offeredScores, at);
      best.offerAt(slot);
    }
    return best;
  }
  walkBuckets(index, req, binpack, limits, rng, best);
  return best;
}

function walkBuckets(
  index: IndexReader,
  req: CompiledRequest,
  binpack: BinpackScorer,
  limits: SelectLimits,
  rng: Rng,
  best: BestNode,
): void {
  const low = bucketOf(capacityKey(req.cpu, req.memory, req.disk));
  const spread = req.strategy === 'spread';
  // Bin-packing starts every walk at page 0 so it fills the same nodes first; spread rotates its start page
  // (seeded) so concurrent requests do not all land on the first pages.
  const startPage = spread && index.pageCount > 0 ? rng.int(0, index.pageCount) : 0;
  let feasibleCount = 0;
  let visitsAfterFirst = 0;
  if (spread) {
    const visit = (slot: number): boolean => {
      if (feasibleCount > 0 && ++visitsAfterFirst > limits.visitAfterFirstMax) return true;
      if (offer(index, req, slot, binpack, best)) feasibleCount++;
      return feasibleCount >= limits.candidateLimit;
    };
    for (let b = bucketCount - 1; b >= low; b--) if (index.scanBucket(b, startPage, visit)) return;
    return;
  }
  // Bin-packing counts only visits to nodes of classes the request passes, so which nodes it considers does
  // not depend on where the others sit; a constrained walk scans through its signature's pass mask
  // (pass-mask.ts), so it never visits the others at all.
  const mask =
    req.constraints.length > 0 || req.gpu !== undefined ? passMaskOf(req.shared, index) : undefined;
  const visit = (slot: number): boolean => {
    if (feasibleCount > 0 && ++visitsAfterFirst > limits.visitAfterFirstMax) return true;
    if (offer(index, req, slot, binpack, best)) feasibleCount++;
    return feasibleCount >= limits.candidateLimit;
  };
  for (let b = low; b < bucketCount; b++) {
    if (mask === undefined ? index.scanBucket(b, 0, visit, false) : mask.scan(index, req, b, 0, visit) >= 0)
      return;
  }
}
