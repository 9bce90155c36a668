/**
 * Errors across the API: a `TrellisError` thrown by the scheduler behind a server travels as `{ code, name,
 * message, details, path?, reason? }` and is rebuilt on the client as the same class (found by `code`), so a
 * remote caller catches exactly what an embedded one catches. A code this client does not know (a newer
 * server) becomes a `RemoteError` carrying that code, name and message. Anything that is not a TrellisError
 * (a bug behind the server) is sent as `INTERNAL` without its stack.
 */
import {
  DuplicateNodeError,
  NodeBusyError,
  OverCommitError,
  ReleaseMismatchError,
  UnknownNodeError,
} from '../../placement/index.js';
import {
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
  WatchGapError,
  WatchOverflowError,
} from '../../scheduler/errors.js';
import {
  CodecError,
  ConfigError,
  DeadlineExceededError,
  OutcomeUnknownError,
  TrellisError,
  type TrellisErrorOptions,
  UnavailableError,
  ValidationError,
} from '../lib/errors.js';

/** An error from a server whose code this client does not know; `code` and `remoteName` are the server's. */
export class RemoteError extends TrellisError {
  override readonly name = 'RemoteError';
  readonly code: string;
  readonly remoteName: string;
  constructor(code: string, remoteName: string, message: string, options: TrellisErrorOptions = {}) {
    super(message, options);
    this.code = code;
    this.remoteName = remoteName;
  }
}

/** The server failed in a way it did not mean to (a bug); the message says no more than that. */
export class InternalError extends TrellisError {
  override readonly name = 'InternalError';
  readonly code = 'INTERNAL';
}

/** Defined beside the scheduler's own errors, so the embedded scheduler throws the same class. */
export { WatchGapError };

/** The wire form of an error. */
export interface WireError {
  readonly code: string;
  readonly name: string;
  readonly message: string;
  readonly details: Readonly<Record<string, unknown>>;
  /** ValidationError's field path. */
  readonly path?: string;
  /** CodecError's reason. */
  readonly reason?: string;
}

type Rebuild = (w: WireError, options: TrellisErrorOptions) => TrellisError;
const plain =
  (cls: new (message: string, options?: TrellisErrorOptions) => TrellisError): Rebuild =>
  (w, o) =>
    new cls(w.message, o);

const codecReasons = new Set<string>(['too-large', 'malformed', 'envelope', 'kind', 'version', 'shape']);

/** Every error class a client rebuilds, by its stable code. */
const registry: Readonly<Record<string, Rebuild>> = {
  SCHED_UNKNOWN_SANDBOX: plain(UnknownSandboxError),
  SCHED_ILLEGAL_TRANSITION: plain(IllegalTransitionError),
  SCHED_QUOTA_EXCEEDED: plain(QuotaExceededError),
  SCHED_REQUEST_ID_CONFLICT: plain(RequestIdConflictError),
  SCHED_NODE_NOT_READY: plain(NodeNotReadyError),
  SCHED_NO_CAPACITY: plain(NoCapacityError),
  SCHED_OVERLOADED: plain(OverloadedError),
  SCHED_NOT_LEADER: plain(NotLeaderError),
  SCHED_CLOSED: plain(SchedulerClosedError),
  SCHED_CANCELLED: plain(SandboxCancelledError),
  SCHED_NOT_RUNNING: plain(SandboxNotRunningError),
  SCHED_WATCH_OVERFLOW: plain(WatchOverflowError),
  PLACEMENT_UNKNOWN_NODE: plain(UnknownNodeError),
  PLACEMENT_DUPLICATE_NODE: plain(DuplicateNodeError),
  PLACEMENT_NODE_BUSY: plain(NodeBusyError),
  PLACEMENT_OVER_COMMIT: plain(OverCommitError),
  PLACEMENT_RELEASE_MISMATCH: plain(ReleaseMismatchError),
  CONFIG: plain(ConfigError),
  UNAVAILABLE: plain(UnavailableError),
  OUTCOME_UNKNOWN: plain(OutcomeUnknownError),
  DEADLINE_EXCEEDED: plain(DeadlineExceededError),
  INTERNAL: plain(InternalError),
  API_WATCH_GAP: plain(WatchGapError),
  VALIDATION: (w, o) => {
    const path = w.path ?? '';
    // ValidationError prefixes its message with the path; strip it so it is not prefixed twice.
    const prefix = `${path}: `;
    return new ValidationError(
      path,
      path !== '' && w.message.startsWith(prefix) ? w.message.slice(prefix.length) : w.message,
      o,
    );
  },
  CODEC: (w, o) =>
    new CodecError(
      codecReasons.has(w.reason ?? '') ? (w.reason as CodecError['reason']) : 'shape',
      w.message,
      o,
    ),
};

/** The codes a client rebuilds into their own classes. */
export const knownErrorCodes: readonly string[] = Object.keys(registry);

/** Turns a thrown value into its wire form; a non-TrellisError is reported as INTERNAL, without detail. */
export function toWire(err: unknown): WireError {
  if (!(err instanceof TrellisError)) {
    return { code: 'INTERNAL', name: 'InternalError', message: 'internal error in the server', details: {} };
  }
  return {
    code: err.code,
    name: err.name,
    message: err.message,
    details: err.details,
    ...(err instanceof ValidationError ? { path: err.path } : {}),
    ...(err instanceof CodecError ? { reason: err.reason } : {}),
  };
}

/** Rebuilds a wire error as its class (by code), or a RemoteError for a code this client does not know. */
export function fromWire(w: WireError): TrellisError {
  const options = { details: w.details };
  const rebuild = registry[w.code];
  if (rebuild === undefined) return new RemoteError(w.code, w.name, w.message, options);
  return rebuild(w, options);
}
