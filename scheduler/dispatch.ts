/**
 * The dispatcher's shell: runs on the leader, one per leadership term (the replica starts it when it leads
 * and stops it when it no longer does). It feeds the pure core (core/dispatch.ts) the committed sandboxes —
 * all of them when it starts, then every change the state machine applies — and sends what the core says is
 * due through an injected `NodeCommandSink`, one batch per node, retrying with backoff until the worker
 * acknowledges. A new leader's dispatcher starts with nothing acknowledged, so it resends every command not
 * yet past its transitional state; workers are idempotent on sandbox id.
 *
 * It also resyncs from the whole committed state every `resyncMs`: a snapshot restore replaces the state
 * without apply events, and a level-triggered controller must not depend on seeing every edge.
 */

import type { TrellisMetrics } from '../src/lib/metrics.js';
import type { Rng } from '../src/lib/prng.js';
import type { Cancel, Timers } from '../src/lib/timers.js';
import type { Command } from './commands.js';
import {
  DispatchCore,
  type DispatchOptions,
  type DispatchOutcome,
  dispatchDefaults,
  type NodeCommand,
  type Ticket,
  wantedCommand,
} from './core/dispatch.js';
import type { SchedulerStateMachine } from './state-machine.js';

export type { DispatchKind, DispatchOutcome, NodeCommand } from './core/dispatch.js';

/**
 * Where the dispatcher's commands go: one batch for one node. Resolves with one outcome per command, in
 * order (an outcome `ok: false` is retried later); rejects when the batch as a whole got no answer (no
 * worker listening, timeout), and then every command in it is retried.
 */
export interface NodeCommandSink {
  send(nodeId: string, commands: readonly NodeCommand[]): Promise<readonly DispatchOutcome[]>;
  /**
   * Runs a command in a sandbox on `nodeId` and resolves with its outcome (not a Raft entry: the caller has
   * checked the committed state first). Absent when this sink cannot reach workers for exec.
   */
  exec?(nodeId: string, sandboxId: string, request: NodeExecRequest): Promise<NodeExecResult>;
}

/** What `Scheduler.exec` asks a node to run (the worker validates and bounds it again). */
export interface NodeExecRequest {
  readonly command: readonly string[];
  readonly stdin?: Uint8Array;
  readonly timeoutMs: number;
  /** Per stream; output beyond it is dropped and the result says it was truncated. */
  readonly outputBytesMax: number;
  /** Names the exec: the worker answers a retry with the same id with the first run's result. */
  readonly requestId?: string;
}

/** A command's outcome in a sandbox (src/worker/driver.ts `ExecResult`). */
export interface NodeExecResult {
  /** The exit code; null when a signal ended it (`signal` says which). */
  readonly exitCode: number | null;
  readonly signal: string | null;
  readonly stdout: Uint8Array;
  readonly stderr: Uint8Array;
  readonly stdoutTruncated: boolean;
  readonly stderrTruncated: boolean;
  readonly timedOut: boolean;
}

export interface DispatcherOptions extends Partial<DispatchOptions> {
  readonly sink: NodeCommandSink;
  /** Clock and timers (src/lib/timers.ts): real time in production, virtual time in simulations. */
  readonly timers: Timers;
  /** Seeds the retry jitter. */
  readonly rng: Rng;
  /** Full resync from committed state this often. Default 5,000 ms. */
  readonly resyncMs?: number;
  /**
   * Proposes a command through Raft (the replica's pipeline): how a sandbox whose command the worker kept
   * refusing goes `failed` with the worker's reason. Without it such a command is only no longer sent.
   */
  readonly propose?: (cmd: Command) => Promise<unknown>;
  readonly metrics?: TrellisMetrics;
}

export const dispatcherResyncMsDefault = 5_000;

export class Dispatcher {
  readonly #machine: SchedulerStateMachine;
  readonly #o: DispatcherOptions;
  readonly core: DispatchCore;
  #stopped = false;
  #wake: Cancel | undefined;
  #wakeAtMs = Number.POSITIVE_INFINITY;
  readonly #unsubscribe: () => void;
  readonly #cancelResync: Cancel;

  constructor(machine: SchedulerStateMachine, options: DispatcherOptions) {
    this.#machine = machine;
    this.#o = options;
    this.core = new DispatchCore(
      {
        batchMax: options.batchMax ?? dispatchDefaults.batchMax,
        retryBaseMs: options.retryBaseMs ?? dispatchDefaults.retryBaseMs,
        retryMaxMs: options.retryMaxMs ?? dispatchDefaults.retryMaxMs,
        inFlightPerNodeMax: options.inFlightPerNodeMax ?? dispatchDefaults.inFlightPerNodeMax,
        refusedAttemptsMax: options.refusedAttemptsMax ?? dispatchDefaults.refusedAttemptsMax,
      },
      options.rng,
    );
    this.#resync();
    this.#unsubscribe = machine.onApply((applied) => {
      const state = applied.state;
      const now = this.#o.timers.now();
      for (const e of applied.events) {
        if (e.kind !== 'sandbox') continue;
        this.core.observe(e.sandboxId, state.sandbox(e.sandboxId), state.cleanups.get(e.sandboxId), now);
      }
      this.#schedule(now);
    });
    this.#cancelResync = options.timers.setInterval(
      () => this.#resync(),
      options.resyncMs ?? dispatcherResyncMsDefault,
    );
  }

  /**
   * Feeds the core every committed sandbox and every cleanup owed (a new term, or a periodic resync), and
   * drops what committed state no longer names.
   */
  #resync(): void {
    if (this.#stopped) return;
    const state = this.#machine.state;
    const now = this.#o.timers.now();
    this.core.retain((id) => state.sandboxes.has(id) || state.cleanups.has(id));
    for (const sb of state.sandboxes.values()) this.core.observe(sb.id, sb, undefined, now);
    for (const [id, nodeId] of state.cleanups) this.core.observe(id, undefined, nodeId, now);
    this.#schedule(now);
  }

  /** Arms one timer for the earliest due command (at once when something is due now). */
  #schedule(nowMs: number): void {
    if (this.#stopped) return;
    const next = this.core.nextDueMs();
    if (next === undefined || next >= this.#wakeAtMs) return;
    this.#wake?.();
    this.#wakeAtMs = next;
    this.#wake = this.#o.timers.setTimeout(() => this.#pump(), Math.max(0, next - nowMs));
  }

  #pump(): void {
    this.#wake = undefined;
    this.#wakeAtMs = Number.POSITIVE_INFINITY;
    if (this.#stopped) return;
    const now = this.#o.timers.now();
    for (const [nodeId, batches] of this.core.due(now)) for (const b of batches) this.#send(nodeId, b);
    this.#schedule(now);
  }

  #send(nodeId: string, tickets: Ticket[]): void {
    const m = this.#o.metrics;
    const cmds = tickets.map((t) => t.cmd);
    const settle = (outcomes: readonly DispatchOutcome[] | undefined, code: string): void => {
      if (this.#stopped) return;
      const now = this.#o.timers.now();
      if (outcomes === undefined || outcomes.length !== tickets.length) {
        this.core.settleAll(nodeId, tickets, code, now);
        m?.dispatchRetries.inc({}, tickets.length);
        for (const c of cmds) m?.dispatchCommands.inc({ kind: c.kind, outcome: code });
      } else {
        this.core.settle(nodeId, tickets, outcomes, now);
        outcomes.forEach((o, i) => {
          const kind = (cmds[i] as NodeCommand).kind;
          m?.dispatchCommands.inc({ kind, outcome: o.ok ? 'ok' : o.code });
          if (!o.ok) m?.dispatchRetries.inc();
        });
      }
      this.#failGivenUp(now);
      this.#schedule(now);
    };
    this.#o.sink.send(nodeId, cmds).then(
      (outcomes) => settle(outcomes, 'MALFORMED_REPLY'),
      (err: unknown) => settle(undefined, codeOf(err)),
    );
  }

  /**
   * Commits `failed`, with the worker's reason, for each sandbox whose command the core gave up on and
   * that still owes that command (a cleanup's sandbox is gone: nothing to commit). A failed proposal is
   * only logged by its absence: the next leader starts counting afresh.
   */
  #failGivenUp(nowMs: number): void {
    const givenUp = this.core.takeGivenUp();
    if (givenUp.length === 0 || this.#o.propose === undefined) return;
    const state = this.#machine.state;
    const items = givenUp.flatMap(({ cmd, reason }) => {
      const sb = state.sandbox(cmd.sandboxId);
      const wanted = sb === undefined ? undefined : wantedCommand(sb);
      if (wanted === undefined || wanted.kind !== cmd.kind || wanted.nodeId !== cmd.nodeId) return [];
      return [{ sandboxId: cmd.sandboxId, state: 'failed' as const, reason, nodeId: cmd.nodeId }];
    });
    if (items.length === 0) return;
    this.#o.metrics?.dispatchCommands.inc({ kind: 'fail', outcome: 'given_up' }, items.length);
    this.#o.propose({ type: 'status', atMs: nowMs, items }).catch(() => undefined);
  }

  /** Stops sending; outcomes of batches still out are ignored. */
  stop(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#unsubscribe();
    this.#cancelResync();
    this.#wake?.();
    this.#wake = undefined;
  }
}

function codeOf(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^[A-Z_]{1,32}$/.test(code) ? code : 'SEND_FAILED';
}
