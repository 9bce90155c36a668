/**
 * SchedulerCore: what the scheduler decides, with nothing that waits — etcd's RawNode/Node split applied to
 * the scheduler. `apply` is the replicated state machine's transition; `admit` is the leader's decision for
 * a set of creates at a given time: which to place where (a `place` command), which wait for room (`pend`),
 * and which committed pending sandboxes have run out of time (`status` → failed), plus which requests are
 * refused or already committed. No promises, no timers, no clock: time is an argument, and the same inputs
 * give the same commands.
 *
 * The leader pipeline (pipeline/leader.ts) is the I/O shell around these same pieces (plan.ts, verify.ts,
 * admission.ts, state.ts): it batches callers, keeps up to `inFlightBatchesMax` plans in Raft at once and
 * answers promises. The capacity simulator runs this core alone in virtual time, without Raft:
 *
 *   const core = new SchedulerCore({ pendingTimeoutMs: 30_000 });
 *   core.apply({ type: 'node.register', atMs: 0, spec });
 *   const d = core.admit([{ requestId: 'r1', spec }], nowMs);
 *   for (const cmd of d.commands) core.apply(cmd);   // then read core.state
 */
import type { Strategy } from '../../placement/index.js';
import { TrellisError } from '../../src/lib/errors.js';
import { checkQuota, checkRequestId } from './admission.js';
import { type Command, type PendItem, type SandboxSpec, textLengthMax } from './commands.js';
import { type ErrorResult, errorResult } from './errors.js';
import { Planner } from './plan.js';
import { type Applied, applyCommand, SchedulerState, specDigest } from './state.js';
import type { Usage } from './types.js';
import { verify } from './verify.js';

export interface CoreOptions {
  /** How long a create may wait for room, from its first admission, before it fails. */
  readonly pendingTimeoutMs: number;
  readonly strategy?: Strategy;
}

/** One create offered to the core. */
export interface AdmitRequest {
  readonly requestId: string;
  readonly spec: SandboxSpec;
}

/** The leader's decisions for one `admit`: commands to commit in order, and the answers known already. */
export interface Decisions {
  /** At most one `place`, one `pend` and one `status` command, in that order; empty when nothing changes. */
  readonly commands: readonly Command[];
  /** Requests refused before planning (request id reused for another spec, quota), with the error. */
  readonly refused: readonly { readonly requestId: string; readonly error: ErrorResult }[];
  /** Requests whose id already committed (not pending): the sandbox it created. */
  readonly committed: readonly { readonly requestId: string; readonly sandboxId: string }[];
}

export class SchedulerCore {
  readonly #o: CoreOptions;
  #state: SchedulerState;

  constructor(options: CoreOptions, state: SchedulerState = SchedulerState.empty()) {
    this.#o = options;
    this.#state = state;
  }

  /** The committed state after every command applied so far. */
  get state(): SchedulerState {
    return this.#state;
  }

  /** Applies one command at the next log index and returns its result and events. */
  apply(cmd: Command): Applied {
    const applied = applyCommand(this.#state, cmd, this.#state.applied + 1);
    this.#state = applied.state;
    return applied;
  }

  /**
   * Decides, at `nowMs`, what to do with `requests` and with every committed pending sandbox: pending ones
   * past their deadline fail; the rest and the new requests are planned together on the committed index
   * (so freed room wakes the queue); what fits is placed, what does not is recorded pending with its reason.
   */
  admit(requests: readonly AdmitRequest[], nowMs: number): Decisions {
    const state = this.#state;
    const refused: { requestId: string; error: ErrorResult }[] = [];
    const committed: { requestId: string; sandboxId: string }[] = [];
    const batch: AdmitRequest[] = [];
    const inBatch = new Map<string, Usage>();
    const seen = new Set<string>();
    for (const req of requests) {
      if (seen.has(req.requestId)) continue;
      seen.add(req.requestId);
      try {
        const idem = checkRequestId(state, req.requestId, req.spec);
        if (idem.kind === 'committed') {
          if (state.sandbox(idem.sandboxId)?.state !== 'pending')
            committed.push({ requestId: req.requestId, sandboxId: idem.sandboxId });
          continue; // A pending one is planned below with the queue.
        }
        checkQuota(state, req.spec, inBatch.get(req.spec.tenant));
      } catch (err) {
        if (!(err instanceof TrellisError)) throw err;
        refused.push({ requestId: req.requestId, error: errorResult(err) });
        continue;
      }
      addUsage(inBatch, req.spec);
      batch.push(req);
    }
    const expired: { sandboxId: string; state: 'failed'; reason: string }[] = [];
    for (const sb of state.sandboxes.values()) {
      if (sb.state !== 'pending') continue;
      if ((sb.pendingUntilMs ?? 0) <= nowMs) {
        expired.push({
          sandboxId: sb.id,
          state: 'failed',
          reason: `no capacity before the deadline: ${sb.reason ?? 'none given'}`,
        });
      } else {
        batch.push({ requestId: sb.requestId, spec: sb.spec });
      }
    }
    return { commands: this.#commands(batch, expired, nowMs), refused, committed };
  }

  #commands(
    batch: readonly AdmitRequest[],
    expired: readonly { sandboxId: string; state: 'failed'; reason: string }[],
    nowMs: number,
  ): Command[] {
    const state = this.#state;
    const commands: Command[] = [];
    if (batch.length > 0) {
      const verified = verify(new Planner(this.#o.strategy).plan(batch, state.index), batch, state);
      if (verified.items.length > 0) commands.push({ type: 'place', atMs: nowMs, items: verified.items });
      const pend: PendItem[] = [];
      for (const { req, reason } of [...verified.unplaced, ...verified.retry]) {
        if (state.dedup.has(req.requestId)) continue; // Already recorded pending: it keeps its deadline.
        pend.push({
          requestId: req.requestId,
          sandboxId: req.requestId,
          spec: req.spec,
          specDigest: specDigest(req.spec),
          reason: reason.slice(0, textLengthMax),
          deadlineMs: nowMs + this.#o.pendingTimeoutMs,
        });
      }
      if (pend.length > 0) commands.push({ type: 'pend', atMs: nowMs, items: pend });
    }
    if (expired.length > 0) commands.push({ type: 'status', atMs: nowMs, items: [...expired] });
    return commands;
  }
}

function addUsage(m: Map<string, Usage>, spec: SandboxSpec): void {
  const u = m.get(spec.tenant) ?? { cpu: 0, memory: 0, disk: 0, sandboxes: 0 };
  m.set(spec.tenant, {
    cpu: u.cpu + spec.resources.cpu,
    memory: u.memory + spec.resources.memory,
    disk: u.disk + spec.resources.disk,
    sandboxes: u.sandboxes + 1,
  });
}
