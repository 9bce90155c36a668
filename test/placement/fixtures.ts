/**
 * Small random clusters and batches for the placement properties, built from one seed so a failing case
 * replays from the seed fast-check prints. Capacities are tight on purpose, so batches hit every kind of
 * rejection (state, constraint, anti-affinity, spread, each resource, GPU).
 */
import type { Constraint, NodeSpec, PlacementRequest } from '../../placement/index.js';
import { createRng, type Rng } from '../../src/lib/prng.js';

const zones = ['a', 'b', 'c'];
/** Label names that `Object.prototype` also answers to: a lookup that is not own-only finds them everywhere. */
export const prototypeLabels = ['constructor', 'toString', '__proto__', 'hasOwnProperty'] as const;
/** `*` is a model name like any other (it does not mean "any model"); it must not share facts with no model. */
const gpuModels = ['a100', 'l4', '*'];
const states = ['ready', 'ready', 'ready', 'ready', 'draining', 'cordoned', 'down'] as const;

export function smallCluster(rng: Rng, nodes: number): NodeSpec[] {
  return Array.from({ length: nodes }, (_, i) => {
    const gpu = rng.chance(0.2);
    return {
      id: `n${i}`,
      capacity: { cpu: rng.int(1, 9) * 1000, memory: rng.int(1, 9) * 1024, disk: rng.int(1, 5) * 10_240 },
      ...(gpu ? { gpu: { model: rng.pick(gpuModels), count: rng.int(1, 5) } } : {}),
      labels: {
        zone: rng.pick(zones),
        tier: rng.pick(['ssd', 'hdd']),
        ...(rng.chance(0.3) ? { special: 'yes' } : {}),
        // A computed key makes `__proto__` an own label, as JSON.parse does.
        ...(rng.chance(0.2) ? { [rng.pick(prototypeLabels)]: rng.pick(zones) } : {}),
      },
      state: rng.pick(states),
      images: rng.chance(0.4) ? [`img${rng.int(0, 3)}`] : [],
    };
  });
}

function constraint(rng: Rng): Constraint {
  switch (rng.int(0, 6)) {
    case 0:
      return { label: 'zone', op: 'eq', value: rng.pick(zones) };
    case 1:
      return { label: 'zone', op: 'in', values: [rng.pick(zones), rng.pick(zones)] };
    case 2:
      return { label: 'tier', op: 'notIn', values: ['hdd'] };
    case 3:
      return { label: 'special', op: 'exists' };
    case 4:
      return { label: rng.pick(prototypeLabels), op: 'exists' };
    default:
      return {
        label: rng.pick(prototypeLabels),
        op: rng.pick(['in', 'notIn'] as const),
        values: [rng.pick(zones)],
      };
  }
}

export function smallBatch(rng: Rng, count: number, nodeCount: number, prefix = 'r'): PlacementRequest[] {
  return Array.from({ length: count }, (_, i) => {
    const gpuRoll = rng.next();
    return {
      id: `${prefix}${i}`,
      tenant: `t${rng.int(0, 3)}`,
      resources: { cpu: rng.int(0, 5) * 500, memory: rng.int(1, 8) * 512, disk: rng.int(1, 4) * 2048 },
      priority: rng.int(0, 3),
      ...(rng.chance(0.3) ? { constraints: [constraint(rng)] } : {}),
      ...(rng.chance(0.2) ? { preferences: [{ constraint: constraint(rng), weight: rng.int(1, 101) }] } : {}),
      ...(rng.chance(0.15)
        ? {
            spread: {
              label: rng.chance(0.8) ? 'zone' : rng.pick(prototypeLabels),
              maxSkew: rng.int(1, 3),
              group: `g${rng.int(0, 2)}`,
            },
          }
        : {}),
      ...(rng.chance(0.15)
        ? { antiAffinity: { group: `aa${rng.int(0, 2)}`, maxPerNode: rng.int(1, 3) } }
        : {}),
      ...(gpuRoll < 0.1
        ? { gpu: { count: rng.int(1, 3) } }
        : gpuRoll < 0.2
          ? { gpu: { milli: rng.int(1, 10) * 100 } }
          : {}),
      ...(rng.chance(0.08) ? { gpu: { milli: 500, model: rng.pick(gpuModels) } } : {}),
      ...(rng.chance(0.3) ? { imageId: `img${rng.int(0, 3)}` } : {}),
      ...(rng.chance(0.05) ? { pinnedNode: `n${rng.int(0, nodeCount + 1)}` } : {}),
      ...(rng.chance(0.2) ? { strategy: 'spread' as const } : {}),
    };
  });
}

export { createRng };
