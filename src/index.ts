/**
 * `trellis`: the embedding API. `createScheduler()` starts a scheduler on an in-process Raft group of three
 * replicas (`RaftGroupLog`; pass `RaftGroupLog.open({ dir })` for fsynced file storage); see
 * docs/scheduler.md for the lifecycle, the errors each call throws and an example.
 */

export type { NodeSpec, NodeView, Resources } from '../placement/index.js';
export {
  DuplicateNodeError,
  NodeBusyError,
  OverCommitError,
  ReleaseMismatchError,
  UnknownNodeError,
} from '../placement/index.js';
export {
  EntryUnavailableError,
  LogCompactedError,
  SnapshotOutOfDateError,
  SnapshotUnavailableError,
} from '../raft/core/errors.js';
// The Raft layer's NotLeaderError and TimeoutError are renamed here: the scheduler has its own NotLeaderError.
export {
  MembershipChangeError,
  NotLeaderError as RaftNotLeaderError,
  ProposalDroppedError,
  ProposalOutcomeUnknownError,
  RaftClosedError,
  TimeoutError as RaftTimeoutError,
} from '../raft/errors.js';
export { DataDirLockedError, DataDirLockInvalidError } from '../raft/storage/dir-lock.js';
export { StorageClosedError, WalCorruptError } from '../raft/storage/file.js';
export type { MutationOptions, SchedulerApi, StatusItem, WatchOptions } from '../scheduler/api.js';
export type { Quota, ReconcileEntry, SandboxSpec } from '../scheduler/commands.js';
export { reconcileReportMax } from '../scheduler/commands.js';
export type { NodeCommand, NodeCommandSink, NodeExecRequest, NodeExecResult } from '../scheduler/dispatch.js';
export {
  IllegalTransitionError,
  NoCapacityError,
  NodeNotReadyError,
  NotLeaderError,
  OverloadedError,
  QuotaExceededError,
  RequestIdConflictError,
  SandboxCancelledError,
  SandboxNotRunningError,
  SchedulerClosedError,
  UnknownSandboxError,
  WatchOverflowError,
} from '../scheduler/errors.js';
export { InProcessLog } from '../scheduler/in-process-log.js';
export type { NodeHeldState, ResumePolicy, SandboxState } from '../scheduler/lifecycle.js';
export { nodeHeldStates, sandboxStates } from '../scheduler/lifecycle.js';
export type { ReplicatedLog } from '../scheduler/log.js';
export { RaftGroupLog, type RaftGroupOptions } from '../scheduler/raft-group.js';
export type {
  CreateOptions,
  ExecOptions,
  ListFilter,
  ReadOptions,
  SchedulerConfig,
  SchedulerStats,
} from '../scheduler/scheduler.js';
export { Scheduler } from '../scheduler/scheduler.js';
export type { ReconcileResult } from '../scheduler/state.js';
export { type ThreadedGroupOptions, ThreadedRaftGroup } from '../scheduler/threads/group.js';
export type { LostFrom, NodeRecord, Sandbox, SchedulerEvent } from '../scheduler/types.js';
export {
  attemptTimeoutMsDefault,
  type ConnectOptions,
  type Credentials,
  callTimeoutMsDefault,
  connect,
  RemoteScheduler,
} from './api/client.js';
export { InternalError, RemoteError, WatchGapError } from './api/errors.js';
export { ApiServer, type ApiServerOptions, serveApi } from './api/nats-server.js';
export type { ReplicaStatus } from './api/protocol.js';
export {
  createScheduler,
  EmbeddedScheduler,
  type EmbeddedSchedulerConfig,
  type EmbeddedWorkersOptions,
  LocalFleet,
} from './embedded.js';
export { AssertionFailure } from './lib/assert.js';
export { Deadline, type DeadlineWire, deadlineBudgetMsMax } from './lib/deadline.js';
export {
  CodecError,
  ConfigError,
  DeadlineExceededError,
  OutcomeUnknownError,
  TrellisError,
  UnavailableError,
  ValidationError,
} from './lib/errors.js';
export { type Cancel, realTimers, type Timers, VirtualTimers } from './lib/timers.js';
export { localCommandSink, natsCommandSink } from './worker/command-sink.js';
export type {
  Driver,
  DriverCapabilities,
  DriverKind,
  ExecRequest,
  ExecResult,
  MachineReport,
  MachineSpec,
  MachineState,
} from './worker/driver.js';
export { ProcessDriver, type ProcessDriverOptions } from './worker/drivers/process.js';
export { QemuDriver, type QemuDriverOptions } from './worker/drivers/qemu.js';
export {
  defaultSimLatencyModel,
  SimDriver,
  type SimDriverOptions,
  type SimLatencyModel,
} from './worker/drivers/sim.js';
export {
  DriverError,
  SandboxNotFoundError,
  SandboxStateError,
  UnsupportedOperationError,
  WorkerBusyError,
  WorkerClosedError,
} from './worker/errors.js';
export { natsStatusSink, serveWorker, type WorkerBinding } from './worker/nats-binding.js';
export { type CommandReply, NodeWorker, type NodeWorkerOptions } from './worker/node-worker.js';
export type { StatusReport, StatusSink, WorkerCommand, WorkerSandboxState } from './worker/protocol.js';
