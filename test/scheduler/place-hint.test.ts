/**
 * The leader reads a create's request id in the dedup table once: admission's answer is carried to the
 * verifier (`admittedNewIn`) and the verifier's to the `place` apply (`PlaceHint`), each trusted only while the
 * table is the very version that was read. These tests check that the shortcuts change nothing: on seeded
 * random states, the verifier's output with and without admission's answer, and a `place` entry's result,
 * events and state applied with and without the verifier's hint, must be equal — including stale answers (the
 * id committed since), ids batched twice, a command applied between verify and apply, and nodes that changed
 * state since the plan (the verifier reads node states from the index: compared with the node records).
 */
import { describe, expect, it } from 'vitest';
import type { NodeSpec, Plan } from '../../placement/index.js';
import type { Command, PlaceItem, SandboxSpec } from '../../scheduler/commands.js';
import type { SlotTable } from '../../scheduler/core/slot-table.js';
import { type VerifiedRequest, verify } from '../../scheduler/core/verify.js';
import { applyCommand, type DedupEntry, SchedulerState, specDigest } from '../../scheduler/state.js';
import { stateDigest } from '../../scheduler/state-machine.js';
import { createRng, type Rng } from '../../src/lib/prng.js';

const nodeIds = ['n0', 'n1', 'n2', 'n3', 'n4', 'n5', 'n6'];
const specs: SandboxSpec[] = [
  { tenant: 'ta', resources: { cpu: 500, memory: 1024, disk: 1000 } },
  { tenant: 'tb', resources: { cpu: 1500, memory: 2048, disk: 1000 } },
];

/** A command that moves the state on: nodes come, change and go; sandboxes are placed, pended and end. */
function churn(rng: Rng, state: SchedulerState, atMs: number, fresh: () => string): Command {
  const nodeId = rng.pick(nodeIds);
  switch (rng.int(0, 7)) {
    case 0: {
      const spec: NodeSpec = {
        id: nodeId,
        capacity: { cpu: rng.pick([2000, 4000]), memory: 8192, disk: 100_000 },
        labels: {},
        state: rng.chance(0.8) ? 'ready' : rng.pick(['draining', 'cordoned']),
      };
      return { type: 'node.register', atMs, spec };
    }
    case 1:
      return { type: 'node.state', atMs, nodeId, state: rng.pick(['ready', 'draining', 'down'] as const) };
    case 2:
      return { type: 'node.remove', atMs, nodeId };
    case 3: {
      const ids = [...state.sandboxes.keys()];
      if (ids.length === 0) return { type: 'node.heartbeat', atMs, nodeIds: [nodeId] };
      return { type: 'status', atMs, items: [{ sandboxId: rng.pick(ids), state: 'terminated' }] };
    }
    case 4: {
      const id = fresh();
      const spec = rng.pick(specs);
      const items = [
        {
          requestId: id,
          sandboxId: id,
          spec,
          specDigest: specDigest(spec),
          reason: 'x',
          deadlineMs: atMs + 99,
        },
      ];
      return { type: 'pend', atMs, items };
    }
    default: {
      const items = Array.from({ length: rng.int(1, 3) }, () => {
        const id = fresh();
        const spec = rng.pick(specs);
        return { requestId: id, sandboxId: id, spec, specDigest: specDigest(spec), nodeId, gpuDevices: [] };
      });
      return { type: 'place', atMs, items };
    }
  }
}

/** The verifier's node check as it was, from the node records: the reason a placement is retried, if any. */
function nodeReason(state: SchedulerState, nodeId: string): string | undefined {
  const node = state.nodes.get(nodeId);
  if (node !== undefined && node.spec.state === 'ready') return undefined;
  return `node ${nodeId} is ${node?.spec.state ?? 'gone'}`;
}

interface Counts {
  hinted: number;
  admitted: number;
  stale: number;
  twice: number;
  between: number;
  retried: number;
  committed: number;
}

function runSeed(seed: number, rounds: number, counts: Counts): void {
  const rng = createRng(seed);
  let state = SchedulerState.empty();
  let n = 0;
  const fresh = (): string => `q${seed}-${n++}`;
  let atMs = 0;
  // Dedup versions seen, each with ids absent from it: what admission could have answered back then.
  const history: { dedup: SlotTable<DedupEntry>; absent: string[] }[] = [];
  for (let round = 0; round < rounds; round++) {
    for (let k = rng.int(1, 4); k > 0; k--) {
      atMs += rng.int(0, 20);
      state = applyCommand(state, churn(rng, state, atMs, fresh), state.applied + 1).state;
    }
    const at = `seed ${seed}, round ${round}`;
    // A batch: new ids (admitted against this version, an older one, or not carried), ids committed
    // (placed or pending), and now and then one request batched twice.
    const batch: VerifiedRequest[] = [];
    const known = [...state.dedup.keys()];
    const absentNow: string[] = [];
    for (let i = rng.int(1, 6); i > 0; i--) {
      const spec = rng.pick(specs);
      const roll = rng.int(0, 9);
      if (roll < 5) {
        const id = fresh();
        absentNow.push(id);
        batch.push({ requestId: id, spec, admittedNewIn: state.dedup });
        counts.admitted += 1;
      } else if (roll < 7 && history.length > 0) {
        // Admitted against an older version: the id may have committed since (a pend or place used it).
        const old = rng.pick(history);
        const id = rng.pick(old.absent);
        batch.push({ requestId: id, spec, admittedNewIn: old.dedup });
        if (state.dedup.has(id)) counts.stale += 1;
      } else if (roll < 9 && known.length > 0) {
        batch.push({ requestId: rng.pick(known), spec });
      } else batch.push({ requestId: fresh(), spec });
    }
    if (rng.chance(0.15)) {
      batch.push(rng.pick(batch));
      counts.twice += 1;
    }
    history.push({ dedup: state.dedup, absent: absentNow.length > 0 ? absentNow : [fresh()] });
    if (history.length > 8) history.shift();
    // A plan on any node, ready or not, registered or not, with or without room: verify and apply decide.
    const placements = batch.map((r) => ({
      requestId: r.requestId,
      nodeId: rng.pick([...nodeIds, 'n-none']),
      gpuDevices: [],
      score: 0,
    }));
    const plan = { placements, rejections: [] } as unknown as Plan;

    const verified = verify(plan, batch, state);
    const plain = verify(
      plan,
      batch.map(({ requestId, spec }) => ({ requestId, spec })),
      state,
    );
    expect(verified.items, at).toEqual(plain.items);
    expect(
      verified.committed.map((r) => r.requestId),
      at,
    ).toEqual(plain.committed.map((r) => r.requestId));
    expect(verified.retry.map((r) => [r.req.requestId, r.reason])).toEqual(
      plain.retry.map((r) => [r.req.requestId, r.reason]),
    );
    // The node check from the index says what the node records say.
    for (const p of placements) {
      if (verified.committed.some((r) => r.requestId === p.requestId)) continue;
      const reason = nodeReason(state, p.nodeId);
      const retried = verified.retry.some((r) => r.req.requestId === p.requestId && r.reason === reason);
      const kept = verified.items.some((it) => it.requestId === p.requestId && it.nodeId === p.nodeId);
      expect(reason === undefined ? kept : retried, `${at}: ${p.requestId} on ${p.nodeId}`).toBe(true);
    }
    counts.retried += verified.retry.length;
    counts.committed += verified.committed.length;
    if (verified.items.length === 0) continue;

    // Sometimes another entry commits between the verifier and the place (the hint must then be ignored
    // if that entry changed the dedup table, and may stand if it did not).
    if (rng.chance(0.3)) {
      atMs += 1;
      // Half the time it records one of the verified ids itself (another leader's pend, say).
      const taken = rng.chance(0.5) ? rng.pick(verified.items) : undefined;
      const between: Command =
        taken === undefined
          ? churn(rng, state, atMs, fresh)
          : { type: 'pend', atMs, items: [{ ...taken, reason: 'elsewhere', deadlineMs: atMs + 99 }] };
      state = applyCommand(state, between, state.applied + 1).state;
      counts.between += 1;
    }
    const cmd: Command = { type: 'place', atMs, items: verified.items as PlaceItem[] };
    const withHint = applyCommand(state, cmd, state.applied + 1, verified.hint);
    const without = applyCommand(state, cmd, state.applied + 1);
    expect(withHint.result, at).toEqual(without.result);
    expect(withHint.events, at).toEqual(without.events);
    expect(stateDigest(withHint.state), at).toBe(stateDigest(without.state));
    if (verified.hint.dedup === state.dedup) counts.hinted += verified.hint.unseen.filter(Boolean).length;
    state = without.state;
  }
}

describe('place hint', () => {
  it.each([1, 2, 3, 4, 5, 6])(
    'place hint - verify and apply give the same answers with and without the leader-side dedup answers (seed %i)',
    (seed) => {
      const counts: Counts = {
        hinted: 0,
        admitted: 0,
        stale: 0,
        twice: 0,
        between: 0,
        retried: 0,
        committed: 0,
      };
      runSeed(seed, 300, counts);
      // The run exercised every path: hints used, stale admissions, twice-batched ids, entries in between,
      // placements dropped for their node, ids found committed.
      expect(counts.hinted, `seed ${seed} ${JSON.stringify(counts)}`).toBeGreaterThan(50);
      expect(counts.stale, `seed ${seed} ${JSON.stringify(counts)}`).toBeGreaterThan(5);
      expect(counts.twice, `seed ${seed} ${JSON.stringify(counts)}`).toBeGreaterThan(5);
      expect(counts.between, `seed ${seed} ${JSON.stringify(counts)}`).toBeGreaterThan(5);
      expect(counts.retried, `seed ${seed} ${JSON.stringify(counts)}`).toBeGreaterThan(5);
      expect(counts.committed, `seed ${seed} ${JSON.stringify(counts)}`).toBeGreaterThan(5);
    },
  );

  it('place hint - a hint for other items, or read from another table version, is ignored', () => {
    let state = SchedulerState.empty();
    const node: NodeSpec = {
      id: 'n0',
      capacity: { cpu: 4000, memory: 8192, disk: 100_000 },
      labels: {},
      state: 'ready',
    };
    state = applyCommand(state, { type: 'node.register', atMs: 0, spec: node }, 1).state;
    const spec = specs[0] as SandboxSpec;
    const item = (id: string): PlaceItem => ({
      requestId: id,
      sandboxId: id,
      spec,
      specDigest: specDigest(spec),
      nodeId: 'n0',
      gpuDevices: [],
    });
    const first = applyCommand(state, { type: 'place', atMs: 1, items: [item('a')] }, 2);
    const items = [item('a')];
    // A wrong hint (claims 'a' is unseen) read from the version before 'a' committed: ignored, so 'a' is a duplicate.
    const stale = { dedup: state.dedup, items, unseen: [true] };
    const got = applyCommand(first.state, { type: 'place', atMs: 2, items }, 3, stale);
    expect(got.result).toEqual({
      ok: true,
      items: [{ requestId: 'a', sandboxId: 'a', outcome: 'duplicate' }],
    });
    // Against the right version but for another items array: ignored too.
    const other = { dedup: first.state.dedup, items: [item('a')], unseen: [true] };
    const got2 = applyCommand(first.state, { type: 'place', atMs: 2, items }, 3, other);
    expect(got2.result).toEqual(got.result);
  });
});
