/**
 * SchedulerCore: the whole scheduler with nothing that waits — the replicated state machine (`apply`) and the
 * leader's decisions (LeaderCore, leader.ts) on one state, with a log that commits every proposal at once
 * and in order. It is what the capacity simulator runs in virtual time, without Raft, and it runs the same
 * decision code as the leader pipeline (pipeline/leader.ts), which is the I/O shell around LeaderCore: the
 * two cannot drift. Time is an argument; no promises, no timers, no clock.
 *
 *   const core = new SchedulerCore({ pendingTimeoutMs: 30_000 });
 *   core.apply({ type: 'node.register', atMs: 0, spec });
 *   core.submit('r1', spec, nowMs);          // admitted: waits in the open batch (throws a typed refusal)
 *   core.flush(nowMs);                       // the batch closes: planned, verified, placed or recorded pending
 *   for (const a of core.takeAnswers()) …    // who was answered with what
 *   core.tick(laterMs);                      // deadlines: pending requests past theirs fail
 *
 * Freed room (a committed terminate, a node back) wakes pending requests into the open batch, as on the
 * leader; the caller closes it with `flush` when its batch window ends.
 */
import type { PlanOptions, Strategy } from '../../placement/index.js';
import type { Command, SandboxSpec } from './commands.js';
import { type Answer, LeaderCore, type LiveRequest, type Proposal, type Step } from './leader.js';
import {
  type Applied,
  type AppliedBatch,
  applyCommand,
  applyCommands,
  type PlaceHint,
  SchedulerState,
} from './state.js';

const noAnswers: readonly Answer[] = Object.freeze([]);
const noParked: readonly LiveRequest[] = Object.freeze([]);

export interface CoreOptions {
  /** How long a create may wait for room, from its admission, before it fails. */
  readonly pendingTimeoutMs: number;
  readonly strategy?: Strategy;
  /** Placement options beyond the strategy (the simulator's policy). */
  readonly plan?: Omit<PlanOptions, 'seed'>;
  /** A placement refused at commit is planned again at most this many times. Default 3, as the leader's. */
  readonly replanMax?: number;
}

export class SchedulerCore {
  #state: SchedulerState;
  readonly #leader: LeaderCore;
  /** The open batch: admitted and woken requests waiting for `flush`. */
  #batch: LiveRequest[] = [];
  /** Proposed and not yet applied, in order: the log, which commits everything at once. */
  readonly #log: Proposal[] = [];
  #draining = false;
  #nowMs = 0;
  #answers: Answer[] = [];
  #parked: LiveRequest[] = [];

  constructor(options: CoreOptions, state: SchedulerState = SchedulerState.empty()) {
    this.#state = state;
    this.#leader = new LeaderCore({
      pendingTimeoutMs: options.pendingTimeoutMs,
      replanMax: options.replanMax ?? 3,
      inFlightBatchesMax: 1,
      nodeDownAfterMs: 0,
      ...(options.strategy === undefined ? {} : { strategy: options.strategy }),
      ...(options.plan === undefined ? {} : { plan: options.plan }),
    });
    this.#run(this.#leader.start(state, 0));
  }

  /** The committed state after every command applied so far. */
  get state(): SchedulerState {
    return this.#state;
  }
  /** The leader's decisions (pending queue, counters). */
  get leader(): LeaderCore {
    return this.#leader;
  }
  /** Requests in the open batch. */
  get batchSize(): number {
    return this.#batch.length;
  }

  /**
   * Applies a command from outside the leader (a terminate, a node change, a status report) at the next log
   * index; the leader sees its events (freed room wakes pending requests into the open batch).
   */
  apply(cmd: Command): Applied {
    this.#nowMs = Math.max(this.#nowMs, cmd.atMs);
    const applied = this.#commit(cmd);
    this.#run(this.#leader.onCommitted(applied.events, this.#state, this.#nowMs));
    return applied;
  }

  /**
   * Applies commands from outside the leader as consecutive log entries in ONE draft (`applyCommands`: one
   * index builder and one published version for all of them; each command's result and events are those of
   * applying it alone). The leader hears each command's events in order after the whole batch, with the state
   * after it, as if the batch were one entry: for commands nothing decides on between them, such as a
   * cluster's nodes registered at the start (one draft instead of one per node).
   */
  applyAll(cmds: readonly Command[]): AppliedBatch {
    for (const cmd of cmds) this.#nowMs = Math.max(this.#nowMs, cmd.atMs);
    const batch = applyCommands(this.#state, cmds, this.#state.applied + 1);
    this.#state = batch.state;
    for (const a of batch.applied) this.#run(this.#leader.onCommitted(a.events, this.#state, this.#nowMs));
    return batch;
  }

  /**
   * Admits a create into the open batch ('queued'), joins one in progress ('joined'), or finds it committed
   * ('committed'). Throws the leader's typed refusals (ValidationError, RequestIdConflictError,
   * OverloadedError, QuotaExceededError), changing nothing.
   */
  submit(requestId: string, spec: SandboxSpec, nowMs: number): 'queued' | 'joined' | 'committed' {
    this.#nowMs = nowMs;
    const r = this.#leader.submit(this.#state, requestId, spec, nowMs);
    if (r.kind === 'queued') this.#batch.push(r.req);
    return r.kind;
  }

  /**
   * Closes the open batch at `nowMs`: its first `sizeMax` requests (all by default) are planned, and their
   * commands commit. The rest, and what the planning wakes or re-plans, stay open for the next flush.
   */
  flush(nowMs: number, sizeMax = Number.POSITIVE_INFINITY): void {
    this.#nowMs = nowMs;
    if (this.#batch.length === 0) return;
    let batch = this.#batch;
    if (batch.length > sizeMax) {
      this.#batch = batch.slice(sizeMax);
      batch = batch.slice(0, sizeMax);
    } else this.#batch = [];
    this.#run(this.#leader.onBatch(batch, this.#state, nowMs));
  }

  /** The leader's tick at `nowMs`: pending requests past their deadline fail (through a committed status). */
  tick(nowMs: number): void {
    this.#nowMs = nowMs;
    this.#run(this.#leader.tick(this.#state, nowMs));
  }

  /** The answers given since the last call, in order. */
  takeAnswers(): readonly Answer[] {
    // Called after every call into the core (the simulator: once per arrival), mostly with nothing to take.
    if (this.#answers.length === 0) return noAnswers;
    const out = this.#answers;
    this.#answers = [];
    return out;
  }

  /** The requests that began waiting for room since the last call (each until its `deadlineMs`). */
  takeParked(): readonly LiveRequest[] {
    if (this.#parked.length === 0) return noParked;
    const out = this.#parked;
    this.#parked = [];
    return out;
  }

  /** Applies one entry; a `place` the leader built here carries its verifier's hint (one dedup read per id). */
  #commit(cmd: Command, hint?: PlaceHint): Applied {
    const applied = applyCommand(this.#state, cmd, this.#state.applied + 1, hint);
    this.#state = applied.state;
    return applied;
  }

  #run(step: Step): void {
    for (const p of step.proposals) this.#log.push(p);
    for (const a of step.answers) this.#answers.push(a);
    for (const r of step.toBatch) this.#batch.push(r);
    for (const r of step.parked) this.#parked.push(r);
    if (this.#draining) return;
    // Commit in proposal order, each entry's events before its proposer hears the result, as a log does.
    this.#draining = true;
    try {
      for (let p = this.#log.shift(); p !== undefined; p = this.#log.shift()) {
        const applied = this.#commit(p.command, p.hint);
        this.#run(this.#leader.onCommitted(applied.events, this.#state, this.#nowMs));
        this.#run(this.#leader.onResult(p.ticket, applied.result, this.#state, this.#nowMs));
      }
    } finally {
      this.#draining = false;
    }
  }
}
