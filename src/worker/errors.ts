/**
 * The node worker's errors. Each failure mode is one class with a stable `code`; a driver failure carries
 * the driver's own reason so it can travel to the scheduler as a `failed` sandbox's reason unchanged.
 */
import { TrellisError, type TrellisErrorOptions } from '../lib/errors.js';

/** A driver could not carry out an operation (disk, boot, exec transport, suspend, resume, stop). */
export class DriverError extends TrellisError {
  override readonly name = 'DriverError';
  readonly code = 'DRIVER';
  /** Which driver failed (`sim`, `process`, `qemu`). */
  readonly driver: string;
  /** The operation that failed, e.g. `boot`. */
  readonly operation: string;
  /** The driver's own words for what went wrong; becomes a failed sandbox's reason. */
  readonly reason: string;
  constructor(driver: string, operation: string, reason: string, options: TrellisErrorOptions = {}) {
    super(`${driver} driver: ${operation} failed: ${reason}`, options);
    this.driver = driver;
    this.operation = operation;
    this.reason = reason;
  }
}

/** The sandbox is not on this node (or not known to this driver). */
export class SandboxNotFoundError extends TrellisError {
  override readonly name = 'SandboxNotFoundError';
  readonly code = 'SANDBOX_NOT_FOUND';
  readonly sandboxId: string;
  constructor(sandboxId: string, options: TrellisErrorOptions = {}) {
    super(`sandbox ${sandboxId} is not on this node`, options);
    this.sandboxId = sandboxId;
  }
}

/** The sandbox exists but is in a state the operation cannot start from (exec on a suspended one). */
export class SandboxStateError extends TrellisError {
  override readonly name = 'SandboxStateError';
  readonly code = 'SANDBOX_STATE';
  readonly sandboxId: string;
  readonly state: string;
  constructor(sandboxId: string, state: string, operation: string, options: TrellisErrorOptions = {}) {
    super(`sandbox ${sandboxId} is ${state}; cannot ${operation}`, options);
    this.sandboxId = sandboxId;
    this.state = state;
  }
}

/** The driver does not support the operation (declared in its capabilities). */
export class UnsupportedOperationError extends TrellisError {
  override readonly name = 'UnsupportedOperationError';
  readonly code = 'UNSUPPORTED';
  constructor(driver: string, operation: string, options: TrellisErrorOptions = {}) {
    super(`the ${driver} driver does not support ${operation}`, options);
  }
}

/** The worker's bounded queue is full; nothing was recorded, so the caller may retry later. */
export class WorkerBusyError extends TrellisError {
  override readonly name = 'WorkerBusyError';
  readonly code = 'WORKER_BUSY';
}

/** The worker (or driver) was closed; no new work is taken. */
export class WorkerClosedError extends TrellisError {
  override readonly name = 'WorkerClosedError';
  readonly code = 'WORKER_CLOSED';
}
