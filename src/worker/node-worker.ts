/**
 * The node worker's core, transport-agnostic: it takes commands for one node, drives a `Driver`, and
 * reports sandbox status in batches. A transport (the NATS binding, or a test calling `handle` directly)
 * sits outside it.
 *
 * - Dispatch is at-least-once, so every command is idempotent on the sandbox id: a second create is the
 *   same VM (its current status is reported again), terminate of an unknown or terminated id succeeds,
 *   suspend of a suspended one and resume of a running one do nothing. A terminated id is remembered (a
 *   bounded tombstone set) so a late duplicate create cannot bring it back.
 * - Operations on one sandbox run in order (a per-sandbox chain); different sandboxes run in parallel.
 * - Boots (create and resume) are bounded: `bootsConcurrentMax` at once, `bootQueueMax` waiting; a create
 *   beyond that is refused with WorkerBusyError before anything is recorded, so the dispatcher retries it.
 * - A driver failure turns the sandbox `failed`, with the driver's reason in the status report.
 * - `report()` says what the node really runs (from the driver, so it survives a worker restart), for the
 *   scheduler's reconcile; `stopOrphans` ends what reconcile says is not ours.
 */
import type { ReconcileEntry } from '../../scheduler/commands.js';
import { assert, unreachable } from '../lib/assert.js';
import { TrellisError } from '../lib/errors.js';
import type { NodeId, SandboxId } from '../lib/ids.js';
import { realTimers, type Timers } from '../lib/timers.js';
import { parseWith } from '../lib/validate.js';
import { type Driver, type ExecResult, type MachineSpec, parseExecRequest } from './driver.js';
import {
  DriverError,
  SandboxNotFoundError,
  SandboxStateError,
  UnsupportedOperationError,
  WorkerBusyError,
  WorkerClosedError,
} from './errors.js';
import { ExecCache } from './exec-cache.js';
import { bootsConcurrentLimit, workerDefaults } from './limits.js';
import {
  type LifecycleCommand,
  type StatusSink,
  type WorkerCommand,
  type WorkerSandboxState,
  workerCommandSchema,
} from './protocol.js';
import { BoundedSlots } from './slots.js';
import { StatusBatcher } from './status-batcher.js';

export interface NodeWorkerOptions {
  readonly nodeId: NodeId;
  readonly driver: Driver;
  readonly statusSink: StatusSink;
  readonly timers?: Timers;
  /** Boots (create, resume) running at once; QEMU under TCG is CPU-bound, so about 2 per machine. */
  readonly bootsConcurrentMax?: number;
  /** Boots waiting for a slot before creates are refused with WorkerBusyError. */
  readonly bootQueueMax?: number;
  /** Execs running at once before exec is refused with WorkerBusyError. */
  readonly execsConcurrentMax?: number;
  readonly statusFlushMs?: number;
  readonly statusBatchMax?: number;
  readonly statusPendingMax?: number;
  /** Terminated ids remembered so a late duplicate create is not obeyed. */
  readonly tombstonesMax?: number;
}

export { bootsConcurrentLimit, workerDefaults };

/** What a command was answered with: the sandbox's state on this node after the command was taken. */
export type CommandReply =
  | { readonly type: 'state'; readonly sandboxId: SandboxId; readonly state: WorkerSandboxState }
  | { readonly type: 'exec'; readonly sandboxId: SandboxId; readonly result: ExecResult }
  | { readonly type: 'orphans'; readonly stopped: number }
  | { readonly type: 'batch'; readonly replies: readonly BatchItemReply[] };

/** One command of a batch: its state reply, or the code and message of its refusal. */
export type BatchItemReply =
  | { readonly ok: true; readonly sandboxId: SandboxId; readonly state: WorkerSandboxState }
  | { readonly ok: false; readonly sandboxId: SandboxId; readonly code: string; readonly message: string };

interface Entry {
  readonly id: SandboxId;
  state: WorkerSandboxState;
  reason?: string;
  /** The last operation queued on this sandbox; the next one starts after it. Never rejects. */
  tail: Promise<void>;
}

export class NodeWorker {
  readonly nodeId: NodeId;
  readonly #driver: Driver;
  readonly #timers: Timers;
  readonly #boots: BoundedSlots;
  readonly #execs: BoundedSlots;
  readonly #status: StatusBatcher;
  readonly #entries = new Map<SandboxId, Entry>();
  /** Insertion-ordered, so the oldest tombstone is dropped first when the bound is reached. */
  readonly #tombstones = new Set<SandboxId>();
  readonly #tombstonesMax: number;
  readonly #execResults = new ExecCache();
  #closed = false;

  constructor(options: NodeWorkerOptions) {
    this.nodeId = options.nodeId;
    this.#driver = options.driver;
    this.#timers = options.timers ?? realTimers;
    this.#boots = new BoundedSlots(
      `node ${options.nodeId} boots`,
      options.bootsConcurrentMax ?? workerDefaults.bootsConcurrentMax,
      options.bootQueueMax ?? workerDefaults.bootQueueMax,
    );
    const execsMax = options.execsConcurrentMax ?? workerDefaults.execsConcurrentMax;
    this.#execs = new BoundedSlots(`node ${options.nodeId} execs`, execsMax, 0);
    this.#status = new StatusBatcher({
      sink: options.statusSink,
      timers: this.#timers,
      flushMs: options.statusFlushMs ?? workerDefaults.statusFlushMs,
      batchMax: options.statusBatchMax ?? workerDefaults.statusBatchMax,
      pendingMax: options.statusPendingMax ?? workerDefaults.statusPendingMax,
    });
    this.#tombstonesMax = options.tombstonesMax ?? workerDefaults.tombstonesMax;
  }

  get driver(): Driver {
    return this.#driver;
  }

  /** Validates and carries out one command (ValidationError for a malformed one, nothing changed). */
  async handle(input: unknown): Promise<CommandReply> {
    const cmd = parseWith(workerCommandSchema, input, 'command');
    return this.#dispatch(cmd);
  }

  #dispatch(cmd: WorkerCommand): Promise<CommandReply> {
    switch (cmd.type) {
      case 'create':
        return this.create({ sandboxId: cmd.sandboxId, resources: cmd.resources, image: cmd.image });
      case 'terminate':
        return this.terminate(cmd.sandboxId);
      case 'suspend':
        return this.suspend(cmd.sandboxId);
      case 'resume':
        return this.resume(cmd.sandboxId);
      case 'exec': {
        const { type: _type, sandboxId, requestId, ...request } = cmd;
        return this.exec(sandboxId, request, requestId);
      }
      case 'stop-orphans':
        return this.stopOrphans(cmd.sandboxIds);
      case 'batch':
        return this.#batch(cmd.commands);
      default:
        return unreachable(cmd);
    }
  }

  /** Carries out each command of a batch in order; a refusal is that command's answer, not the batch's. */
  async #batch(commands: readonly LifecycleCommand[]): Promise<CommandReply> {
    const replies: BatchItemReply[] = [];
    for (const cmd of commands) {
      try {
        const reply = await this.#dispatch(cmd);
        assert(reply.type === 'state', 'a lifecycle command answers with a state', { type: reply.type });
        replies.push({ ok: true, sandboxId: reply.sandboxId, state: reply.state });
      } catch (err) {
        const code = err instanceof TrellisError ? err.code : 'INTERNAL';
        replies.push({ ok: false, sandboxId: cmd.sandboxId, code, message: errorText(err) });
      }
    }
    return { type: 'batch', replies };
  }

  /** Makes the disk and boots the machine (queued behind the boot bound); replies `starting` at once. */
  async create(spec: MachineSpec): Promise<CommandReply> {
    this.#open();
    const id = spec.sandboxId;
    if (this.#tombstones.has(id)) return this.#repeat(id, 'terminated');
    const known = this.#entries.get(id);
    if (known !== undefined) return this.#repeat(id, known.state, known.reason);
    if (this.#boots.full) {
      throw new WorkerBusyError(`node ${this.nodeId}: boot queue full (${this.#boots.queued}); retry later`);
    }
    const entry: Entry = { id, state: 'starting', tail: Promise.resolve() };
    this.#entries.set(id, entry);
    this.#set(entry, 'starting');
    this.#chain(entry, 'create', async () => {
      // Only a terminate cancels the boot; a suspend that came while it queued runs after it (next in chain).
      const cancelled = (): boolean => entry.state === 'terminating' || entry.state === 'terminated';
      const booted = await this.#boots.run(async () => {
        if (cancelled()) return false;
        await this.#driver.createDisk(spec);
        if (cancelled()) return false;
        await this.#driver.boot(spec);
        return true;
      });
      if (booted && entry.state === 'starting') this.#set(entry, 'running');
    });
    return { type: 'state', sandboxId: id, state: entry.state };
  }

  /** Ends the machine and removes its files; an unknown or terminated id is already terminated. */
  async terminate(id: SandboxId): Promise<CommandReply> {
    this.#open();
    if (this.#tombstones.has(id)) return this.#repeat(id, 'terminated');
    let entry = this.#entries.get(id);
    if (entry === undefined) {
      // Unknown here, but a previous worker process may have left its files: destroy is idempotent.
      entry = { id, state: 'terminating', tail: Promise.resolve() };
      this.#entries.set(id, entry);
    } else if (entry.state === 'terminating') {
      return this.#repeat(id, 'terminating');
    }
    const target = entry;
    this.#set(target, 'terminating');
    this.#chain(target, 'terminate', async () => {
      await this.#driver.destroy(id);
      this.#set(target, 'terminated');
      this.#entries.delete(id);
      this.#bury(id);
    });
    return { type: 'state', sandboxId: id, state: 'terminating' };
  }

  async suspend(id: SandboxId): Promise<CommandReply> {
    this.#open();
    this.#requireCapability('suspend');
    const entry = this.#known(id);
    if (entry.state === 'suspended' || entry.state === 'suspending') return this.#repeat(id, entry.state);
    if (entry.state !== 'running' && entry.state !== 'starting' && entry.state !== 'resuming') {
      throw new SandboxStateError(id, entry.state, 'suspend');
    }
    this.#set(entry, 'suspending');
    this.#chain(entry, 'suspend', async () => {
      if (entry.state !== 'suspending') return;
      await this.#driver.suspend(id);
      if (entry.state === 'suspending') this.#set(entry, 'suspended');
    });
    return { type: 'state', sandboxId: id, state: 'suspending' };
  }

  async resume(id: SandboxId): Promise<CommandReply> {
    this.#open();
    this.#requireCapability('resume');
    const entry = this.#known(id);
    if (entry.state === 'running' || entry.state === 'resuming' || entry.state === 'starting') {
      return this.#repeat(id, entry.state);
    }
    if (entry.state !== 'suspended' && entry.state !== 'suspending') {
      throw new SandboxStateError(id, entry.state, 'resume');
    }
    if (this.#boots.full) throw new WorkerBusyError(`node ${this.nodeId}: boot queue full; retry later`);
    this.#set(entry, 'resuming');
    this.#chain(entry, 'resume', async () => {
      const resumed = await this.#boots.run(async () => {
        if (entry.state !== 'resuming') return false;
        await this.#driver.resume(id);
        return true;
      });
      if (resumed && entry.state === 'resuming') this.#set(entry, 'running');
    });
    return { type: 'state', sandboxId: id, state: 'resuming' };
  }

  /**
   * Runs a command in a running sandbox; not a state change, so it is answered, never reported. With a
   * `requestId` seen before (a retry), the first run's result is the answer and nothing runs again.
   */
  async exec(id: SandboxId, input: unknown, requestId?: string): Promise<CommandReply> {
    this.#open();
    const request = parseExecRequest(input, this.#driver.execStdinBytesMax);
    /** Set once this call reached the driver: only then can a failure mean the machine is gone. */
    let reachedDriver = false;
    const run = (): Promise<ExecResult> => {
      const entry = this.#known(id);
      if (entry.state !== 'running') throw new SandboxStateError(id, entry.state, 'exec');
      return this.#execs.run(() => {
        reachedDriver = true;
        return this.#driver.exec(id, request);
      });
    };
    try {
      const result = await (requestId === undefined
        ? run()
        : this.#execResults.run(requestId, id, request, async () => run()));
      return { type: 'exec', sandboxId: id, result };
    } catch (err) {
      const entry = this.#entries.get(id);
      // A refusal (busy, not running, a reused request id) ran nothing; a failed run may mean a dead machine.
      if (entry !== undefined && reachedDriver) await this.#checkAlive(entry, err);
      throw err;
    }
  }

  /** After an exec failed: if the machine is no longer running, the sandbox failed, and is reported so. */
  async #checkAlive(entry: Entry, cause: unknown): Promise<void> {
    if (entry.state !== 'running') return;
    const machine = (await this.#driver.list()).find((m) => m.sandboxId === entry.id);
    if (machine?.state === 'running' || entry.state !== 'running') return;
    const why = cause instanceof DriverError ? cause.reason : errorText(cause);
    this.#set(entry, 'failed', `machine is ${machine?.state ?? 'gone'} (exec: ${why})`);
  }

  /** Ends sandboxes reconcile found are not placed here; no status is reported for them. */
  async stopOrphans(ids: readonly SandboxId[]): Promise<CommandReply> {
    this.#open();
    let stopped = 0;
    for (const id of ids) {
      const entry = this.#entries.get(id);
      await entry?.tail;
      this.#entries.delete(id);
      await this.#driver.destroy(id);
      this.#bury(id);
      stopped++;
    }
    return { type: 'orphans', stopped };
  }

  /**
   * What this node holds, for the scheduler's reconcile: the driver's machines (found again after a
   * worker restart) merged with sandboxes still being created here. A machine whose disk survived but
   * whose VM did not (`stopped`) is left out, so reconcile counts it lost; a terminate will clean it.
   */
  async report(): Promise<ReconcileEntry[]> {
    const machines = await this.#driver.list();
    for (const m of machines) {
      if (this.#entries.has(m.sandboxId) || this.#tombstones.has(m.sandboxId) || m.state === 'stopped')
        continue;
      this.#entries.set(m.sandboxId, { id: m.sandboxId, state: m.state, tail: Promise.resolve() });
    }
    const held: ReconcileEntry[] = [];
    for (const entry of this.#entries.values()) {
      if (entry.state === 'terminated' || entry.state === 'failed') continue;
      held.push({ sandboxId: entry.id, state: entry.state });
    }
    return held;
  }

  /** The state of one sandbox on this node, or undefined when it holds none. */
  stateOf(id: SandboxId): WorkerSandboxState | undefined {
    if (this.#tombstones.has(id)) return 'terminated';
    return this.#entries.get(id)?.state;
  }

  /** Resolves when every queued operation has finished (tests, shutdown). */
  async settled(): Promise<void> {
    await Promise.all([...this.#entries.values()].map((e) => e.tail));
  }

  get stats(): {
    sandboxes: number;
    bootsActive: number;
    bootsQueued: number;
    statusBatches: number;
    statusDropped: number;
  } {
    return {
      sandboxes: this.#entries.size,
      bootsActive: this.#boots.active,
      bootsQueued: this.#boots.queued,
      statusBatches: this.#status.batchesSent,
      statusDropped: this.#status.dropped,
    };
  }

  flush(): Promise<void> {
    return this.#status.flush();
  }

  /**
   * Stops taking commands, lets queued operations finish, sends the last statuses. With `stopMachines`
   * (a clean shutdown) the driver ends every machine, so nothing is left running.
   */
  async close(options: { stopMachines: boolean }): Promise<void> {
    this.#closed = true;
    await this.settled();
    if (options.stopMachines) await this.#driver.close();
    await this.#status.flush();
    this.#status.stop();
  }

  #open(): void {
    if (this.#closed) throw new WorkerClosedError(`node ${this.nodeId} worker is closed`);
  }

  #known(id: SandboxId): Entry {
    const entry = this.#entries.get(id);
    if (entry !== undefined) return entry;
    if (this.#tombstones.has(id)) throw new SandboxStateError(id, 'terminated', 'act on it');
    throw new SandboxNotFoundError(id);
  }

  #requireCapability(operation: 'suspend' | 'resume'): void {
    if (!this.#driver.capabilities.suspend) throw new UnsupportedOperationError(this.#driver.kind, operation);
  }

  /** Re-reports a state without changing it: the sender may have missed the first report. */
  #repeat(id: SandboxId, state: WorkerSandboxState, reason?: string): CommandReply {
    this.#report(id, state, reason);
    return { type: 'state', sandboxId: id, state };
  }

  #set(entry: Entry, state: WorkerSandboxState, reason?: string): void {
    entry.state = state;
    if (reason === undefined) delete entry.reason;
    else entry.reason = reason;
    this.#report(entry.id, state, reason);
  }

  #report(sandboxId: SandboxId, state: WorkerSandboxState, reason?: string): void {
    const atMs = this.#timers.now();
    this.#status.push(reason === undefined ? { sandboxId, state, atMs } : { sandboxId, state, reason, atMs });
  }

  /** Queues `op` after the sandbox's previous operation; a failure turns the sandbox failed with the reason. */
  #chain(entry: Entry, operation: string, op: () => Promise<void>): void {
    entry.tail = entry.tail.then(op).catch((err: unknown) => {
      const reason = err instanceof DriverError ? err.reason : `${operation}: ${errorText(err)}`;
      this.#set(entry, 'failed', reason);
    });
  }

  #bury(id: SandboxId): void {
    this.#tombstones.add(id);
    if (this.#tombstones.size > this.#tombstonesMax) {
      const oldest = this.#tombstones.values().next().value;
      assert(oldest !== undefined, 'a non-empty set has a first element');
      this.#tombstones.delete(oldest);
    }
  }
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
