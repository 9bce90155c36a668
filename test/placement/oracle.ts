/**
 * Independent checks of a plan, written from the specs alone (not with the placer's own feasibility code), so
 * a bug shared by the fast placer and the reference placer still shows up here.
 */
import type { Constraint, NodeSpec, PlacementRequest, Plan } from '../../placement/index.js';

/** A node's label, read as an own property only (a node without `constructor` has no such label). */
export function label(labels: Readonly<Record<string, string>>, key: string): string | undefined {
  return Object.keys(labels).includes(key) ? labels[key] : undefined;
}

export function holds(c: Constraint, labels: Readonly<Record<string, string>>): boolean {
  const v = label(labels, c.label);
  if (c.op === 'eq') return v === c.value;
  if (c.op === 'in') return v !== undefined && c.values.includes(v);
  if (c.op === 'notIn') return v === undefined || !c.values.includes(v);
  return v !== undefined;
}

/** Throws with a description of the first broken rule of the plan. */
export function checkPlan(
  nodes: readonly NodeSpec[],
  requests: readonly PlacementRequest[],
  plan: Plan,
): void {
  const byId = new Map(nodes.map((n) => [n.id, n]));
  const reqById = new Map(requests.map((r) => [r.id, r]));
  const used = new Map<string, { cpu: number; memory: number; disk: number; gpu: number[] }>();
  const aa = new Map<string, number>();
  const decided = new Set<string>();
  for (const p of plan.placements) {
    const node = byId.get(p.nodeId);
    const req = reqById.get(p.requestId);
    if (node === undefined || req === undefined)
      throw new Error(`unknown node or request in ${JSON.stringify(p)}`);
    if (decided.has(req.id)) throw new Error(`${req.id} decided twice`);
    decided.add(req.id);
    if (node.state !== 'ready') throw new Error(`${req.id} placed on ${node.state} node ${node.id}`);
    for (const c of req.constraints ?? []) {
      if (!holds(c, node.labels)) throw new Error(`${req.id} on ${node.id} breaks ${JSON.stringify(c)}`);
    }
    if (req.pinnedNode !== undefined && req.pinnedNode !== node.id)
      throw new Error(`${req.id} not on pinned node`);
    const u = used.get(node.id) ?? {
      cpu: 0,
      memory: 0,
      disk: 0,
      gpu: new Array<number>(node.gpu?.count ?? 0).fill(0),
    };
    u.cpu += req.resources.cpu;
    u.memory += req.resources.memory;
    u.disk += req.resources.disk;
    if (req.gpu !== undefined) {
      if (node.gpu === undefined) throw new Error(`${req.id} got GPUs on a node without`);
      if (req.gpu.model !== undefined && req.gpu.model !== node.gpu.model)
        throw new Error(`${req.id} wrong GPU model`);
      const asked = req.gpu.count !== undefined ? req.gpu.count : 1;
      if (p.gpuDevices.length !== asked)
        throw new Error(`${req.id} got ${p.gpuDevices.length} devices, asked ${asked}`);
      for (const g of p.gpuDevices) {
        const want = req.gpu.count !== undefined ? 1000 : (req.gpu.milli ?? 0);
        if (g.milli !== want) throw new Error(`${req.id} device share ${g.milli} != ${want}`);
        u.gpu[g.device] = (u.gpu[g.device] ?? 0) + g.milli;
      }
      if (new Set(p.gpuDevices.map((g) => g.device)).size !== p.gpuDevices.length)
        throw new Error('device reused');
    }
    used.set(node.id, u);
    if (u.cpu > node.capacity.cpu || u.memory > node.capacity.memory || u.disk > node.capacity.disk) {
      throw new Error(
        `node ${node.id} over-committed: ${JSON.stringify(u)} > ${JSON.stringify(node.capacity)}`,
      );
    }
    for (const [d, g] of u.gpu.entries())
      if (g > 1000) throw new Error(`node ${node.id} device ${d} at ${g} milli`);
    if (req.antiAffinity !== undefined) {
      const key = `${req.antiAffinity.group}@${node.id}`;
      const n = (aa.get(key) ?? 0) + 1;
      aa.set(key, n);
      if (n > req.antiAffinity.maxPerNode)
        throw new Error(`${key} holds ${n} > ${req.antiAffinity.maxPerNode}`);
    }
  }
  for (const r of plan.rejections) {
    if (decided.has(r.requestId)) throw new Error(`${r.requestId} both placed and rejected`);
    decided.add(r.requestId);
    if (r.message.length === 0) throw new Error(`${r.requestId} rejected without a reason`);
  }
  if (decided.size !== requests.length)
    throw new Error(`${requests.length - decided.size} requests got no outcome`);
}
