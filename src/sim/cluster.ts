/**
 * Expands a cluster spec into node specs (ids `<shape>-<n>`, zones and racks round-robin) and resolves its
 * timed node events to node ids, so the engine deals only in registered ids.
 */
import type { NodeSpec } from '../../placement/index.js';
import { ConfigError } from '../lib/errors.js';
import type { ClusterSpec, NodeGroup } from './spec.js';

export interface NodeEvent {
  readonly atMs: number;
  readonly kind: 'fail' | 'drain' | 'return';
  readonly nodeId: string;
}

export function groupNodes(group: NodeGroup): NodeSpec[] {
  const out: NodeSpec[] = [];
  const zones = group.zones;
  for (let i = 0; i < group.count; i++) {
    const labels: Record<string, string> = { instanceType: group.shape, ...group.labels };
    if (zones !== undefined) {
      const zone = zones[i % zones.length] as string;
      labels.zone = zone;
      if (group.racksPerZone !== undefined) {
        labels.rack = `${zone}-r${Math.floor(i / zones.length) % group.racksPerZone}`;
      }
    }
    out.push({
      id: `${group.shape}-${i}`,
      capacity: group.capacity,
      ...(group.gpu === undefined || group.gpu.count === 0 ? {} : { gpu: group.gpu }),
      labels,
      state: 'ready',
    });
  }
  return out;
}

export function clusterNodes(spec: ClusterSpec): NodeSpec[] {
  const shapes = new Set<string>();
  for (const g of spec.nodes) {
    if (shapes.has(g.shape)) throw new ConfigError(`cluster.nodes: shape ${g.shape} is listed twice`);
    shapes.add(g.shape);
  }
  const nodes = spec.nodes.flatMap(groupNodes);
  if (nodes.length === 0) throw new ConfigError('cluster: no nodes (every count is 0)');
  return nodes;
}

/** The cluster's node events in time order, each naming one node. */
export function clusterEvents(spec: ClusterSpec, nodes: readonly NodeSpec[]): NodeEvent[] {
  const ids = new Set(nodes.map((n) => n.id));
  const out: NodeEvent[] = [];
  for (const [i, e] of (spec.events ?? []).entries()) {
    const atMs = Math.round(e.atS * 1000);
    if (e.node !== undefined) {
      if (e.shape !== undefined || e.count !== undefined)
        throw new ConfigError(`cluster.events.${i}: name a node, or a shape and count, not both`);
      if (!ids.has(e.node)) throw new ConfigError(`cluster.events.${i}.node: no node ${e.node}`);
      out.push({ atMs, kind: e.kind, nodeId: e.node });
      continue;
    }
    const group = spec.nodes.find((g) => g.shape === e.shape);
    if (group === undefined) throw new ConfigError(`cluster.events.${i}: name a node or a known shape`);
    // At most the nodes the shape has: a sizing search varies the count under the same events.
    const count = Math.min(e.count ?? 1, group.count);
    for (let n = 0; n < count; n++) out.push({ atMs, kind: e.kind, nodeId: `${group.shape}-${n}` });
  }
  return out.sort((a, b) => a.atMs - b.atMs);
}

/** The same cluster with `count` nodes of `shape`. */
export function withShapeCount(spec: ClusterSpec, shape: string, count: number): ClusterSpec {
  if (!spec.nodes.some((g) => g.shape === shape))
    throw new ConfigError(`no node shape ${shape} in the cluster`);
  return { ...spec, nodes: spec.nodes.map((g) => (g.shape === shape ? { ...g, count } : g)) };
}
