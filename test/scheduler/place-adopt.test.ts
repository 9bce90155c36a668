/**
 * The `place` apply may take the planner's index as its own instead of allocating every item again on a fresh
 * index builder (PlanOrigin in scheduler/core/state.ts): only when (a) the draft's index before the entry is the
 * very index the plan was made on, and (b) every item is placed, new, exactly as the plan placed it. These tests
 * apply seeded random windows both ways — with the leader's hint (which carries the plan) and without it (as a
 * replica applying from the log) — and require the same result, events, state digest, node lists and the whole
 * index: every column of every page, GPU shares, group counts, node states, classes and the version's reads.
 * They also require that adoption happens exactly when (a) and (b) hold, and that each way a window can miss
 * them is exercised: an entry between plan and apply that edits the index, one that does not (a quota, a
 * heartbeat), an id committed meanwhile (dropped by the verifier, a duplicate, a conflict, a pending sandbox
 * placed), quota refusals, and pipelined plans (the second made on the first's index).
 */
import { isImmutable } from 'immutable';
import { describe, expect, it } from 'vitest';
import { bucketCount, type ClusterIndex, type NodeSpec } from '../../placement/index.js';
import type { Command, PlaceItem, SandboxSpec } from '../../scheduler/commands.js';
import { Planner } from '../../scheduler/core/plan.js';
import { verify } from '../../scheduler/core/verify.js';
import { applyCommand, type SchedulerState, specDigest } from '../../scheduler/state.js';
import { stateDigest } from '../../scheduler/state-machine.js';
import { createRng, type Rng } from '../../src/lib/prng.js';
import { run } from './fixtures.js';

const nodeIds = ['n0', 'n1', 'n2', 'n3', 'n4', 'n5', 'n6'];
const zones = ['a', 'b', 'c'];
const tenants = ['ta', 'tb'];

function nodeSpec(rng: Rng, id: string, state: NodeSpec['state'] = 'ready'): NodeSpec {
  const gpu = id === 'n4' || id === 'n5';
  return {
    id,
    capacity: { cpu: rng.pick([4000, 8000]), memory: 16384, disk: 100_000 },
    labels: { zone: zones[Number(id.slice(1)) % zones.length] as string },
    ...(gpu ? { gpu: { model: 'a100', count: 2 } } : {}),
    state,
  };
}

/** Specs of every allocation shape: plain, whole and fractional GPUs, anti-affinity, spread (own and tenant group). */
function specs(tenant: string): SandboxSpec[] {
  const r = (cpu: number, memory: number) => ({ cpu, memory, disk: 1000 });
  return [
    { tenant, resources: r(500, 1024) },
    { tenant, resources: r(1000, 2048) },
    { tenant, resources: r(2000, 4096) },
    { tenant, resources: r(500, 1024), gpu: { count: 1 } },
    { tenant, resources: r(500, 1024), gpu: { milli: 500 } },
    { tenant, resources: r(500, 1024), antiAffinity: { group: 'g1', maxPerNode: 2 } },
    { tenant, resources: r(500, 1024), spread: { label: 'zone', maxSkew: 2 } },
    { tenant, resources: r(1000, 1024), spread: { label: 'zone', maxSkew: 1, group: 'sg' } },
  ];
}
const allSpecs = tenants.flatMap(specs);

/** An entry that moves the state on; `indexEdit` says whether it may edit the cluster index. */
function churn(rng: Rng, state: SchedulerState, atMs: number, fresh: () => string): Command {
  const nodeId = rng.pick(nodeIds);
  switch (rng.int(0, 6)) {
    case 0:
      return state.nodes.has(nodeId)
        ? {
            type: 'node.state',
            atMs,
            nodeId,
            state: rng.pick(['ready', 'ready', 'draining', 'down'] as const),
          }
        : { type: 'node.register', atMs, spec: nodeSpec(rng, nodeId) };
    case 1:
      return { type: 'node.remove', atMs, nodeId };
    case 2:
    case 3: {
      const ids = [...state.sandboxes.keys()];
      if (ids.length === 0) return { type: 'node.heartbeat', atMs, nodeIds: [nodeId] };
      return {
        type: 'status',
        atMs,
        items: Array.from({ length: rng.int(1, 4) }, () => ({
          sandboxId: rng.pick(ids),
          state: 'terminated' as const,
        })),
      };
    }
    case 4: {
      const id = fresh();
      const spec = rng.pick(allSpecs);
      return {
        type: 'pend',
        atMs,
        items: [
          {
            requestId: id,
            sandboxId: id,
            spec,
            specDigest: specDigest(spec),
            reason: 'x',
            deadlineMs: atMs + 99,
          },
        ],
      };
    }
    case 5:
      return quota(rng, atMs);
    default:
      return { type: 'node.heartbeat', atMs, nodeIds: [nodeId] };
  }
}

/**
 * A tenant's quota: loose (churn), or tight — a few sandboxes above the tenant's usage, so the next window's items
 * of that tenant may be refused (`state` given).
 */
function quota(rng: Rng, atMs: number, requestId?: string, state?: SchedulerState): Command {
  const tenant = rng.pick(tenants);
  const q =
    state === undefined
      ? { sandboxes: rng.int(100, 1000) }
      : rng.chance(0.5)
        ? { sandboxes: state.usage(tenant).sandboxes + rng.int(0, 3) }
        : { cpu: state.usage(tenant).cpu + rng.int(0, 3000) };
  return { type: 'quota.set', atMs, tenant, quota: q, ...(requestId === undefined ? {} : { requestId }) };
}

/** Immutable collections as sorted entries (or in order, for a stack), typed arrays as arrays, recursively. */
function plain(v: unknown): unknown {
  if (isImmutable(v)) {
    const c = v as unknown as { entries(): Iterable<[unknown, unknown]>; toArray(): unknown[] };
    if ('peek' in (v as object)) return c.toArray().map(plain);
    return [...c.entries()]
      .map(([k, x]) => [plain(k), plain(x)])
      .sort((a, b) => (JSON.stringify(a[0]) < JSON.stringify(b[0]) ? -1 : 1));
  }
  if (ArrayBuffer.isView(v)) return Array.from(v as unknown as ArrayLike<number>);
  if (Array.isArray(v)) return v.map(plain);
  if (v !== null && typeof v === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) out[k] = plain(x);
    return out;
  }
  return v;
}

/**
 * Everything a version of the index holds and answers: its raw data (every page of every column, GPU shares,
 * bucket bits and summaries, metadata, id map, free slots, classes, group counts, images, ready totals) and its
 * public reads (each node's view, each bucket's scan, each class's slots).
 */
function indexImage(index: ClusterIndex): unknown {
  const data = (index as unknown as { data(): Record<string, unknown> }).data();
  const views: unknown[] = [];
  for (let slot = 0; slot < index.slotCount; slot++) {
    views.push(
      index.isLive(slot) ? [index.view(slot), index.bucketOfSlot(slot), index.versionOf(slot)] : null,
    );
  }
  const buckets: number[][] = [];
  for (let b = 0; b < bucketCount; b++) {
    const seen: number[] = [];
    index.scanBucket(b, 0, (slot) => {
      seen.push(slot);
      return false;
    });
    buckets.push(seen);
  }
  const groups = {
    g1: plain(index.antiAffinityCounts('g1')),
    sg: plain(index.spreadCounts('sg', 'zone')),
    ta: plain(index.spreadCounts('ta', 'zone')),
    tb: plain(index.spreadCounts('tb', 'zone')),
  };
  const classes = index.classes.map((_, c) => plain(index.slotsOfClass(c)));
  return { data: plain(data), version: index.version, views, buckets, groups, classes };
}

/** Each node's sandboxes, sorted: a version that built its own lists has them in slot order, not link order. */
function nodeLists(state: SchedulerState): unknown {
  return nodeIds.map((id) => [id, [...state.sandboxesOfNode(id)].sort()]);
}

interface Counts {
  adopted: number;
  /** Missed (a): an entry between plan and apply edited the index. */
  baseMoved: number;
  /** (a) held, (b) missed: the verifier dropped a placement. */
  dropped: number;
  /** (a) held, (b) missed: an item was a duplicate, a conflict, a pending sandbox's, or refused. */
  notAsPlanned: number;
  pipelined: number;
  pipelinedAdopted: number;
  /** Adopted windows with a GPU, anti-affinity or spread item. */
  adoptedShaped: number;
}

interface Window {
  readonly batch: { readonly requestId: string; readonly spec: SandboxSpec }[];
  readonly planned: ReturnType<Planner['plan']>;
  readonly verified: ReturnType<typeof verify>;
}

function runSeed(seed: number, rounds: number, counts: Counts): void {
  const rng = createRng(seed);
  let n = 0;
  const fresh = (): string => `q${seed}-${n++}`;
  let atMs = 1;
  let state = run(
    nodeIds.slice(0, 5).map((id) => ({ type: 'node.register', atMs: 0, spec: nodeSpec(rng, id) })),
  ).state;
  const planner = new Planner({});
  const step = (cmd: Command): void => {
    state = applyCommand(state, cmd, state.applied + 1).state;
  };
  const newBatch = (): Window['batch'] => {
    const batch: { requestId: string; spec: SandboxSpec }[] = [];
    for (let i = rng.int(1, 8); i > 0; i--) batch.push({ requestId: fresh(), spec: rng.pick(allSpecs) });
    // Now and then a committed id: a pending sandbox (placed by the item) or a live one (the verifier drops it).
    const committed = [...state.sandboxes.values()];
    if (committed.length > 0 && rng.chance(0.12)) {
      const sb = rng.pick(committed);
      if (!batch.some((r) => r.requestId === sb.requestId))
        batch.push({ requestId: sb.requestId, spec: sb.spec });
    }
    return batch;
  };
  const planAndVerify = (batch: Window['batch']): Window => {
    const planned = planner.plan(batch, state.index);
    return { batch, planned, verified: verify(planned.plan, batch, state, undefined, planned.base) };
  };

  for (let round = 0; round < rounds; round++) {
    for (let k = rng.int(0, 3); k > 0; k--) step(churn(rng, state, atMs++, fresh));
    const at = `seed ${seed}, round ${round}`;
    const windows: Window[] = [planAndVerify(newBatch())];
    if (rng.chance(0.3)) windows.push(planAndVerify(newBatch()));
    // An entry between the plans and their apply: it edits the index or not, or commits a verified id.
    if (rng.chance(0.35)) {
      const items = (windows[0] as Window).verified.items;
      const roll = rng.int(0, 4);
      const taken = items.length > 0 ? rng.pick(items) : undefined;
      if (roll === 0 && taken !== undefined)
        step({ type: 'pend', atMs, items: [{ ...taken, reason: 'elsewhere', deadlineMs: atMs + 99 }] });
      else if (roll === 1 && taken !== undefined) step(quota(rng, atMs, taken.requestId));
      else if (roll === 2) step(quota(rng, atMs, undefined, state));
      else step(churn(rng, state, atMs, fresh));
      atMs += 1;
    }
    for (const [w, window] of windows.entries()) {
      const { planned, verified } = window;
      const items = verified.items;
      planner.settled();
      if (items.length === 0) continue;
      const cmd: Command = { type: 'place', atMs, items: items as PlaceItem[] };
      const before = state;
      const withHint = applyCommand(before, cmd, before.applied + 1, verified.hint);
      const without = applyCommand(before, cmd, before.applied + 1);
      const where = `${at}, window ${w} (plan base v${planned.base.version}, index before v${before.index.version})`;
      expect(withHint.result, where).toEqual(without.result);
      expect(withHint.events, where).toEqual(without.events);
      expect(stateDigest(withHint.state), where).toBe(stateDigest(without.state));
      expect(nodeLists(withHint.state), where).toEqual(nodeLists(without.state));
      expect(indexImage(withHint.state.index), where).toEqual(indexImage(without.state.index));
      expect(withHint.state.index.version, where).toBe(without.state.index.version);

      // Adoption happens exactly when (a) and (b) hold.
      const baseHeld = before.index === planned.base;
      const dropped = items.length !== planned.plan.placed.count;
      const results = withHint.result.ok ? (withHint.result.items ?? []) : [];
      const asPlanned = results.every(
        (r, i) => r.outcome === 'placed' && before.sandbox((items[i] as PlaceItem).sandboxId) === undefined,
      );
      const adopted = withHint.state.index === planned.plan.index;
      expect(adopted, `${where}: base ${baseHeld}, dropped ${dropped}, as planned ${asPlanned}`).toBe(
        baseHeld && !dropped && asPlanned,
      );
      if (adopted) counts.adopted += 1;
      else if (!baseHeld) counts.baseMoved += 1;
      else if (dropped) counts.dropped += 1;
      else counts.notAsPlanned += 1;
      if (adopted && items.some((it) => it.spec !== undefined && Object.keys(it.spec).length > 2))
        counts.adoptedShaped += 1;
      if (w === 1) {
        counts.pipelined += 1;
        if (adopted) counts.pipelinedAdopted += 1;
      }
      state = withHint.state;
    }
    atMs += 1;
  }
}

describe('place adopts the plan index', () => {
  it.each([1, 2, 3, 4, 5, 6])(
    'place adopt - a window applied with and without the plan gives the same state, index and answers (seed %i)',
    (seed) => {
      const counts: Counts = {
        adopted: 0,
        baseMoved: 0,
        dropped: 0,
        notAsPlanned: 0,
        pipelined: 0,
        pipelinedAdopted: 0,
        adoptedShaped: 0,
      };
      runSeed(seed, 300, counts);
      const seen = `seed ${seed} ${JSON.stringify(counts)}`;
      if (process.env.PLACE_ADOPT_COUNTS) console.log(seen);
      // Every path was taken: adopted (plain and shaped, pipelined), and each way of missing (a) or (b).
      expect(counts.adopted, seen).toBeGreaterThan(50);
      expect(counts.adoptedShaped, seen).toBeGreaterThan(10);
      expect(counts.pipelinedAdopted, seen).toBeGreaterThan(3);
      expect(counts.baseMoved, seen).toBeGreaterThan(5);
      expect(counts.dropped, seen).toBeGreaterThan(2);
      expect(counts.notAsPlanned, seen).toBeGreaterThan(5);
    },
  );
});
