/**
 * A policy spec (what-if runs list several) turned into placement's PlanOptions. The GPU-aware scorers and
 * FGD live in placement/ (stages/score-gpu.ts, fgd.ts); FGD needs the workload's size mix, so it is built
 * from the arrivals the run will see.
 */
import type { PlanOptions } from '../../placement/index.js';
import type { PolicySpec } from './spec.js';
import type { Arrival } from './workload.js';

export const defaultPolicy: PolicySpec = Object.freeze({ name: 'default' });

export function planOptionsOf(policy: PolicySpec, _arrivals: readonly Arrival[]): PlanOptions {
  const limits: { candidateLimit?: number; exactScanNodesMax?: number } = {};
  if (policy.candidateLimit !== undefined) limits.candidateLimit = policy.candidateLimit;
  if (policy.exactScanNodesMax !== undefined) limits.exactScanNodesMax = policy.exactScanNodesMax;
  const scorer = policy.scorer;
  return {
    ...(policy.strategy === undefined ? {} : { strategy: policy.strategy }),
    ...(scorer === 'dot' || scorer === 'dominant' || scorer === 'blend' ? { binpackScorer: scorer } : {}),
    limits,
  };
}
