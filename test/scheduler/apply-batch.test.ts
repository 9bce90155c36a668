/**
 * applyCommands (several entries in one draft) against applyCommand one entry at a time, on seeded random
 * command streams that include refusals (unknown ids, illegal transitions, busy nodes, duplicate and
 * conflicting request ids), rejected place items (over-commit, not ready) and node churn. Every command's
 * result and events, and the state at every batch boundary (digest and snapshot bytes), must be equal.
 */
import { describe, expect, it } from 'vitest';
import type { NodeSpec } from '../../placement/index.js';
import type { Command, SandboxSpec } from '../../scheduler/commands.js';
import { nodeHeldStates, sandboxStates } from '../../scheduler/core/lifecycle.js';
import {
  type AppliedCommand,
  applyCommand,
  applyCommands,
  SchedulerState,
  specDigest,
} from '../../scheduler/state.js';
import { encodeSnapshot, stateDigest } from '../../scheduler/state-machine.js';
import { createRng, type Rng } from '../../src/lib/prng.js';

const nodeIds = ['n0', 'n1', 'n2', 'n3', 'n4', 'n5'];
const sandboxIds = Array.from({ length: 24 }, (_, i) => `s${i}`);
const tenants = ['ta', 'tb'];

function nodeSpec(rng: Rng, id: string): NodeSpec {
  return {
    id,
    capacity: { cpu: rng.pick([2000, 4000]), memory: 8192, disk: 100_000 },
    labels: { zone: rng.pick(['z-a', 'z-b']) },
    state: rng.chance(0.85) ? 'ready' : rng.pick(['draining', 'cordoned']),
  };
}

function sandboxSpec(rng: Rng): SandboxSpec {
  const s: SandboxSpec = {
    tenant: rng.pick(tenants),
    resources: { cpu: rng.pick([500, 1000, 1500]), memory: 1024, disk: 1000 },
  };
  if (rng.chance(0.3)) s.stateless = true;
  if (rng.chance(0.2)) s.resumePolicy = rng.pick(['wait', 'move', 'fail'] as const);
  return s;
}

/** A request id: mostly fresh, sometimes one used before (a duplicate or a conflict). */
function requestId(rng: Rng, used: string[]): string | undefined {
  if (rng.chance(0.4)) return undefined;
  if (used.length > 0 && rng.chance(0.25)) return rng.pick(used);
  const id = `q${used.length}`;
  used.push(id);
  return id;
}

function randomCommand(rng: Rng, atMs: number, used: string[]): Command {
  const rid = requestId(rng, used);
  const withRid = <T extends object>(c: T): T => (rid === undefined ? c : { ...c, requestId: rid });
  const sandboxId = rng.pick(sandboxIds);
  const nodeId = rng.pick(nodeIds);
  switch (rng.int(0, 14)) {
    case 0:
    case 1:
      return withRid({ type: 'node.register', atMs, spec: nodeSpec(rng, nodeId) }) as Command;
    case 2:
      return withRid({
        type: 'node.state',
        atMs,
        nodeId,
        state: rng.pick(['ready', 'ready', 'draining', 'cordoned', 'down'] as const),
      }) as Command;
    case 3:
      return rng.chance(0.5)
        ? (withRid({ type: 'node.remove', atMs, nodeId }) as Command)
        : { type: 'node.heartbeat', atMs, nodeIds: [nodeId] };
    case 4: {
      const running = [...new Set(Array.from({ length: rng.int(0, 4) }, () => rng.pick(sandboxIds)))].map(
        (id) => ({ sandboxId: id, state: rng.pick(nodeHeldStates) }),
      );
      return withRid({ type: 'node.reconcile', atMs, nodeId, running }) as Command;
    }
    case 5:
    case 6:
    case 7: {
      const items = Array.from({ length: rng.int(1, 5) }, () => {
        const spec = sandboxSpec(rng);
        const id = rng.pick(sandboxIds);
        return {
          requestId: rng.chance(0.8) ? `r-${id}` : `r-${rng.pick(sandboxIds)}`,
          sandboxId: id,
          spec,
          specDigest: specDigest(spec),
          nodeId: rng.pick(nodeIds),
          gpuDevices: [],
        };
      });
      return { type: 'place', atMs, items };
    }
    case 8: {
      const spec = sandboxSpec(rng);
      const items = [
        {
          requestId: `r-${sandboxId}`,
          sandboxId,
          spec,
          specDigest: specDigest(spec),
          reason: 'no room',
          deadlineMs: atMs + 1000,
        },
      ];
      return { type: 'pend', atMs, items };
    }
    case 9:
    case 10: {
      const items = Array.from({ length: rng.int(1, 4) }, () => {
        const item: { sandboxId: string; state: (typeof sandboxStates)[number]; nodeId?: string } = {
          sandboxId: rng.pick(sandboxIds),
          state: rng.pick(sandboxStates),
        };
        if (rng.chance(0.3)) item.nodeId = rng.pick(nodeIds);
        return item;
      });
      return { type: 'status', atMs, items };
    }
    case 11:
      return withRid({ type: rng.pick(['terminate', 'suspend'] as const), atMs, sandboxId }) as Command;
    case 12:
      return withRid(
        rng.chance(0.7)
          ? { type: 'resume', atMs, sandboxId, nodeId, gpuDevices: [] }
          : { type: 'resume', atMs, sandboxId },
      ) as Command;
    default:
      return rng.chance(0.5)
        ? (withRid({
            type: 'quota.set',
            atMs,
            tenant: rng.pick(tenants),
            quota: { cpu: rng.pick([3000, 8000, 100_000]), sandboxes: rng.int(2, 20) },
          }) as Command)
        : { type: 'replace', atMs, items: [{ sandboxId, nodeId, gpuDevices: [] }] };
  }
}

/** A stream: commands at non-decreasing times, long enough that dedup eviction by time happens too. */
function randomStream(seed: number, length: number): Command[] {
  const rng = createRng(seed);
  const used: string[] = [];
  const out: Command[] = [];
  let atMs = 0;
  for (let i = 0; i < length; i++) {
    atMs += rng.chance(0.02) ? 25 * 60 * 60 * 1000 : rng.int(0, 50);
    out.push(randomCommand(rng, atMs, used));
  }
  return out;
}

describe('applyCommands', () => {
  const seeds = [1, 2, 3, 4, 5, 6, 7, 8];
  it.each(seeds)('applyCommands - equals one entry at a time on a random stream (seed %i)', (seed) => {
    const cmds = randomStream(seed, 400);
    const split = createRng(seed + 1000);
    let one = SchedulerState.empty();
    let batched = SchedulerState.empty();
    let refusals = 0;
    let wholeBatches = 0;
    let placed = 0;
    for (let i = 0; i < cmds.length; ) {
      const n = Math.min(cmds.length - i, split.int(1, 9));
      const part = cmds.slice(i, i + n);
      const before = batched;
      const digestBefore = stateDigest(before);
      const expected: AppliedCommand[] = [];
      for (let k = 0; k < n; k++) {
        const a = applyCommand(one, part[k] as Command, one.applied + 1);
        one = a.state;
        expected.push({ result: a.result, events: a.events });
      }
      const got = applyCommands(batched, part, batched.applied + 1);
      batched = got.state;
      const refused = expected.filter((e) => !e.result.ok).length;
      refusals += refused;
      for (const e of expected)
        if (e.result.ok) placed += (e.result.items ?? []).filter((r) => r.outcome === 'placed').length;
      if (refused === 0 && n > 1) wholeBatches += 1;
      const at = `seed ${seed}, commands ${i}..${i + n - 1}`;
      expect(got.applied, at).toEqual(expected);
      expect(batched.applied, at).toBe(one.applied);
      expect(stateDigest(batched), at).toBe(stateDigest(one));
      expect(Buffer.from(encodeSnapshot(batched)).equals(Buffer.from(encodeSnapshot(one))), at).toBe(true);
      // The version the batch started from is untouched: a reader holding it still sees it.
      expect(stateDigest(before), at).toBe(digestBefore);
      i += n;
    }
    // The stream exercised both paths: refusals (the batch starts over one at a time) and whole batches.
    expect(refusals, `seed ${seed}`).toBeGreaterThan(10);
    expect(wholeBatches, `seed ${seed}`).toBeGreaterThan(10);
    // And it did something: sandboxes were placed.
    expect(placed, `seed ${seed}`).toBeGreaterThan(10);
  });

  it('applyCommands - an empty batch returns the state unchanged', () => {
    const state = SchedulerState.empty();
    const got = applyCommands(state, [], 1);
    expect(got.state).toBe(state);
    expect(got.applied).toEqual([]);
  });

  it('applyCommands - refuses an entry index at or below the applied one', () => {
    const cmd: Command = { type: 'node.heartbeat', atMs: 0, nodeIds: [] };
    const state = applyCommand(SchedulerState.empty(), cmd, 1).state;
    expect(() => applyCommands(state, [cmd], 1)).toThrow(/applied in order/);
  });
});
