/**
 * The machine side of a sandbox: one `Driver` interface that the node worker drives, whatever stands in for
 * the VM (`sim`: a latency model; `process`: a child process; `qemu`: a real microVM).
 *
 * Contract, for every driver:
 * - Every operation is keyed on the sandbox id and idempotent: `createDisk` of an existing disk, `boot` of a
 *   running machine, `stop` of a stopped one and `destroy` of an unknown one all succeed without effect.
 *   The worker still serialises operations per sandbox; a driver need not handle two at once for one id.
 * - A failure is a `DriverError` carrying the driver's reason; a wrong state is `SandboxStateError`; an
 *   unknown id is `SandboxNotFoundError`; an operation outside `capabilities` is `UnsupportedOperationError`.
 * - Everything is bounded: exec output, stdin and duration (limits below), and each driver's own waits.
 * - `close` ends every machine the driver started in this process, so a clean shutdown leaves no orphan;
 *   a crash leaves them running for `list` to find after a restart (persistent drivers only).
 */
import { z } from 'zod';
import type { Resources } from '../../placement/index.js';
import { ValidationError } from '../lib/errors.js';
import type { SandboxId } from '../lib/ids.js';
import { parseWith } from '../lib/validate.js';

export type DriverKind = 'sim' | 'process' | 'qemu';

/** What a driver can do beyond the required create, boot, exec, stop and destroy. */
export interface DriverCapabilities {
  /** `suspend` and `resume` are available. */
  readonly suspend: boolean;
  /** A suspended machine keeps its memory image on disk and holds no memory (qemu), or only pauses (process). */
  readonly suspendFreesMemory: boolean;
  /** Creates restore a saved template instead of booting cold (qemu's fast path). */
  readonly snapshotRestore: boolean;
  /** Machines outlive the worker process, so `list` after a restart finds them (reconcile). */
  readonly persistent: boolean;
}

/** What a driver needs to make one sandbox's machine. */
export interface MachineSpec {
  readonly sandboxId: SandboxId;
  /** cpu in millicores (vCPUs = ceil(cpu / 1000)), memory and disk in MiB. */
  readonly resources: Resources;
  /** The image the disk is made from; drivers with a single built-in image accept only `default`. */
  readonly image: string;
}

export const defaultImage = 'default';

/** The state of a machine as the driver sees it (what `list` reports). */
export type MachineState = 'running' | 'suspended' | 'stopped';

export interface MachineReport {
  readonly sandboxId: SandboxId;
  readonly state: MachineState;
}

export interface ExecRequest {
  /** argv: the program and its arguments, run in the sandbox's own working directory. */
  readonly command: readonly string[];
  readonly stdin?: Uint8Array;
  readonly timeoutMs: number;
  /** Per stream; output beyond it is dropped and the result says it was truncated. */
  readonly outputBytesMax: number;
}

export interface ExecResult {
  /** The command's exit code; null when it was ended by a signal (`signal` then says which). */
  readonly exitCode: number | null;
  readonly signal: string | null;
  readonly stdout: Uint8Array;
  readonly stderr: Uint8Array;
  readonly stdoutTruncated: boolean;
  readonly stderrTruncated: boolean;
  /** The command ran past `timeoutMs` and was killed. */
  readonly timedOut: boolean;
}

export interface Driver {
  readonly kind: DriverKind;
  readonly capabilities: DriverCapabilities;
  /** The largest stdin this driver's exec carries (the qemu console is narrower than a pipe). */
  readonly execStdinBytesMax: number;
  /** Makes the sandbox's disk (size from `resources.disk`); idempotent. */
  createDisk(spec: MachineSpec): Promise<void>;
  /** Starts the machine on its disk and resolves once it runs; idempotent for a running machine. */
  boot(spec: MachineSpec): Promise<void>;
  /** Runs a command in a running machine; bounded in output, stdin and time. */
  exec(sandboxId: SandboxId, request: ExecRequest): Promise<ExecResult>;
  /** Ends the machine and keeps its disk; idempotent. */
  stop(sandboxId: SandboxId): Promise<void>;
  /** Ends the machine if it runs and removes everything it had on this node; idempotent. */
  destroy(sandboxId: SandboxId): Promise<void>;
  /** Freezes a running machine (see capabilities); idempotent for a suspended one. */
  suspend(sandboxId: SandboxId): Promise<void>;
  /** Brings a suspended machine back, same disk and memory; idempotent for a running one. */
  resume(sandboxId: SandboxId): Promise<void>;
  /** Every machine this driver holds on the node, including ones a previous worker process left. */
  list(): Promise<readonly MachineReport[]>;
  /** Ends every machine started by this driver object; nothing new is accepted afterwards. */
  close(): Promise<void>;
}

/** Exec limits every driver enforces; a request outside them is refused before anything runs. */
export const execTimeoutMsMax = 10 * 60_000;
export const execTimeoutMsDefault = 30_000;
export const execOutputBytesMax = 1 << 20;
export const execOutputBytesDefault = 64 << 10;
export const execStdinBytesMax = 1 << 20;
export const execArgsMax = 256;
export const execArgBytesMax = 64 << 10;

const execRequestSchema = z.strictObject({
  command: z.array(z.string().max(execArgBytesMax)).min(1).max(execArgsMax),
  stdin: z.instanceof(Uint8Array).optional(),
  timeoutMs: z.number().int().min(1).max(execTimeoutMsMax).default(execTimeoutMsDefault),
  outputBytesMax: z.number().int().min(0).max(execOutputBytesMax).default(execOutputBytesDefault),
});

/** The input a caller gives; limits default when left out. */
export type ExecInput = z.input<typeof execRequestSchema>;

/** Validates an exec request against the common limits and the driver's stdin limit (ValidationError). */
export function parseExecRequest(input: unknown, stdinBytesMax: number): ExecRequest {
  const parsed = parseWith(execRequestSchema, input, 'exec');
  if (parsed.command[0] === '') throw new ValidationError('exec.command.0', 'the program name is empty');
  if (parsed.stdin !== undefined && parsed.stdin.byteLength > stdinBytesMax) {
    throw new ValidationError('exec.stdin', `${parsed.stdin.byteLength} bytes exceed ${stdinBytesMax}`);
  }
  const base = {
    command: parsed.command,
    timeoutMs: parsed.timeoutMs,
    outputBytesMax: parsed.outputBytesMax,
  };
  return parsed.stdin === undefined ? base : { ...base, stdin: parsed.stdin };
}

/** vCPUs for a cpu request in millicores: whole CPUs, at least one. */
export function vcpusFor(resources: Resources): number {
  return Math.max(1, Math.ceil(resources.cpu / 1000));
}

/**
 * Collects up to `bytesMax` bytes from a stream of chunks and remembers whether more came. Used for exec
 * output so a chatty command cannot make the worker hold more than the limit.
 */
export class BoundedBuffer {
  readonly #chunks: Buffer[] = [];
  #bytes = 0;
  #truncated = false;
  constructor(readonly bytesMax: number) {}
  push(chunk: Buffer): void {
    const room = this.bytesMax - this.#bytes;
    if (chunk.byteLength > room) this.#truncated = true;
    if (room <= 0) return;
    const kept = chunk.byteLength > room ? chunk.subarray(0, room) : chunk;
    this.#chunks.push(kept);
    this.#bytes += kept.byteLength;
  }
  get truncated(): boolean {
    return this.#truncated;
  }
  bytes(): Uint8Array {
    return new Uint8Array(Buffer.concat(this.#chunks));
  }
}
