/**
 * `trellis/sim` — capacity simulation: replay a workload in virtual time through the scheduler's own
 * admission, placement and state machine, and answer "how many machines, which policy". See
 * docs/simulation.md.
 */
export { clusterEvents, clusterNodes, groupNodes, type NodeEvent, withShapeCount } from './cluster.js';
export { CoreCommandError, SimCore } from './core.js';
export { commonShape, gpuMilliOf, type InflationOptions, type SimOptions, simulate } from './engine.js';
export { SizingError, SpecParseError, TraceFormatError } from './errors.js';
export { EventHeap } from './heap.js';
export type { Histogram, InflationPoint, RunResult, Sample, Timing, Totals, Utilization } from './metrics.js';
export { defaultPolicy, planOptionsOf } from './policy.js';
export { type Report, reportCsv, reportJson, runJson, summaryLines } from './report/data.js';
export { reportHtml } from './report/html.js';
export {
  findMinNodes,
  loadArrivals,
  type SizingResult,
  type SizingStep,
  type Variant,
  whatIf,
  withWorkloadQuotas,
} from './run.js';
export {
  type ClusterSpec,
  clusterSpecSchema,
  type NodeGroup,
  type PolicySpec,
  parseCluster,
  parsePolicy,
  parseSpecText,
  parseWorkload,
  policySchema,
  readSpecFile,
  type SyntheticWorkload,
  type WorkloadSpec,
  workloadSpecSchema,
} from './spec.js';
export {
  readAlibabaBatchTask,
  readAlibabaGpuNodes,
  readAlibabaGpuPods,
  readAzureVmTable,
  readGenericCsv,
} from './traces/index.js';
export { type Arrival, drawLifetimeMs, syntheticArrivals } from './workload.js';
