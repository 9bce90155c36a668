/**
 * The scheduler's public operations as an interface, so that code written against the embedded scheduler
 * (`createScheduler()`) runs unchanged against a remote cluster (`connect()` in src/api/client.ts): both
 * implement `SchedulerApi`.
 *
 * Every mutating call takes an optional `requestId`. A retry with the same id is applied at most once
 * (the replicated state keeps the outcome by id); a caller that does not pass one gets a fresh id per call,
 * so only its own transport retries are deduplicated. Calls that only read take `ReadOptions`.
 *
 * `stats()` and `heartbeat()` may answer synchronously (embedded) or asynchronously (remote): callers
 * `await` them either way.
 */
import type { NodeSpec, NodeView } from '../placement/index.js';
import type { Quota, ReconcileEntry, SandboxSpec } from './commands.js';
import type { NodeExecResult } from './dispatch.js';
import type { SandboxState } from './lifecycle.js';
import type { CreateOptions, ExecOptions, ListFilter, ReadOptions, SchedulerStats } from './scheduler.js';
import type { ReconcileResult } from './state.js';
import type { Sandbox, SchedulerEvent } from './types.js';

/** Options of every mutating call but create (whose `CreateOptions` carries the same `requestId`). */
export interface MutationOptions {
  /** Makes the call idempotent: a retry with the same id is applied at most once. */
  readonly requestId?: string;
}

export interface WatchOptions {
  /**
   * The first log index whose committed events the watch yields. Absent: events committed from now on.
   * The watch replays the events still held from this index (the embedded scheduler holds what it applied
   * since it started, the last `watchHistoryMax` or more; a server its event ring) before live ones, and
   * throws WatchGapError from `next()` when some are no longer held.
   */
  readonly fromIndex?: number;
}

/** One status report of a node about a sandbox it runs. */
export interface StatusItem {
  readonly sandboxId: string;
  readonly state: SandboxState;
  readonly reason?: string;
  /** The reporting node; when given, a report about a sandbox not on that node is refused (item error). */
  readonly nodeId?: string;
}

export interface SchedulerApi {
  /** Creates a sandbox; resolves once placed (or running, with `wait: 'running'`). */
  create(spec: SandboxSpec, options?: CreateOptions): Promise<Sandbox>;
  terminate(sandboxId: string, options?: MutationOptions): Promise<void>;
  suspend(sandboxId: string, options?: MutationOptions): Promise<void>;
  resume(sandboxId: string, options?: MutationOptions): Promise<void>;
  get(sandboxId: string, options?: ReadOptions): Promise<Sandbox | undefined>;
  list(filter?: ListFilter, options?: ReadOptions): Promise<Sandbox[]>;
  nodes(options?: ReadOptions): Promise<NodeView[]>;
  /** Committed events in log order; `return()` ends it. */
  watch(options?: WatchOptions): AsyncIterableIterator<SchedulerEvent>;
  stats(): SchedulerStats | Promise<SchedulerStats>;
  registerNode(spec: NodeSpec, options?: MutationOptions): Promise<void>;
  setNodeState(nodeId: string, state: NodeSpec['state'], options?: MutationOptions): Promise<void>;
  removeNode(nodeId: string, options?: MutationOptions): Promise<void>;
  /** Records heartbeats; the leader commits them once per interval (so this carries no request id). */
  heartbeat(nodeIds: readonly string[]): void | Promise<void>;
  reportStatus(items: readonly StatusItem[], options?: MutationOptions): Promise<void>;
  reconcileNode(
    nodeId: string,
    running: readonly ReconcileEntry[],
    options?: MutationOptions,
  ): Promise<ReconcileResult>;
  setQuota(tenant: string, quota: Quota, options?: MutationOptions): Promise<void>;
  /** Runs a command in a running sandbox on its node; bounded in time and output. Not a Raft entry. */
  exec(sandboxId: string, command: readonly string[], options?: ExecOptions): Promise<NodeExecResult>;
  /** Releases what the implementation holds (pipeline and owned log, or the NATS connection). */
  close(): Promise<void>;
}
