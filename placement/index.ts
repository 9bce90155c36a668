/**
 * `placement/` — pure placement: the copy-on-write cluster index and batched multi-resource bin-packing.
 * No I/O, no clock, no ambient randomness (a seed is passed in); `test/repo/architecture.test.ts` enforces it.
 *
 * Design in brief (details in each file's header and in docs/architecture.md):
 * - ClusterIndex: typed-array pages with copy-on-write per page for the hot numbers, `immutable` maps for the
 *   sparse structure; O(1) snapshots; a free-CPU bucket index, feasibility classes and image → nodes.
 * - planBatch: priority, then largest dominant share first; each request goes through
 *   select → feasibility → scoring → normalisation → pick (stack.ts), and a rejection is explained by a full
 *   diagnosis (diagnose.ts).
 */

export type { AllocationShape, ClassInfo, IndexReader, NodeMeta, NodeView } from './cluster-index.js';
export {
  bucketCount,
  bucketOf,
  ClusterIndex,
  classesMax,
  IndexBuilder,
  nodesMax,
  pageSize,
  spreadKey,
} from './cluster-index.js';
export { diagnose, shortfallOf } from './diagnose.js';
export {
  DuplicateNodeError,
  NodeBusyError,
  OverCommitError,
  ReleaseMismatchError,
  UnknownNodeError,
} from './errors.js';
export { fgdClassesMax, fgdScorer, type TaskClass } from './fgd.js';
export type { Fragmentation, ReferenceShape } from './fragmentation.js';
export { fragmentation } from './fragmentation.js';
export type { PlacedArrays, Plan, PlanOptions } from './plan.js';
export { batchRequestsMax, dominantShare, planBatch } from './plan.js';
export { referenceFeasible, referencePlace } from './reference.js';
export { constraintHolds, describeConstraint } from './stages/feasibility.js';
export { scorerWeights } from './stages/normalize.js';
export type { BinpackScorer } from './stages/score-binpack.js';
export { gpuBestFit, gpuDot, isNodeScorer, type NodeScorer } from './stages/score-gpu.js';
export type { SelectLimits } from './stages/select.js';
export { defaultSelectLimits } from './stages/select.js';
export type {
  AntiAffinityRule,
  Constraint,
  FilterCounts,
  GpuRequest,
  GpuSpec,
  NodeSpec,
  NodeState,
  Placement,
  PlacementRequest,
  PlanOutcome,
  Preference,
  Rejection,
  ResourceName,
  Resources,
  ScalarResource,
  SpreadRule,
  Strategy,
} from './types.js';
export { nodeStates, scalarResources } from './types.js';
export {
  constraintsPerRequestMax,
  gpuDevicesPerNodeMax,
  gpuMilliPerDevice,
  resourceAmountMax,
  validateNodeSpec,
  validateRequest,
} from './validate.js';
