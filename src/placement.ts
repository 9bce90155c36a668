/**
 * `trellis/placement`: the placement engine as a library — the copy-on-write cluster index and batched
 * multi-resource bin-packing, pure (no I/O, no clock; randomness from a seed). The scheduler uses the same
 * code; this entry point lets a platform plan placements itself, test "what if", or measure fragmentation.
 *
 * ```ts
 * import { ClusterIndex, planBatch } from 'trellis/placement';
 * const plan = planBatch(ClusterIndex.of(nodes), requests);
 * ```
 */

export type {
  AntiAffinityRule,
  BinpackScorer,
  ClassInfo,
  Constraint,
  FilterCounts,
  Fragmentation,
  GpuRequest,
  GpuSpec,
  IndexReader,
  NodeMeta,
  NodeSpec,
  NodeState,
  NodeView,
  PlacedArrays,
  Placement,
  PlacementRequest,
  Plan,
  PlanOptions,
  PlanOutcome,
  Preference,
  ReferenceShape,
  Rejection,
  ResourceName,
  Resources,
  ScalarResource,
  SelectLimits,
  SpreadRule,
  Strategy,
} from '../placement/index.js';
export {
  batchRequestsMax,
  ClusterIndex,
  constraintsPerRequestMax,
  DuplicateNodeError,
  defaultSelectLimits,
  describeConstraint,
  diagnose,
  dominantShare,
  fragmentation,
  gpuDevicesPerNodeMax,
  gpuMilliPerDevice,
  IndexBuilder,
  NodeBusyError,
  nodeStates,
  nodesMax,
  OverCommitError,
  planBatch,
  ReleaseMismatchError,
  resourceAmountMax,
  scalarResources,
  UnknownNodeError,
  validateNodeSpec,
  validateRequest,
} from '../placement/index.js';
export { TrellisError, ValidationError } from './lib/errors.js';
