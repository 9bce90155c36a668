/**
 * The verifier reads the leader's plans from their flat arrays (`plan.placed`: batch index and node slot per
 * placement) instead of `plan.placements` and a map of the batch by id. Seeded random windows: a plan is made,
 * then entries commit before it is verified — nodes drained, downed, removed and registered again (a removed
 * node's slot reused by another), its ids committed as pending or placed — and the verifier must answer exactly
 * as it does reading `placements`: the same items, hint, retries with their reasons, committed and unplaced
 * requests. Each way a placement can fare is counted and required.
 */
import { describe, expect, it } from 'vitest';
import type { NodeSpec, Plan } from '../../placement/index.js';
import type { Command, SandboxSpec } from '../../scheduler/commands.js';
import { Planner } from '../../scheduler/core/plan.js';
import { type Verified, type VerifiedRequest, verify } from '../../scheduler/core/verify.js';
import { applyCommand, type SchedulerState, specDigest } from '../../scheduler/state.js';
import { createRng, type Rng } from '../../src/lib/prng.js';
import { run } from './fixtures.js';

const nodeIds = ['n0', 'n1', 'n2', 'n3', 'n4', 'n5', 'n6', 'n7'];

function nodeSpec(id: string): NodeSpec {
  return {
    id,
    capacity: { cpu: 8000, memory: 16384, disk: 100_000 },
    labels: { zone: `z${Number(id.slice(1)) % 3}` },
    ...(id === 'n4' ? { gpu: { model: 'a100', count: 2 } } : {}),
    state: 'ready',
  };
}

const r = (cpu: number) => ({ cpu, memory: 1024, disk: 1000 });
const specs: SandboxSpec[] = [
  { tenant: 'ta', resources: r(500) },
  { tenant: 'ta', resources: r(2000) },
  { tenant: 'tb', resources: r(1000) },
  { tenant: 'tb', resources: r(500), gpu: { milli: 500 } },
  { tenant: 'tb', resources: r(9000) },
];

/** A node entry: register an absent node, or drain, down, ready, remove a present one (a busy one refuses). */
function nodeChurn(rng: Rng, state: SchedulerState, atMs: number): Command {
  const nodeId = rng.pick(nodeIds);
  if (!state.nodes.has(nodeId)) return { type: 'node.register', atMs, spec: nodeSpec(nodeId) };
  const roll = rng.int(0, 5);
  if (roll === 0) return { type: 'node.remove', atMs, nodeId };
  if (roll === 1) return { type: 'node.state', atMs, nodeId, state: 'draining' };
  if (roll === 2) return { type: 'node.state', atMs, nodeId, state: 'down' };
  return { type: 'node.state', atMs, nodeId, state: 'ready' };
}

/** Ends a few sandboxes (lost and placed ones), so nodes empty and can be removed. */
function ends(rng: Rng, state: SchedulerState, atMs: number): Command | undefined {
  const ids = [...state.sandboxes.keys()];
  if (ids.length === 0) return undefined;
  const items = Array.from({ length: rng.int(1, 6) }, () => ({
    sandboxId: rng.pick(ids),
    state: 'terminated' as const,
  }));
  return { type: 'status', atMs, items };
}

/** Everything a caller reads from the verifier but the hint's plan origin (only the arrays' path carries it). */
function answer(v: Verified<VerifiedRequest>): unknown {
  return {
    items: v.items,
    unseen: v.hint.unseen,
    dedup: v.hint.dedup,
    retry: v.retry.map((x) => [x.req, x.reason]),
    unplaced: v.unplaced.map((x) => [x.req, x.reason]),
    committed: v.committed,
  };
}

interface Counts {
  kept: number;
  retried: number;
  committed: number;
  pendingKept: number;
  slotMoved: number;
  unplaced: number;
}

function runSeed(seed: number, rounds: number, counts: Counts): void {
  const rng = createRng(seed);
  let n = 0;
  const fresh = (): string => `v${seed}-${n++}`;
  let atMs = 1;
  let state = run(
    nodeIds.slice(0, 6).map((id) => ({ type: 'node.register', atMs: 0, spec: nodeSpec(id) })),
  ).state;
  const step = (cmd: Command | undefined): void => {
    if (cmd !== undefined) state = applyCommand(state, cmd, state.applied + 1).state;
  };
  const planner = new Planner({});
  for (let round = 0; round < rounds; round++) {
    const at = `seed ${seed}, round ${round}`;
    for (let k = rng.int(0, 3); k > 0; k--)
      step(rng.chance(0.5) ? ends(rng, state, atMs++) : nodeChurn(rng, state, atMs++));
    // The batch: new ids, admitted against this version or not; now and then a committed pending one.
    const batch: VerifiedRequest[] = [];
    for (let i = rng.int(1, 8); i > 0; i--) {
      const spec = rng.pick(specs);
      batch.push(
        rng.chance(0.5)
          ? { requestId: fresh(), spec, admittedNewIn: state.dedup }
          : { requestId: fresh(), spec },
      );
    }
    const pendingOnes = [...state.sandboxes.values()].filter((sb) => sb.state === 'pending');
    if (pendingOnes.length > 0 && rng.chance(0.3)) {
      const sb = rng.pick(pendingOnes);
      batch.push({ requestId: sb.requestId, spec: sb.spec });
    }
    const { plan, base } = planner.plan(batch, state.index);
    planner.settled();
    // Entries between plan and verify: node changes (a removal then a registration may reuse the slot), ends,
    // and batch ids committed as pending or placed elsewhere.
    for (let k = rng.int(0, 4); k > 0; k--) {
      const roll = rng.int(0, 6);
      if (roll <= 2) step(nodeChurn(rng, state, atMs++));
      else if (roll === 3) step(ends(rng, state, atMs++));
      else {
        const req = rng.pick(batch);
        const item = {
          requestId: req.requestId,
          sandboxId: req.requestId,
          spec: req.spec,
          specDigest: specDigest(req.spec),
        };
        step(
          roll === 4
            ? { type: 'pend', atMs: atMs++, items: [{ ...item, reason: 'elsewhere', deadlineMs: atMs + 99 }] }
            : {
                type: 'place',
                atMs: atMs++,
                items: [{ ...item, nodeId: rng.pick(nodeIds), gpuDevices: [] }],
              },
        );
      }
    }
    for (let k = 0; k < plan.placed.count; k++) {
      const nodeId = plan.index.nodeId(plan.placed.slot[k] as number);
      if (state.index.slotOf(nodeId) !== plan.placed.slot[k]) counts.slotMoved += 1;
    }
    // The same plan with only its object form, as a hand-made plan or a caller without the base has it.
    const objects = { placements: plan.placements, rejections: plan.rejections } as unknown as Plan;
    const fromArrays = verify(plan, batch, state, undefined, base);
    const fromObjects = verify(objects, batch, state);
    expect(answer(fromArrays), at).toEqual(answer(fromObjects));
    expect(fromArrays.hint.origin?.plan, at).toBe(plan);
    counts.kept += fromArrays.items.length;
    counts.retried += fromArrays.retry.length;
    counts.committed += fromArrays.committed.length;
    counts.unplaced += fromArrays.unplaced.length;
    counts.pendingKept += fromArrays.items.filter(
      (it) => state.sandbox(it.sandboxId)?.state === 'pending',
    ).length;
    atMs += 1;
  }
}

describe('verify reads plan.placed', () => {
  it.each([1, 2, 3, 4, 5])(
    'verify placed - the flat-array path answers as the placements path after node and id churn (seed %i)',
    (seed) => {
      const counts: Counts = { kept: 0, retried: 0, committed: 0, pendingKept: 0, slotMoved: 0, unplaced: 0 };
      runSeed(seed, 400, counts);
      const seen = `seed ${seed} ${JSON.stringify(counts)}`;
      if (process.env.VERIFY_PLACED_COUNTS) console.log(seen);
      expect(counts.kept, seen).toBeGreaterThan(100);
      expect(counts.retried, seen).toBeGreaterThan(10);
      expect(counts.committed, seen).toBeGreaterThan(10);
      expect(counts.pendingKept, seen).toBeGreaterThan(2);
      expect(counts.slotMoved, seen).toBeGreaterThan(2);
      expect(counts.unplaced, seen).toBeGreaterThan(2);
    },
  );
});
