/**
 * The node lists (which sandboxes hold resources on each node) are one mutable index handed from version to
 * version (NodeLists in scheduler/core/state.ts). Every version must still answer for itself: an older version
 * read after its successor took the index, forks of one base, the base of a batch that was refused half-way
 * (its draft dropped), and a node failure or reconcile applied on any of them. Checked against a scan of each
 * version's own sandbox records, on seeded random histories that branch from random earlier versions.
 */
import { describe, expect, it } from 'vitest';
import type { Command } from '../../scheduler/commands.js';
import { holdsAllocation } from '../../scheduler/lifecycle.js';
import { applyCommand, applyCommands, type SchedulerState } from '../../scheduler/state.js';
import { createRng, type Rng } from '../../src/lib/prng.js';
import { node, placeCmd, run, spec } from './fixtures.js';

const nodeIds = ['n1', 'n2', 'n3', 'n4'];

/** What the lists of `state` must say: its allocated sandboxes by node, from its records. */
function scanned(state: SchedulerState): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const sb of state.sandboxes.values()) {
    if (!holdsAllocation(sb.state) || sb.nodeId === undefined) continue;
    out.set(sb.nodeId, [...(out.get(sb.nodeId) ?? []), sb.id]);
  }
  return out;
}

/** Checks every node's list of `state`; returns how many were not empty. */
function expectOwnLists(state: SchedulerState, label: string): number {
  const want = scanned(state);
  for (const id of nodeIds) {
    expect([...state.sandboxesOfNode(id)].sort(), `${label}, node ${id}`).toEqual(
      [...(want.get(id) ?? [])].sort(),
    );
  }
  return want.size;
}

/** A random command on `state`: new placements, ends of placed sandboxes, a node failing or coming back. */
function randomCommand(rng: Rng, state: SchedulerState, serial: { n: number }): Command {
  const atMs = state.applied + 1;
  const placed = [...state.sandboxes.values()].filter((sb) => sb.state === 'placed').map((sb) => sb.id);
  const roll = rng.next();
  if (roll < 0.45 || placed.length === 0) {
    const items = Array.from({ length: rng.int(1, 4) }, () => {
      serial.n += 1;
      return [`s${serial.n}`, spec('t1', 250), rng.pick(nodeIds)] as [
        string,
        ReturnType<typeof spec>,
        string,
      ];
    });
    return placeCmd(items, atMs);
  }
  if (roll < 0.8) {
    const ends = rng.shuffle([...placed]).slice(0, rng.int(1, 4));
    return {
      type: 'status',
      atMs,
      items: ends.map((sandboxId) => ({ sandboxId, state: 'terminated' as const })),
    };
  }
  const nodeId = rng.pick(nodeIds);
  if (state.nodes.get(nodeId)?.spec.state === 'down')
    return { type: 'node.reconcile', atMs, nodeId, running: [] };
  return { type: 'node.state', atMs, nodeId, state: 'down' };
}

describe('scheduler node lists', () => {
  for (const seed of [1, 2, 3, 4, 5, 6]) {
    it(`scheduler - node lists answer for every version: older ones, forks and a refused batch's base (SEED=${seed})`, () => {
      const rng = createRng(seed);
      const serial = { n: 0 };
      const start = run(
        nodeIds.map((id) => ({ type: 'node.register' as const, atMs: 1, spec: node(id) })),
      ).state;
      const versions: SchedulerState[] = [start];
      let refusedBatches = 0;
      let forks = 0;
      for (let step = 0; step < 120; step++) {
        // Mostly the newest version, often an older one: a fork, or a version whose index a successor took.
        const fromOld = rng.chance(0.3);
        const base = fromOld ? rng.pick(versions) : (versions[versions.length - 1] as SchedulerState);
        if (base !== versions[versions.length - 1]) forks += 1;
        let next: SchedulerState;
        if (rng.chance(0.25)) {
          // A batch in one draft; sometimes with a refused command last, so the draft that linked and
          // unlinked is dropped and the batch starts over one entry at a time from the untouched base.
          const cmds = [randomCommand(rng, base, serial)];
          const refuse = rng.chance(0.5);
          if (refuse) {
            cmds.push({ type: 'node.state', atMs: base.applied + 1, nodeId: 'no-such-node', state: 'down' });
            refusedBatches += 1;
          }
          next = applyCommands(base, cmds, base.applied + 1).state;
        } else {
          next = applyCommand(base, randomCommand(rng, base, serial), base.applied + 1).state;
        }
        versions.push(next);
        // Read a random version now and then (before later drafts take its index), and the base.
        if (rng.chance(0.3))
          expectOwnLists(rng.pick(versions), `SEED=${seed} step ${step}, a random version`);
        if (rng.chance(0.3)) expectOwnLists(base, `SEED=${seed} step ${step}, the base`);
      }
      let nonEmpty = 0;
      for (const [i, v] of versions.entries()) nonEmpty += expectOwnLists(v, `SEED=${seed} version ${i}`);
      // The paths above were taken, on lists with something in them (the test could not fail otherwise).
      expect(forks, `SEED=${seed}`).toBeGreaterThan(10);
      expect(refusedBatches, `SEED=${seed}`).toBeGreaterThan(3);
      expect(nonEmpty, `SEED=${seed}`).toBeGreaterThan(versions.length);
    });
  }
});
