/**
 * Seeded generators of realistic clusters and sandbox workloads, shared by the demo, the benchmarks, the
 * tests and users' own capacity experiments. Everything derives from the `Rng` passed in.
 */
import type { Constraint, NodeSpec, PlacementRequest } from '../../placement/index.js';
import type { Rng } from '../lib/prng.js';

/** Instance types of the generated fleet: mixed shapes, one with GPUs. */
export const instanceTypes = [
  { name: 'c8', cpu: 8_000, memory: 16_384, disk: 204_800, weight: 3 },
  { name: 'm16', cpu: 16_000, memory: 65_536, disk: 409_600, weight: 4 },
  { name: 'r32', cpu: 32_000, memory: 262_144, disk: 819_200, weight: 2 },
  { name: 'c64', cpu: 64_000, memory: 131_072, disk: 1_638_400, weight: 1 },
] as const;
export const gpuInstance = {
  name: 'g32',
  cpu: 32_000,
  memory: 262_144,
  disk: 1_048_576,
  gpuModel: 'a100',
  gpus: 8,
};
export const zones = ['z-a', 'z-b', 'z-c', 'z-d'] as const;
const racksPerZone = 16;
const imageCount = 64;

export interface ClusterShape {
  readonly nodes: number;
  /** Share of nodes with GPUs. Default 0.02. */
  readonly gpuShare?: number;
  /** Share of nodes draining, cordoned or down. Default 0.03. */
  readonly notReadyShare?: number;
  readonly idPrefix?: string;
}

export function generateCluster(rng: Rng, shape: ClusterShape): NodeSpec[] {
  const weights = instanceTypes.flatMap((t) => Array<(typeof instanceTypes)[number]>(t.weight).fill(t));
  const out: NodeSpec[] = [];
  for (let i = 0; i < shape.nodes; i++) {
    const zone = zones[i % zones.length] as string;
    const rack = `${zone}-r${rng.int(0, racksPerZone)}`;
    const gpu = rng.chance(shape.gpuShare ?? 0.02);
    const t = gpu ? gpuInstance : rng.pick(weights);
    const roll = rng.next();
    const notReady = shape.notReadyShare ?? 0.03;
    const state =
      roll < notReady / 3
        ? 'draining'
        : roll < (2 * notReady) / 3
          ? 'cordoned'
          : roll < notReady
            ? 'down'
            : 'ready';
    const images = Array.from({ length: rng.int(0, 6) }, () => `img-${rng.int(0, imageCount)}`);
    out.push({
      id: `${shape.idPrefix ?? 'node'}-${String(i).padStart(6, '0')}`,
      capacity: { cpu: t.cpu, memory: t.memory, disk: t.disk },
      ...(gpu ? { gpu: { model: gpuInstance.gpuModel, count: gpuInstance.gpus } } : {}),
      labels: { zone, rack, instanceType: t.name, tier: rng.chance(0.5) ? 'ssd' : 'hdd' },
      state,
      images: [...new Set(images)],
    });
  }
  return out;
}

export interface WorkloadShape {
  readonly requests: number;
  /** Share with required constraints. Default 0.2. */
  readonly constraintShare?: number;
  /** Share with spread or anti-affinity. Default 0.1. */
  readonly groupShare?: number;
  /** Share asking for GPUs. Default 0.01. */
  readonly gpuShare?: number;
  readonly idPrefix?: string;
  readonly tenants?: number;
}

const sandboxShapes = [
  { cpu: 250, memory: 256, disk: 1_024 },
  { cpu: 500, memory: 512, disk: 2_048 },
  { cpu: 1_000, memory: 1_024, disk: 4_096 },
  { cpu: 1_000, memory: 4_096, disk: 8_192 },
  { cpu: 2_000, memory: 2_048, disk: 8_192 },
  { cpu: 2_000, memory: 8_192, disk: 16_384 },
  { cpu: 4_000, memory: 8_192, disk: 20_480 },
] as const;

function randomConstraint(rng: Rng): Constraint {
  switch (rng.int(0, 4)) {
    case 0:
      return { label: 'zone', op: 'in', values: [rng.pick(zones), rng.pick(zones)] };
    case 1:
      return { label: 'tier', op: 'eq', value: 'ssd' };
    case 2:
      return { label: 'instanceType', op: 'notIn', values: ['c8'] };
    default:
      return { label: 'zone', op: 'eq', value: rng.pick(zones) };
  }
}

export function generateRequests(rng: Rng, shape: WorkloadShape): PlacementRequest[] {
  const out: PlacementRequest[] = [];
  const tenants = shape.tenants ?? 20;
  for (let i = 0; i < shape.requests; i++) {
    const s = rng.pick(sandboxShapes);
    const tenant = `tenant-${rng.int(0, tenants)}`;
    const constrained = rng.chance(shape.constraintShare ?? 0.2);
    const grouped = rng.chance(shape.groupShare ?? 0.1);
    const gpu = rng.chance(shape.gpuShare ?? 0.01);
    const req: PlacementRequest = {
      id: `${shape.idPrefix ?? 'sbx'}-${String(i).padStart(7, '0')}`,
      tenant,
      resources: { cpu: s.cpu, memory: s.memory, disk: s.disk },
      priority: rng.chance(0.1) ? 10 : 0,
      ...(constrained ? { constraints: [randomConstraint(rng)] } : {}),
      ...(grouped
        ? rng.chance(0.5)
          ? { spread: { label: 'zone', maxSkew: 1, group: `${tenant}-app-${rng.int(0, 5)}` } }
          : { antiAffinity: { group: `${tenant}-svc-${rng.int(0, 10)}`, maxPerNode: rng.int(1, 3) } }
        : {}),
      ...(gpu ? { gpu: rng.chance(0.5) ? { milli: 250 } : { count: rng.int(1, 3) } } : {}),
      ...(rng.chance(0.3) ? { imageId: `img-${rng.int(0, imageCount)}` } : {}),
    };
    out.push(req);
  }
  return out;
}
