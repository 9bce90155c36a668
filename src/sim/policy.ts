/**
 * A policy spec (what-if runs list several) turned into placement's PlanOptions. The resource-complete
 * scorers (`gpu-bestfit`, `gpu-dot`) and FGD live in placement/ (stages/score-gpu.ts, fgd.ts); FGD needs the
 * workload's size mix, which is taken from the arrivals the run will see (their shapes and how often each
 * occurs), as the FGD paper takes it from the trace.
 */
import { fgdScorer, gpuBestFit, gpuDot, type PlanOptions, type TaskClass } from '../../placement/index.js';
import type { PolicySpec } from './spec.js';
import type { Arrival } from './workload.js';

export const defaultPolicy: PolicySpec = Object.freeze({ name: 'default' });

/** The arrivals' request shapes and how many of each, most frequent first. */
export function taskClasses(arrivals: readonly Arrival[]): TaskClass[] {
  const byKey = new Map<string, { c: TaskClass; n: number }>();
  for (const a of arrivals) {
    const g = a.spec.gpu;
    const key = `${a.spec.resources.cpu}/${a.spec.resources.memory}/${g?.count ?? 0}/${g?.milli ?? 0}/${g?.model ?? ''}`;
    const have = byKey.get(key);
    if (have !== undefined) {
      have.n += 1;
      continue;
    }
    const gpu =
      g === undefined
        ? undefined
        : {
            ...(g.count === undefined ? {} : { count: g.count }),
            ...(g.milli === undefined ? {} : { milli: g.milli }),
            ...(g.model === undefined ? {} : { model: g.model }),
          };
    byKey.set(key, {
      c: {
        cpu: a.spec.resources.cpu,
        memory: a.spec.resources.memory,
        ...(gpu === undefined ? {} : { gpu }),
        weight: 0,
      },
      n: 1,
    });
  }
  return [...byKey.values()].sort((x, y) => y.n - x.n).map(({ c, n }) => ({ ...c, weight: n }));
}

export function planOptionsOf(policy: PolicySpec, arrivals: readonly Arrival[]): PlanOptions {
  const limits: { candidateLimit?: number; exactScanNodesMax?: number } = {};
  if (policy.candidateLimit !== undefined) limits.candidateLimit = policy.candidateLimit;
  if (policy.exactScanNodesMax !== undefined) limits.exactScanNodesMax = policy.exactScanNodesMax;
  const scorer = policy.scorer;
  let binpackScorer: PlanOptions['binpackScorer'];
  if (scorer === 'gpu-bestfit') binpackScorer = gpuBestFit;
  else if (scorer === 'gpu-dot') binpackScorer = gpuDot;
  else if (scorer === 'fgd') binpackScorer = fgdScorer(taskClasses(arrivals));
  else binpackScorer = scorer;
  return {
    ...(policy.strategy === undefined ? {} : { strategy: policy.strategy }),
    ...(binpackScorer === undefined ? {} : { binpackScorer }),
    limits,
  };
}
