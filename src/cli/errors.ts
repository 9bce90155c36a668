/**
 * How the `trellis` command fails: every error ends as one line `error: <message> (<CODE>)` on stderr and
 * an exit code by kind (the table is in docs/operations.md). Stacks only with `--debug` or `TRELLIS_DEBUG=1`:
 * a person reading a failed command wants the sentence, not the frames.
 */
import { CommanderError } from 'commander';
import { TrellisError, type TrellisErrorOptions } from '../lib/errors.js';
import { printable } from '../lib/text.js';

/** The exit codes of `trellis`; stable, documented in docs/operations.md. */
export const exitCodes = {
  ok: 0,
  /** The cluster answered and refused or failed the request. */
  failed: 1,
  /** The command line or a configuration value is wrong; nothing was changed. */
  usage: 2,
  /** NATS or the replica group could not be reached in time. */
  unavailable: 3,
  /** This replica was removed from the group and stopped (a supervisor should not restart it). */
  removed: 4,
  /** The client gave up on a write that may have been applied (OUTCOME_UNKNOWN): retry with the same id. */
  outcomeUnknown: 5,
  /** A bug: an error Trellis did not expect (EX_SOFTWARE). */
  internal: 70,
} as const;

/** The command line asks for something that cannot be done as written. */
export class UsageError extends TrellisError {
  override readonly name = 'UsageError';
  readonly code = 'USAGE';
}

/** nats-server refused the credentials (wrong user or password, or not allowed). */
export class NatsAuthError extends TrellisError {
  override readonly name = 'NatsAuthError';
  readonly code = 'NATS_AUTH';
}

/** The cluster answered a request with a refusal; `message` is the refusal as the leader wrote it. */
export class RequestRefusedError extends TrellisError {
  override readonly name = 'RequestRefusedError';
  readonly code: string;
  constructor(message: string, code = 'REFUSED', options: TrellisErrorOptions = {}) {
    super(message, options);
    this.code = code;
  }
}

const usageCodes = new Set(['USAGE', 'VALIDATION', 'CONFIG', 'NATS_AUTH', 'CODEC']);
const unavailableCodes = new Set(['UNAVAILABLE']);

export interface Failure {
  /** The one line for stderr, without its newline. */
  readonly line: string;
  readonly exitCode: number;
}

/** Commander's own "errors" that are not failures: `--help` and `--version` shown. */
export function isCleanExit(err: unknown): boolean {
  return (
    err instanceof CommanderError &&
    (err.code === 'commander.helpDisplayed' || err.code === 'commander.version')
  );
}

/** One line on one line: commander's suggestions ("\n(Did you mean …?)") and multi-line causes folded. */
function oneLine(s: string): string {
  // Messages quote what they refused (an argument, a remote reply): no control character reaches the terminal.
  return printable(s.replace(/\s*\n\s*/g, ' ').trim());
}

/** What `trellis` prints and exits with for `err`. */
export function failureOf(err: unknown): Failure {
  if (err instanceof CommanderError) {
    const message =
      err.code === 'commander.help'
        ? 'a command is required; run it with --help to see the commands'
        : err.message.replace(/^error:\s*/, '');
    return { line: `error: ${oneLine(message)} (USAGE)`, exitCode: exitCodes.usage };
  }
  if (err instanceof TrellisError) {
    const exitCode = usageCodes.has(err.code)
      ? exitCodes.usage
      : err.code === 'OUTCOME_UNKNOWN'
        ? exitCodes.outcomeUnknown
        : unavailableCodes.has(err.code)
          ? exitCodes.unavailable
          : exitCodes.failed;
    return { line: `error: ${oneLine(err.message)} (${err.code})`, exitCode };
  }
  const message = err instanceof Error ? err.message : String(err);
  return {
    line: `error: ${oneLine(message)}; run with --debug for the stack (INTERNAL)`,
    exitCode: exitCodes.internal,
  };
}

/** Whether stacks are wanted: `--debug` anywhere on the command line, or TRELLIS_DEBUG=1. */
export function debugWanted(argv: readonly string[], env: NodeJS.ProcessEnv): boolean {
  return argv.includes('--debug') || env.TRELLIS_DEBUG === '1' || env.TRELLIS_DEBUG === 'true';
}
