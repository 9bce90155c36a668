/**
 * The error hierarchy. One class per failure mode; each sets `name`, carries a stable machine-readable
 * `code`, and accepts `cause` (as nats.js does). A node that does not fit is a result value with a reason,
 * never an exception: errors are for calls that cannot be carried out at all.
 *
 * Pure: the pure cores may import this module.
 */

export interface TrellisErrorOptions {
  readonly cause?: unknown;
  /** Structured details a caller (or a log line) can read without parsing the message. */
  readonly details?: Readonly<Record<string, unknown>>;
}

let captureStacks = true;

/**
 * Whether typed errors capture a stack (default yes). `trellis` turns it off unless `--debug`: its servers
 * and workers build typed errors as answers on hot paths (a status for a sandbox already gone, a follower's
 * NotLeaderError), the CLI prints one line without a stack, and capturing one was 3–5% of a loaded
 * replica's CPU (bench:load profiles). The code and message still say what failed.
 */
export function setTypedErrorStacks(on: boolean): void {
  captureStacks = on;
}

/** Base class of every error Trellis throws on purpose. `code` is stable across releases. */
export abstract class TrellisError extends Error {
  abstract readonly code: string;
  readonly details: Readonly<Record<string, unknown>>;
  constructor(message: string, options: TrellisErrorOptions = {}) {
    const limit = Error.stackTraceLimit;
    if (!captureStacks) Error.stackTraceLimit = 0;
    try {
      super(message, options.cause === undefined ? undefined : { cause: options.cause });
    } finally {
      Error.stackTraceLimit = limit;
    }
    this.details = options.details ?? {};
  }
}

/** Input failed validation: a field is missing, of the wrong type, out of range, or unknown. */
export class ValidationError extends TrellisError {
  override readonly name = 'ValidationError';
  readonly code = 'VALIDATION';
  /** Dotted path of the offending field, e.g. `resources.cpu`; empty for the value as a whole. */
  readonly path: string;
  constructor(path: string, message: string, options: TrellisErrorOptions = {}) {
    super(path === '' ? message : `${path}: ${message}`, options);
    this.path = path;
  }
}

/** A payload could not be decoded: not msgpack, too large, an unknown version, or the wrong shape. */
export class CodecError extends TrellisError {
  override readonly name = 'CodecError';
  readonly code = 'CODEC';
  /** What went wrong, for metrics: one label value per kind of failure. */
  readonly reason: 'too-large' | 'malformed' | 'envelope' | 'kind' | 'version' | 'shape';
  constructor(reason: CodecError['reason'], message: string, options: TrellisErrorOptions = {}) {
    super(message, options);
    this.reason = reason;
  }
}

/** A configuration value is invalid or inconsistent; raised before anything starts. */
export class ConfigError extends TrellisError {
  override readonly name = 'ConfigError';
  readonly code = 'CONFIG';
}

/** The operation needs a component (a server binary, a device) that is not present on this machine. */
export class UnavailableError extends TrellisError {
  override readonly name = 'UnavailableError';
  readonly code = 'UNAVAILABLE';
}

/**
 * A request's deadline passed before it could be carried out; it was dropped and has not taken effect
 * (see src/lib/deadline.ts). A replica that wakes from a stall drops such work instead of forwarding it.
 */
export class DeadlineExceededError extends TrellisError {
  override readonly name = 'DeadlineExceededError';
  readonly code = 'DEADLINE_EXCEEDED';
}

/**
 * A client gave up on a mutating request without learning whether it took effect: an attempt may have
 * committed (or may still commit before its deadline) although no answer came back. Not "failed", not
 * "no leader yet": read the state to find out, or retry with the same request id (`details.requestId`) or within
 * the same client session: the request is applied at most once.
 */
export class OutcomeUnknownError extends TrellisError {
  override readonly name = 'OutcomeUnknownError';
  readonly code = 'OUTCOME_UNKNOWN';
}
