/**
 * The worker's memory of recent execs by request id, so a retried exec (the caller's answer was lost, or a
 * replica retried it) gets the first run's result instead of running the command twice. An exec still
 * running is shared: the retry waits for the same run. Bounded by entries and by the output bytes held;
 * the oldest finished results go first. A run that failed (nothing to return) is forgotten, so a retry
 * runs it again.
 */
import { ValidationError } from '../lib/errors.js';
import type { SandboxId } from '../lib/ids.js';
import type { ExecRequest, ExecResult } from './driver.js';

/** Exec results remembered by request id, at most. */
export const execResultsMax = 1_024;
/** Output bytes (stdout plus stderr) the remembered results hold, at most. */
export const execResultBytesMax = 64 << 20;

interface Remembered {
  /** What was asked, so the same id with another exec is refused rather than answered wrongly. */
  readonly asked: string;
  readonly result: Promise<ExecResult>;
  bytes: number;
}

export class ExecCache {
  readonly #entries = new Map<string, Remembered>();
  readonly #entriesMax: number;
  readonly #bytesMax: number;
  #bytes = 0;

  constructor(entriesMax = execResultsMax, bytesMax = execResultBytesMax) {
    this.#entriesMax = entriesMax;
    this.#bytesMax = bytesMax;
  }

  get size(): number {
    return this.#entries.size;
  }

  /**
   * The result of the exec `requestId` names: the remembered one (running or done) when this id was seen,
   * else `run()`'s, remembered. ValidationError when the id was used for another exec.
   */
  run(
    requestId: string,
    sandboxId: SandboxId,
    request: ExecRequest,
    run: () => Promise<ExecResult>,
  ): Promise<ExecResult> {
    const asked = askedOf(sandboxId, request);
    const known = this.#entries.get(requestId);
    if (known !== undefined) {
      if (known.asked !== asked)
        throw new ValidationError('requestId', `request id ${requestId} was used for another exec`);
      return known.result;
    }
    const entry: Remembered = { asked, result: run(), bytes: 0 };
    this.#entries.set(requestId, entry);
    entry.result.then(
      (r) => {
        if (this.#entries.get(requestId) !== entry) return;
        entry.bytes = r.stdout.byteLength + r.stderr.byteLength;
        this.#bytes += entry.bytes;
        this.#evict();
      },
      () => {
        if (this.#entries.get(requestId) === entry) this.#entries.delete(requestId);
      },
    );
    this.#evict();
    return entry.result;
  }

  /** Drops the oldest entries while over a bound (a running one may go too; its caller still gets it). */
  #evict(): void {
    while (this.#entries.size > this.#entriesMax || this.#bytes > this.#bytesMax) {
      const oldest = this.#entries.entries().next().value;
      if (oldest === undefined) return;
      this.#entries.delete(oldest[0]);
      this.#bytes -= oldest[1].bytes;
    }
  }
}

function askedOf(sandboxId: SandboxId, r: ExecRequest): string {
  return JSON.stringify([sandboxId, r.command, r.timeoutMs, r.outputBytesMax, r.stdin?.byteLength ?? -1]);
}
