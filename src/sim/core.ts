/**
 * The seam between the simulator and the scheduler: everything the engine asks of the scheduler goes through
 * `SchedulerCore`, and `StateCore` answers it with the production code itself — admission's quota check
 * (scheduler/admission.ts), `planBatch` (placement/), the leader's verifier (scheduler/pipeline/verifier.ts)
 * and the replicated state machine's `applyCommand` (scheduler/state.ts), which re-checks capacity item by
 * item exactly as every replica does. Only Raft, the codec and the timers are left out: commands are applied
 * in order to one state, at the virtual time the engine gives.
 *
 * When the pure scheduler core lands, a second implementation of this interface is the one-file change.
 */
import { type ClusterIndex, type NodeSpec, type PlanOptions, planBatch } from '../../placement/index.js';
import { checkQuota, placementRequestOf } from '../../scheduler/admission.js';
import type { Command, PlaceItem, Quota, SandboxSpec } from '../../scheduler/commands.js';
import { QuotaExceededError } from '../../scheduler/errors.js';
import type { CreateRequest } from '../../scheduler/pipeline/request.js';
import { verify } from '../../scheduler/pipeline/verifier.js';
import {
  type Applied,
  applyCommand,
  type CommandResult,
  SchedulerState,
  specDigest,
} from '../../scheduler/state.js';
import type { Usage } from '../../scheduler/types.js';
import { assert } from '../lib/assert.js';
import { TrellisError } from '../lib/errors.js';

export interface CoreRequest {
  readonly id: string;
  readonly spec: SandboxSpec;
  /** Already committed `pending` (a woken retry): quota counted it when it was recorded. */
  readonly pending: boolean;
}

export interface GpuShareOut {
  readonly device: number;
  readonly milli: number;
}

export interface BatchOutcome {
  readonly placed: {
    readonly id: string;
    readonly nodeId: string;
    readonly gpuDevices: readonly GpuShareOut[];
  }[];
  /** Placement found no node (its rejection code and sentence), or apply refused the item. */
  readonly unplaced: { readonly id: string; readonly code: string; readonly message: string }[];
  /** Refused by admission for good (quota). */
  readonly refused: { readonly id: string; readonly code: string; readonly message: string }[];
  /** Wall-clock milliseconds spent in planBatch (reported apart, since it is not deterministic). */
  readonly planMs: number;
}

export interface SchedulerCore {
  /** The committed cluster index. */
  readonly index: ClusterIndex;
  registerNodes(specs: readonly NodeSpec[], atMs: number): void;
  setQuota(tenant: string, quota: Quota, atMs: number): void;
  /** Admits, plans and applies one batch of creates. */
  placeBatch(batch: readonly CoreRequest[], atMs: number, options: PlanOptions): BatchOutcome;
  /** Records requests that fit nowhere yet as pending sandboxes (the leader's `pend` entry). */
  pend(
    items: readonly { id: string; spec: SandboxSpec; reason: string; deadlineMs: number }[],
    atMs: number,
  ): void;
  /** Ends sandboxes: departures (`terminated`) and expired pending ones (`failed`). */
  finish(items: readonly { id: string; to: 'terminated' | 'failed'; reason?: string }[], atMs: number): void;
  /** Suspends running sandboxes (their allocation is given back); returns the node each snapshot stays on. */
  suspend(id: string, atMs: number): void;
  /** Resumes a suspended sandbox on its snapshot's node; false (nothing changed) when it does not fit. */
  resume(
    id: string,
    atMs: number,
    options: PlanOptions,
  ): { readonly nodeId: string; readonly gpuDevices: readonly GpuShareOut[] } | undefined;
  /** A node fails (`down`: its sandboxes are lost, returned) or drains. */
  setNodeState(nodeId: string, state: 'down' | 'draining', atMs: number): string[];
  /** A failed or drained node is ready again (a down one reconciles, reporting nothing left). */
  returnNode(nodeId: string, atMs: number): void;
}

/** The production state machine, driven directly. */
export class StateCore implements SchedulerCore {
  #state = SchedulerState.empty();
  #entry = 0;
  #batches = 0;
  /** Spec digests are a pure function of the spec; specs are shared objects in a workload. */
  readonly #digests = new WeakMap<SandboxSpec, string>();

  get index(): ClusterIndex {
    return this.#state.index;
  }
  get state(): SchedulerState {
    return this.#state;
  }

  #apply(cmd: Command): CommandResult {
    const applied: Applied = applyCommand(this.#state, cmd, ++this.#entry);
    this.#state = applied.state;
    return applied.result;
  }
  #applyOk(cmd: Command): CommandResult {
    const result = this.#apply(cmd);
    if (!result.ok)
      throw new CoreCommandError(`${cmd.type}: ${result.error.message}`, {
        details: { code: result.error.code },
      });
    return result;
  }
  #digest(spec: SandboxSpec): string {
    let d = this.#digests.get(spec);
    if (d === undefined) {
      d = specDigest(spec);
      this.#digests.set(spec, d);
    }
    return d;
  }

  registerNodes(specs: readonly NodeSpec[], atMs: number): void {
    for (const spec of specs) this.#applyOk({ type: 'node.register', atMs, spec: spec as never });
  }

  setQuota(tenant: string, quota: Quota, atMs: number): void {
    this.#applyOk({ type: 'quota.set', atMs, tenant, quota });
  }

  placeBatch(batch: readonly CoreRequest[], atMs: number, options: PlanOptions): BatchOutcome {
    const state = this.#state;
    const refused: { id: string; code: string; message: string }[] = [];
    const admitted: CreateRequest[] = [];
    // The leader counts admitted, uncommitted creates against quota too (leader.ts #inFlightUsage).
    const inFlight = new Map<string, Usage>();
    for (const r of batch) {
      if (!r.pending) {
        try {
          checkQuota(state, r.spec, inFlight.get(r.spec.tenant));
        } catch (err) {
          if (!(err instanceof QuotaExceededError)) throw err;
          refused.push({ id: r.id, code: 'quota', message: err.message });
          continue;
        }
        const u = inFlight.get(r.spec.tenant) ?? { cpu: 0, memory: 0, disk: 0, sandboxes: 0 };
        const res = r.spec.resources;
        inFlight.set(r.spec.tenant, {
          cpu: u.cpu + res.cpu,
          memory: u.memory + res.memory,
          disk: u.disk + res.disk,
          sandboxes: u.sandboxes + 1,
        });
      }
      admitted.push({
        requestId: r.id,
        spec: r.spec,
        deadlineMs: 0,
        replans: 0,
        pendProposed: r.pending,
        usageCounted: false,
        waiters: [],
      });
    }
    if (admitted.length === 0) return { placed: [], unplaced: [], refused, planMs: 0 };
    this.#batches += 1;
    const t0 = performance.now();
    // The production planner's seed scheme (scheduler/pipeline/planner.ts): the batch number.
    const plan = planBatch(
      state.index,
      admitted.map((r) => placementRequestOf(r.requestId, r.spec)),
      { ...options, seed: this.#batches },
    );
    const planMs = performance.now() - t0;
    const verified = verify(plan, admitted, state);
    const unplaced: { id: string; code: string; message: string }[] = [];
    const codes = new Map(plan.rejections.map((r) => [r.requestId, r.code] as const));
    for (const u of verified.unplaced) {
      unplaced.push({
        id: u.req.requestId,
        code: codes.get(u.req.requestId) ?? 'resources',
        message: u.reason,
      });
    }
    for (const r of verified.retry) unplaced.push({ id: r.req.requestId, code: 'state', message: r.reason });
    const placed: BatchOutcome['placed'][number][] = [];
    if (verified.items.length > 0) {
      const result = this.#applyOk({ type: 'place', atMs, items: verified.items });
      const byId = new Map<string, PlaceItem>(verified.items.map((i) => [i.requestId, i] as const));
      for (const item of result.ok ? (result.items ?? []) : []) {
        if (item.outcome === 'placed') {
          const p = byId.get(item.requestId);
          assert(p !== undefined, 'a placed item was proposed', { requestId: item.requestId });
          placed.push({ id: item.requestId, nodeId: item.nodeId, gpuDevices: p.gpuDevices });
        } else if (item.outcome === 'rejected') {
          unplaced.push({
            id: item.requestId,
            code: codeLabel(item.error.code),
            message: item.error.message,
          });
        }
      }
    }
    return { placed, unplaced, refused, planMs };
  }

  pend(
    items: readonly { id: string; spec: SandboxSpec; reason: string; deadlineMs: number }[],
    atMs: number,
  ): void {
    if (items.length === 0) return;
    this.#applyOk({
      type: 'pend',
      atMs,
      items: items.map((i) => ({
        requestId: i.id,
        sandboxId: i.id,
        spec: i.spec,
        specDigest: this.#digest(i.spec),
        reason: i.reason.slice(0, 256),
        deadlineMs: i.deadlineMs,
      })),
    });
  }

  finish(items: readonly { id: string; to: 'terminated' | 'failed'; reason?: string }[], atMs: number): void {
    if (items.length === 0) return;
    const out: { sandboxId: string; state: 'terminating' | 'terminated' | 'failed'; reason?: string }[] = [];
    for (const i of items) {
      const sb = this.#state.sandbox(i.id);
      if (sb === undefined) continue;
      // A running sandbox ends through `terminating`, as its node would report it.
      if (i.to === 'terminated' && (sb.state === 'running' || sb.state === 'resuming')) {
        out.push({ sandboxId: i.id, state: 'terminating' });
      }
      out.push({
        sandboxId: i.id,
        state: i.to,
        ...(i.reason === undefined ? {} : { reason: i.reason.slice(0, 256) }),
      });
    }
    const result = this.#applyOk({ type: 'status', atMs, items: out });
    assert(result.ok && result.itemErrors === undefined, 'every finish item applies', {
      errors: result.ok ? result.itemErrors?.slice(0, 3) : undefined,
    });
  }

  suspend(id: string, atMs: number): void {
    this.#applyOk({ type: 'status', atMs, items: [{ sandboxId: id, state: 'running' }] });
    this.#applyOk({ type: 'suspend', atMs, sandboxId: id });
    this.#applyOk({ type: 'status', atMs, items: [{ sandboxId: id, state: 'suspended' }] });
  }

  resume(
    id: string,
    atMs: number,
    options: PlanOptions,
  ): { nodeId: string; gpuDevices: readonly GpuShareOut[] } | undefined {
    const sb = this.#state.sandbox(id);
    assert(sb?.state === 'suspended' && sb.snapshotNodeId !== undefined, 'resume a suspended sandbox', {
      id,
    });
    const plan = planBatch(this.#state.index, [placementRequestOf(id, sb.spec, sb.snapshotNodeId)], {
      ...options,
      seed: this.#batches,
    });
    const p = plan.placements[0];
    if (p === undefined) return undefined;
    const gpuDevices = p.gpuDevices.map((g) => ({ ...g }));
    const result = this.#apply({ type: 'resume', atMs, sandboxId: id, nodeId: p.nodeId, gpuDevices });
    if (!result.ok) return undefined;
    this.#applyOk({ type: 'status', atMs, items: [{ sandboxId: id, state: 'running' }] });
    return { nodeId: p.nodeId, gpuDevices };
  }

  setNodeState(nodeId: string, state: 'down' | 'draining', atMs: number): string[] {
    const before = this.#state;
    const applied = applyCommand(before, { type: 'node.state', atMs, nodeId, state }, ++this.#entry);
    this.#state = applied.state;
    if (!applied.result.ok) throw new CoreCommandError(`node.state: ${applied.result.error.message}`);
    return applied.events.flatMap((e) => (e.kind === 'sandbox' && e.to === 'lost' ? [e.sandboxId] : []));
  }

  returnNode(nodeId: string, atMs: number): void {
    const rec = this.#state.nodes.get(nodeId);
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

function codeLabel(code: string): string {
  return code.toLowerCase().replaceAll('_', '-');
}
