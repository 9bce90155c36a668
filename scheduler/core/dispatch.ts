/**
 * The dispatcher's pure core: which command each node must be sent, derived from committed state alone, as
 * a Kubernetes controller derives its actions from the objects it watches (level-triggered). A sandbox in a
 * transitional state owes its node one command until that node acknowledges it:
 *
 *   placed → create, terminating → terminate, suspending → suspend, resuming → resume.
 *
 * The node of a command is the sandbox's committed `nodeId`, never anything else, so a command can only go
 * to the node the sandbox is placed on. A new leader starts with nothing acknowledged and so resends every
 * transitional sandbox's command: the worker is idempotent on sandbox id (dispatch is at-least-once).
 *
 * Two moves skip the worker's transitional state (state.ts `terminateTarget`): `placed → terminated` (the
 * create may already have reached the node) and `suspended → terminated` (the node keeps the snapshot). Both
 * owe the node a `terminate` (a cleanup) for a sandbox no longer in the state. That debt is committed too
 * (`SchedulerState.cleanups`, until the node reports the sandbox terminated or reconciles), so a new leader
 * resends it like any other command rather than relying on the old leader having seen the change.
 *
 * No promises, no timers: time is a number the shell passes in, randomness (the retry jitter) a seeded `Rng`.
 * The shell (scheduler/dispatch.ts) feeds committed changes in (`observe`), takes what is due (`due`) and
 * reports each outcome (`settle`).
 */
import type { Resources } from '../../placement/index.js';
import { assert } from '../../src/lib/assert.js';
import type { Rng } from '../../src/lib/prng.js';
import type { Sandbox } from './types.js';

export const dispatchKinds = ['create', 'terminate', 'suspend', 'resume'] as const;
export type DispatchKind = (typeof dispatchKinds)[number];

/** One command for one node's worker. `resources` and `image` are set on `create` only. */
export interface NodeCommand {
  readonly kind: DispatchKind;
  readonly sandboxId: string;
  readonly nodeId: string;
  readonly resources?: Resources;
  readonly image?: string;
}

/**
 * How a sent command ended: acknowledged by the worker, or refused (with the worker's code and words). A
 * refusal with a code of `permanentRefusalCodes` counts toward `refusedAttemptsMax`; any other (busy, no
 * answer, timeout) is transient and retried with backoff for as long as the command is owed.
 */
export type DispatchOutcome =
  | { readonly ok: true }
  | { readonly ok: false; readonly code: string; readonly message?: string };

/**
 * Worker refusals that resending the same command cannot change: a malformed command or one for another
 * node (VALIDATION), a sandbox the worker does not hold or holds in a state the command cannot start from,
 * an operation its driver does not support, a driver failure, an unexpected error. Anything else — busy,
 * closed, unavailable, no answer — is transient.
 */
export const permanentRefusalCodes: ReadonlySet<string> = new Set([
  'VALIDATION',
  'SANDBOX_NOT_FOUND',
  'SANDBOX_STATE',
  'UNSUPPORTED',
  'DRIVER',
  'INTERNAL',
]);

/** A command the dispatcher stopped sending: its worker refused it permanently `refusedAttemptsMax` times. */
export interface GivenUp {
  readonly cmd: NodeCommand;
  /** The worker's reason, for the `failed` sandbox: code, words and how often it was refused. */
  readonly reason: string;
}

/** The longest worker message a given-up command's reason keeps (a status reason's bound is larger). */
export const givenUpMessageCharsMax = 512;

export interface DispatchOptions {
  /** Commands one batch to one node carries, at most. */
  readonly batchMax: number;
  /** First retry delay; each further retry doubles it up to `retryMaxMs`. */
  readonly retryBaseMs: number;
  readonly retryMaxMs: number;
  /** Batches in flight to one node at once, at most: a slow node does not pile up requests. */
  readonly inFlightPerNodeMax: number;
  /**
   * Permanent refusals of one command (spaced by the same backoff) before the dispatcher gives up on it;
   * a sandbox it gave up on goes `failed` with the worker's reason. Transient failures never count.
   */
  readonly refusedAttemptsMax: number;
}

export const dispatchDefaults: DispatchOptions = {
  batchMax: 256,
  retryBaseMs: 100,
  retryMaxMs: 5_000,
  inFlightPerNodeMax: 1,
  refusedAttemptsMax: 5,
};

/** The largest `batchMax` allowed: one batch must fit one worker request frame. */
export const dispatchBatchMax = 4_096;

/** The command a committed sandbox owes its node, or undefined when it owes none. */
export function wantedCommand(sb: Sandbox): NodeCommand | undefined {
  if (sb.nodeId === undefined) return undefined;
  const base = { sandboxId: sb.id, nodeId: sb.nodeId };
  switch (sb.state) {
    case 'placed':
      return { ...base, kind: 'create', resources: sb.spec.resources, image: sb.spec.image ?? 'default' };
    case 'terminating':
      return { ...base, kind: 'terminate' };
    case 'suspending':
      return { ...base, kind: 'suspend' };
    case 'resuming':
      return { ...base, kind: 'resume' };
    default:
      return undefined;
  }
}

/**
 * The terminate owed for a sandbox gone from the state while `cleanupNodeId` may hold a copy (committed in
 * `SchedulerState.cleanups`), or undefined when none is owed.
 */
export function cleanupCommand(
  sandboxId: string,
  cleanupNodeId: string | undefined,
): NodeCommand | undefined {
  return cleanupNodeId === undefined ? undefined : { kind: 'terminate', sandboxId, nodeId: cleanupNodeId };
}

/** A command still owed: when it may next be sent, how often it was tried, and whether it is out now. */
interface Owed {
  readonly cmd: NodeCommand;
  /** Distinguishes this command from a later one for the same sandbox, so a late outcome is ignored. */
  readonly generation: number;
  attempts: number;
  /** Permanent refusals so far (a subset of `attempts`). */
  refusals: number;
  notBeforeMs: number;
  inFlight: boolean;
}

/** A command handed out by `due`, to be passed back to `settle` with its outcome. */
export interface Ticket {
  readonly cmd: NodeCommand;
  readonly generation: number;
}

/** Counters for stats and metrics: commands handed out by kind, outcomes, retries. */
export interface DispatchCounts {
  sent: number;
  acked: number;
  retried: number;
  stale: number;
  givenUp: number;
}

export class DispatchCore {
  readonly #o: DispatchOptions;
  readonly #rng: Rng;
  /** What each sandbox owes its node, by sandbox id. */
  readonly #owed = new Map<string, Owed>();
  /** Acknowledged this term: sandbox id → key of the command acknowledged, so it is not sent again. */
  readonly #acked = new Map<string, string>();
  readonly #inFlightByNode = new Map<string, number>();
  #generation = 0;
  /** Commands given up since the shell last took them (`takeGivenUp`). */
  #givenUp: GivenUp[] = [];
  readonly counts: DispatchCounts = { sent: 0, acked: 0, retried: 0, stale: 0, givenUp: 0 };

  constructor(options: DispatchOptions, rng: Rng) {
    assert(options.batchMax >= 1 && options.batchMax <= dispatchBatchMax, 'batchMax in 1..dispatchBatchMax', {
      batchMax: options.batchMax,
    });
    assert(options.retryBaseMs >= 1 && options.retryMaxMs >= options.retryBaseMs, 'retry bounds ordered', {
      retryBaseMs: options.retryBaseMs,
      retryMaxMs: options.retryMaxMs,
    });
    assert(options.inFlightPerNodeMax >= 1, 'inFlightPerNodeMax >= 1', {
      inFlightPerNodeMax: options.inFlightPerNodeMax,
    });
    assert(options.refusedAttemptsMax >= 1, 'refusedAttemptsMax >= 1', {
      refusedAttemptsMax: options.refusedAttemptsMax,
    });
    this.#o = options;
    this.#rng = rng;
  }

  /** Commands owed and not yet acknowledged (in flight included). */
  get owedCount(): number {
    return this.#owed.size;
  }

  /** The command owed for `sandboxId`, if any (tests, diagnostics). */
  owed(sandboxId: string): NodeCommand | undefined {
    return this.#owed.get(sandboxId)?.cmd;
  }

  /**
   * Takes in one sandbox's committed state: the sandbox as it is now (undefined when it is gone from the
   * state) and the node owed a cleanup terminate for it (`SchedulerState.cleanups`), if any.
   */
  observe(
    sandboxId: string,
    after: Sandbox | undefined,
    cleanupNodeId: string | undefined,
    nowMs: number,
  ): void {
    assert(after === undefined || after.id === sandboxId, 'observe names the sandbox it is given', {
      sandboxId,
      after: after?.id,
    });
    const id = sandboxId;
    const next = after === undefined ? cleanupCommand(id, cleanupNodeId) : wantedCommand(after);
    if (next === undefined) {
      this.#forget(id);
      return;
    }
    const key = keyOf(next);
    if (this.#acked.get(id) === key) return;
    const current = this.#owed.get(id);
    if (current !== undefined && keyOf(current.cmd) === key) return;
    this.#forget(id);
    this.#owed.set(id, {
      cmd: next,
      generation: ++this.#generation,
      attempts: 0,
      refusals: 0,
      notBeforeMs: nowMs,
      inFlight: false,
    });
  }

  /**
   * The commands that may be sent now, grouped per node in batches of at most `batchMax`, at most
   * `inFlightPerNodeMax` batches per node in flight; each is marked in flight until `settle`.
   */
  due(nowMs: number): Map<string, Ticket[][]> {
    const out = new Map<string, Ticket[][]>();
    for (const [, owed] of this.#owed) {
      if (owed.inFlight || owed.notBeforeMs > nowMs) continue;
      const nodeId = owed.cmd.nodeId;
      const batches = out.get(nodeId) ?? [];
      let last = batches[batches.length - 1];
      if (last === undefined || last.length >= this.#o.batchMax) {
        if ((this.#inFlightByNode.get(nodeId) ?? 0) + batches.length >= this.#o.inFlightPerNodeMax) continue;
        last = [];
        batches.push(last);
        out.set(nodeId, batches);
      }
      last.push({ cmd: owed.cmd, generation: owed.generation });
      owed.inFlight = true;
      this.counts.sent++;
    }
    for (const [nodeId, batches] of out)
      this.#inFlightByNode.set(nodeId, (this.#inFlightByNode.get(nodeId) ?? 0) + batches.length);
    return out;
  }

  /** Records the outcome of one batch sent to `nodeId` (one outcome per ticket, in order). */
  settle(
    nodeId: string,
    tickets: readonly Ticket[],
    outcomes: readonly DispatchOutcome[],
    nowMs: number,
  ): void {
    assert(tickets.length === outcomes.length, 'one outcome per command', {
      tickets: tickets.length,
      outcomes: outcomes.length,
    });
    const inFlight = this.#inFlightByNode.get(nodeId) ?? 0;
    assert(inFlight >= 1, 'a settled batch was in flight', { nodeId, inFlight });
    if (inFlight === 1) this.#inFlightByNode.delete(nodeId);
    else this.#inFlightByNode.set(nodeId, inFlight - 1);
    tickets.forEach((t, i) => {
      const outcome = outcomes[i] as DispatchOutcome;
      const owed = this.#owed.get(t.cmd.sandboxId);
      // The sandbox moved on (or was forgotten) while the command was out: its outcome says nothing now.
      if (owed === undefined || owed.generation !== t.generation) {
        this.counts.stale++;
        return;
      }
      owed.inFlight = false;
      if (outcome.ok) {
        this.counts.acked++;
        this.#owed.delete(t.cmd.sandboxId);
        this.#acked.set(t.cmd.sandboxId, keyOf(owed.cmd));
        return;
      }
      owed.attempts++;
      if (permanentRefusalCodes.has(outcome.code) && ++owed.refusals >= this.#o.refusedAttemptsMax) {
        this.#giveUp(owed, outcome);
        return;
      }
      this.counts.retried++;
      owed.notBeforeMs = nowMs + this.#backoffMs(owed.attempts);
    });
  }

  /**
   * Stops sending a command refused permanently too often. It counts as answered for this term (a resync
   * does not bring it back); the shell commits the sandbox `failed` with the reason (`takeGivenUp`), after
   * which nothing is owed. A new leader tries again from zero if that commit did not happen.
   */
  #giveUp(owed: Owed, outcome: { readonly code: string; readonly message?: string }): void {
    const id = owed.cmd.sandboxId;
    this.#owed.delete(id);
    this.#acked.set(id, keyOf(owed.cmd));
    this.counts.givenUp++;
    const words = (outcome.message ?? '').slice(0, givenUpMessageCharsMax);
    const reason = `node ${owed.cmd.nodeId} refused ${owed.cmd.kind} ${owed.refusals} times: ${outcome.code}${words === '' ? '' : `: ${words}`}`;
    this.#givenUp.push({ cmd: owed.cmd, reason });
  }

  /** The commands given up since the last call, oldest first (the shell fails their sandboxes). */
  takeGivenUp(): GivenUp[] {
    const out = this.#givenUp;
    this.#givenUp = [];
    return out;
  }

  /** Every outcome of a batch that failed whole (timeout, no worker listening) is a retry. */
  settleAll(nodeId: string, tickets: readonly Ticket[], code: string, nowMs: number): void {
    this.settle(
      nodeId,
      tickets,
      tickets.map(() => ({ ok: false, code })),
      nowMs,
    );
  }

  /**
   * Forgets every command (owed or acknowledged) for a sandbox `committed` no longer names — neither in the
   * state nor owed a cleanup — such as a cleanup the node confirmed, which leaves no sandbox event behind.
   */
  retain(committed: (sandboxId: string) => boolean): void {
    for (const id of [...this.#owed.keys()]) if (!committed(id)) this.#forget(id);
    for (const id of [...this.#acked.keys()]) if (!committed(id)) this.#acked.delete(id);
  }

  /** The earliest time a command not in flight may be sent, or undefined when none waits. */
  nextDueMs(): number | undefined {
    let next: number | undefined;
    for (const owed of this.#owed.values()) {
      if (owed.inFlight) continue;
      if (next === undefined || owed.notBeforeMs < next) next = owed.notBeforeMs;
    }
    return next;
  }

  /** Exponential backoff with ±20% seeded jitter, so many retries to one node do not move in lockstep. */
  #backoffMs(attempts: number): number {
    const exp = Math.min(this.#o.retryMaxMs, this.#o.retryBaseMs * 2 ** Math.min(attempts - 1, 30));
    return Math.max(1, Math.round(exp * (0.8 + 0.4 * this.#rng.next())));
  }

  #forget(id: string): void {
    this.#owed.delete(id);
    this.#acked.delete(id);
  }
}

function keyOf(cmd: NodeCommand): string {
  return `${cmd.kind}@${cmd.nodeId}`;
}
