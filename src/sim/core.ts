/**
 * The seam between the simulator and the scheduler: the engine drives the scheduler's own pure core
 * (`SchedulerCore`, scheduler/core/core.ts) — the leader's decisions (LeaderCore: admission, planner,
 * verifier, pending queue, wake-ups, deadlines) and the replicated state machine's `applyCommand`, the same
 * code the leader pipeline runs behind its promises and timers. Only Raft, the codec and the timers are left
 * out: every proposal commits at once, in order, at the virtual time the engine gives. What is the
 * simulator's own is the outside world: node registration, departures, suspends and resumes, node failures.
 */
import type { ClusterIndex, NodeSpec, PlanOptions } from '../../placement/index.js';
import { planBatch } from '../../placement/index.js';
import { placementRequestOf } from '../../scheduler/admission.js';
import type { Command, Quota, SandboxSpec } from '../../scheduler/commands.js';
import { SchedulerCore } from '../../scheduler/core/core.js';
import type { Answer, LeaderCore, LiveRequest } from '../../scheduler/core/leader.js';
import type { CommandResult, SchedulerState } from '../../scheduler/state.js';
import { assert } from '../lib/assert.js';
import { ConfigError, TrellisError } from '../lib/errors.js';

export interface GpuShareOut {
  readonly device: number;
  readonly milli: number;
}

/** The production scheduler core plus the outside world's commands, driven directly in virtual time. */
export class SimCore {
  readonly #core: SchedulerCore;
  readonly #plan: PlanOptions;
  #resumes = 0;

  constructor(pendingTimeoutMs: number, plan: PlanOptions) {
    const { seed: _seed, ...planOptions } = plan;
    this.#plan = plan;
    this.#core = new SchedulerCore({ pendingTimeoutMs, plan: planOptions });
  }

  get index(): ClusterIndex {
    return this.#core.state.index;
  }
  get state(): SchedulerState {
    return this.#core.state;
  }
  get leader(): LeaderCore {
    return this.#core.leader;
  }
  /** Requests admitted or woken and not yet planned. */
  get batchSize(): number {
    return this.#core.batchSize;
  }

  #applyOk(cmd: Command): CommandResult {
    const { result } = this.#core.apply(cmd);
    if (!result.ok)
      throw new CoreCommandError(`${cmd.type}: ${result.error.message}`, {
        details: { code: result.error.code },
      });
    return result;
  }

  /** Registers a cluster's nodes: one `node.register` entry each, applied in one draft (`applyAll`). */
  registerNodes(specs: readonly NodeSpec[], atMs: number): void {
    const cmds: Command[] = specs.map((spec) => ({ type: 'node.register', atMs, spec: spec as never }));
    const { applied } = this.#core.applyAll(cmds);
    for (const [i, { result }] of applied.entries()) {
      if (!result.ok)
        throw new CoreCommandError(`node.register ${specs[i]?.id}: ${result.error.message}`, {
          details: { code: result.error.code },
        });
    }
  }

  setQuota(tenant: string, quota: Quota, atMs: number): void {
    this.#applyOk({ type: 'quota.set', atMs, tenant, quota });
  }

  /**
   * Offers one create to the leader: undefined when it was admitted into the open batch, else the typed
   * refusal (quota, say) as a reason code and sentence.
   */
  submit(id: string, spec: SandboxSpec, atMs: number): { code: string; message: string } | undefined {
    let kind: string;
    try {
      kind = this.#core.submit(id, spec, atMs);
    } catch (err) {
      if (!(err instanceof TrellisError)) throw err;
      return { code: codeLabel(err.code), message: err.message };
    }
    // The leader answers a known request id as a retry: in a simulation it is the caller's duplicate.
    if (kind !== 'queued') throw new ConfigError(`arrival id ${id} is used twice`);
    return undefined;
  }

  /** Plans the first `sizeMax` requests of the open batch; their commands commit at once. */
  flush(atMs: number, sizeMax: number): void {
    this.#core.flush(atMs, sizeMax);
  }

  /** The leader's tick: pending requests past their deadline fail. */
  tick(atMs: number): void {
    this.#core.tick(atMs);
  }

  takeAnswers(): readonly Answer[] {
    return this.#core.takeAnswers();
  }

  takeParked(): readonly LiveRequest[] {
    return this.#core.takeParked();
  }

  /**
   * Ends sandboxes: departures and lost ones (`terminated`; a `running` one through `terminating`, as its
   * node would report it). Freed room wakes pending requests into the open batch.
   */
  finish(items: readonly { readonly id: string; readonly running: boolean }[], atMs: number): void {
    if (items.length === 0) return;
    const out: { sandboxId: string; state: 'terminating' | 'terminated' }[] = [];
    for (const i of items) {
      if (i.running) out.push({ sandboxId: i.id, state: 'terminating' });
      out.push({ sandboxId: i.id, state: 'terminated' });
    }
    const result = this.#applyOk({ type: 'status', atMs, items: out });
    assert(result.ok && result.itemErrors === undefined, 'every finish item applies', {
      errors: result.ok ? result.itemErrors?.slice(0, 3) : undefined,
    });
  }

  /** Suspends a placed sandbox (its allocation is given back; its snapshot stays on the node). */
  suspend(id: string, atMs: number): void {
    this.#applyOk({ type: 'status', atMs, items: [{ sandboxId: id, state: 'running' }] });
    this.#applyOk({ type: 'suspend', atMs, sandboxId: id });
    this.#applyOk({ type: 'status', atMs, items: [{ sandboxId: id, state: 'suspended' }] });
  }

  /** Resumes a suspended sandbox on its snapshot's node; undefined (nothing changed) when it does not fit. */
  resume(id: string, atMs: number): { nodeId: string; gpuDevices: readonly GpuShareOut[] } | undefined {
    const sb = this.#core.state.sandbox(id);
    assert(sb?.state === 'suspended' && sb.snapshotNodeId !== undefined, 'resume a suspended sandbox', {
      id,
    });
    this.#resumes += 1;
    const plan = planBatch(this.index, [placementRequestOf(id, sb.spec, sb.snapshotNodeId)], {
      ...this.#plan,
      seed: this.#resumes,
    });
    const p = plan.placements[0];
    if (p === undefined) return undefined;
    const gpuDevices = p.gpuDevices.map((g) => ({ ...g }));
    const { result } = this.#core.apply({
      type: 'resume',
      atMs,
      sandboxId: id,
      nodeId: p.nodeId,
      gpuDevices,
    });
    if (!result.ok) return undefined;
    this.#applyOk({ type: 'status', atMs, items: [{ sandboxId: id, state: 'running' }] });
    return { nodeId: p.nodeId, gpuDevices };
  }

  /** A node fails (`down`: its sandboxes are lost, returned) or drains. */
  setNodeState(nodeId: string, state: 'down' | 'draining', atMs: number): string[] {
    const applied = this.#core.apply({ type: 'node.state', atMs, nodeId, state });
    if (!applied.result.ok) throw new CoreCommandError(`node.state: ${applied.result.error.message}`);
    return applied.events.flatMap((e) => (e.kind === 'sandbox' && e.to === 'lost' ? [e.sandboxId] : []));
  }

  /** A failed or drained node is ready again (a down one reconciles, reporting nothing left). */
  returnNode(nodeId: string, atMs: number): void {
    const rec = this.#core.state.nodes.get(nodeId);
    if (rec === undefined || rec.spec.state === 'ready') return;
    if (rec.spec.state === 'down') this.#applyOk({ type: 'node.reconcile', atMs, nodeId, running: [] });
    else this.#applyOk({ type: 'node.state', atMs, nodeId, state: 'ready' });
  }
}

/** A command the simulator built was refused by the state machine: a simulator bug, reported with its reason. */
export class CoreCommandError extends TrellisError {
  override readonly name = 'CoreCommandError';
  readonly code = 'SIM_CORE';
}

/** An error code as a report's reason label: `SCHED_QUOTA_EXCEEDED` → `quota`, others lower-kebab. */
export function codeLabel(code: string): string {
  if (code === 'SCHED_QUOTA_EXCEEDED') return 'quota';
  return code.toLowerCase().replaceAll('_', '-');
}

/**
 * The reason label of a no-capacity answer: placement's rejection code (`resources: …` → `resources`), an
 * error code from apply (`PLACEMENT_OVER_COMMIT: …` → `placement-over-commit`), or `state` when the node
 * the plan chose is no longer ready.
 */
export function reasonLabel(reason: string): string {
  const m = /^([A-Za-z_-]+):/.exec(reason);
  if (m === null) return 'state';
  const code = m[1] as string;
  return code === code.toUpperCase() ? codeLabel(code) : code;
}
