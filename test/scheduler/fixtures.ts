/** Shared builders for the scheduler tests: nodes, specs and a state built by applying commands. */
import type { NodeSpec } from '../../placement/index.js';
import type { Command, SandboxSpec } from '../../scheduler/commands.js';
import { applyCommand, type CommandResult, SchedulerState, specDigest } from '../../scheduler/state.js';

export function node(id: string, cpu = 4000, memory = 8192, extra: Partial<NodeSpec> = {}): NodeSpec {
  return { id, capacity: { cpu, memory, disk: 100_000 }, labels: { zone: 'z-a' }, state: 'ready', ...extra };
}

export function spec(
  tenant = 't1',
  cpu = 1000,
  memory = 1024,
  extra: Partial<SandboxSpec> = {},
): SandboxSpec {
  return { tenant, resources: { cpu, memory, disk: 1000 }, ...extra };
}

/** Applies commands in order, returning the final state and every result. */
export function run(
  commands: readonly Command[],
  from = SchedulerState.empty(),
): { state: SchedulerState; results: CommandResult[] } {
  let state = from;
  const results: CommandResult[] = [];
  for (const cmd of commands) {
    const applied = applyCommand(state, cmd, state.applied + 1);
    state = applied.state;
    results.push(applied.result);
  }
  return { state, results };
}

export function placeCmd(items: readonly [string, SandboxSpec, string][], atMs = 1): Command {
  return {
    type: 'place',
    atMs,
    items: items.map(([id, s, nodeId]) => ({
      requestId: `r-${id}`,
      sandboxId: id,
      spec: s,
      specDigest: specDigest(s),
      nodeId,
      gpuDevices: [],
    })),
  };
}
