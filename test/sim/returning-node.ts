/**
 * What a node that comes back says it holds, for the scheduler simulations: most of what the state lost
 * from it or still places on it (a crash may have taken some), sometimes a sandbox that lives elsewhere and
 * sometimes one the scheduler never saw. Read from a replica's possibly stale state, as a real node's report
 * would be built from its own, older view.
 */
import type { ReconcileEntry, SandboxSpec } from '../../scheduler/commands.js';
import type { ReconcileResult, SchedulerState } from '../../scheduler/state.js';
import type { Rng } from '../../src/lib/prng.js';

/** Share of the node's own sandboxes it still holds when it comes back. */
const keptShare = 0.9;

export function returningNodeReport(
  rng: Rng,
  state: SchedulerState,
  nodeId: string,
  elsewhere: readonly string[],
): ReconcileEntry[] {
  const ids = new Set<string>();
  for (const sb of state.sandboxes.values())
    if (sb.lostFrom?.nodeId === nodeId && rng.chance(keptShare)) ids.add(sb.id);
  for (const id of state.sandboxesOfNode(nodeId)) if (rng.chance(keptShare)) ids.add(id);
  if (elsewhere.length > 0 && rng.chance(0.3)) ids.add(rng.pick(elsewhere));
  if (rng.chance(0.2)) ids.add(`ghost-${rng.int(0, 1_000_000)}`);
  return [...ids].sort().map((sandboxId) => ({ sandboxId, state: rng.chance(0.8) ? 'running' : 'starting' }));
}

/** Outcomes of the reconciles a simulation committed, so it can show they were not vacuous. */
export interface ReconcileTally {
  calls: number;
  restored: number;
  lost: number;
  orphans: number;
}

/** Counts a reconcile's outcome into `tally`; a refused one counts nothing. */
export function tallied(reconciled: Promise<ReconcileResult>, tally: ReconcileTally): Promise<void> {
  return reconciled.then(
    (r) => {
      tally.calls += 1;
      tally.restored += r.restored.length;
      tally.lost += r.lost.length;
      tally.orphans += r.orphans.length;
    },
    () => {},
  );
}

/** A create as both simulations draw it: one of four sizes, one of five tenants, a fifth stateless. */
export function simCreateSpec(rng: Rng): SandboxSpec {
  const cpu = rng.pick([250, 500, 1000, 2000]);
  return {
    tenant: `t${rng.int(0, 5)}`,
    resources: { cpu, memory: cpu, disk: 100 },
    ...(rng.chance(0.2) ? { stateless: true } : {}),
  };
}
