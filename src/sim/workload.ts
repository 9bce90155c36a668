/**
 * Workloads: what arrives, when, how big, for how long. A synthetic generator draws them from a seeded Rng
 * (Poisson or bursty arrivals, a weighted size mix, a lifetime distribution, weighted tenants); a trace reader
 * (traces/) yields the same `Arrival` records. Every arrival carries a full sandbox spec, so it goes through
 * the same admission and placement as a real create.
 */
import type { SandboxSpec } from '../../scheduler/commands.js';
import { deepFreeze } from '../lib/freeze.js';
import { createRng, type Rng } from '../lib/prng.js';
import type { LifetimeSpec, SyntheticWorkload } from './spec.js';

export interface Arrival {
  /** The request id (and sandbox id) of the create. */
  readonly id: string;
  /** Virtual time of the create, in milliseconds. */
  readonly atMs: number;
  readonly spec: SandboxSpec;
  /** How long it lives once placed; +Infinity for ever. */
  readonly lifetimeMs: number;
  /** Suspended this long after placement, for `suspendForMs`, when set. */
  readonly suspendAfterMs?: number;
  readonly suspendForMs?: number;
}

export function drawLifetimeMs(rng: Rng, l: LifetimeSpec): number {
  switch (l.kind) {
    case 'forever':
      return Number.POSITIVE_INFINITY;
    case 'fixed':
      return l.s * 1000;
    case 'uniform':
      return (l.minS + rng.next() * Math.max(0, l.maxS - l.minS)) * 1000;
    case 'exponential':
      return -Math.log(1 - rng.next()) * l.meanS * 1000;
    case 'lognormal': {
      // Box–Muller: one standard normal from two uniforms.
      const u = 1 - rng.next();
      const z = Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rng.next());
      return l.medianS * Math.exp(l.sigma * z) * 1000;
    }
    case 'pareto':
      return (l.minS / (1 - rng.next()) ** (1 / l.alpha)) * 1000;
  }
}

/** Picks an index with probability proportional to its weight (cumulative table, binary search). */
export class WeightedPick {
  readonly #cum: Float64Array;
  constructor(weights: readonly number[]) {
    this.#cum = new Float64Array(weights.length);
    let s = 0;
    weights.forEach((w, i) => {
      s += w;
      this.#cum[i] = s;
    });
  }
  pick(rng: Rng): number {
    const total = this.#cum[this.#cum.length - 1] as number;
    const x = rng.next() * total;
    let lo = 0;
    let hi = this.#cum.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if ((this.#cum[mid] as number) > x) hi = mid;
      else lo = mid + 1;
    }
    return lo;
  }
}

/**
 * Generates the arrivals of a synthetic workload lazily, in time order. Specs are shared per (size, tenant),
 * so a million arrivals hold a few dozen spec objects.
 */
export function* syntheticArrivals(w: SyntheticWorkload, seed: number): Generator<Arrival> {
  const rng = createRng(seed);
  const tenants = w.tenants ?? [{ name: 'default', weight: 1 }];
  const sizePick = new WeightedPick(w.sizes.map((s) => s.weight));
  const tenantPick = new WeightedPick(tenants.map((t) => t.weight));
  // Each a deeply frozen copy (nothing shared with the workload's own objects): the scheduler keeps a frozen
  // spec's digest with it, so each is digested once per run, not once per planned batch.
  const specs: SandboxSpec[][] = w.sizes.map((size) =>
    tenants.map((t) =>
      deepFreeze(
        structuredClone({
          ...w.template,
          tenant: t.name,
          resources: { cpu: size.cpu, memory: size.memory, disk: size.disk },
          ...(size.gpu === undefined ? {} : { gpu: size.gpu }),
        }),
      ),
    ),
  );
  const durationMs = w.durationS === undefined ? Number.POSITIVE_INFINITY : w.durationS * 1000;
  let t = 0;
  for (let i = 0; i < w.count; i++) {
    t += interArrivalMs(rng, w.arrivals, t);
    if (t > durationMs) return;
    const spec = (specs[sizePick.pick(rng)] as SandboxSpec[])[tenantPick.pick(rng)] as SandboxSpec;
    const lifetimeMs = drawLifetimeMs(rng, w.lifetime);
    const suspend = w.suspend !== undefined && rng.chance(w.suspend.share) && Number.isFinite(lifetimeMs);
    yield {
      id: `a${i}`,
      atMs: Math.round(t),
      spec,
      lifetimeMs: Number.isFinite(lifetimeMs) ? Math.max(1, Math.round(lifetimeMs)) : lifetimeMs,
      ...(suspend && w.suspend !== undefined
        ? { suspendAfterMs: Math.round(lifetimeMs / 2), suspendForMs: Math.round(w.suspend.durationS * 1000) }
        : {}),
    };
  }
}

function interArrivalMs(rng: Rng, a: SyntheticWorkload['arrivals'], nowMs: number): number {
  let rate = a.ratePerS;
  if (a.kind === 'bursty' && (nowMs / 1000) % a.everyS < a.burstS) rate = a.burstRatePerS;
  return (-Math.log(1 - rng.next()) / rate) * 1000;
}
