/**
 * Stage 2c — group scorers. Feasibility already enforces the hard limits (max per node, max skew); these
 * prefer, among feasible nodes, the ones that keep a group spread out: fewer of the group on the node, and a
 * domain (zone) with fewer of the group than the others.
 */
import type { IndexReader } from '../cluster-index.js';
import { labelValue } from '../validate.js';
import type { CompiledRequest } from './request.js';

/** 1 when the node holds none of the anti-affinity group, falling towards 0 as it nears the limit. */
export function antiAffinityScore(req: CompiledRequest, slot: number): number {
  const aa = req.antiAffinity;
  if (aa === undefined) return 1;
  return 1 - (req.antiAffinityCounts?.get(slot) ?? 0) / aa.maxPerNode;
}

/** 1 for a node in the least loaded domain of the spread group, falling as its domain leads by more. */
export function zoneSpreadScore(index: IndexReader, req: CompiledRequest, slot: number): number {
  const sp = req.spread;
  if (sp === undefined) return 1;
  const v = sp.valueOfClass[index.classOf(slot)];
  if (v !== undefined) return v < 0 ? 0 : (sp.valueScore[v] as number);
  const value = labelValue(index.meta(slot).spec.labels, sp.label);
  if (value === undefined) return 0;
  const lead = (sp.counts.get(value) ?? 0) - sp.minCount;
  return Math.max(0, 1 - lead / sp.maxSkew);
}
