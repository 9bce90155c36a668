/**
 * `trellis exec ID [--timeout MS] -- CMD ARGS`: runs a command in a running sandbox, on the node that holds
 * it, and prints its stdout and stderr as they came (or one JSON object with `--json`). The command's exit
 * code becomes this process's: a command ended by a signal exits 128 + the signal's number, as a shell
 * reports it, and one killed at its timeout exits 124, as timeout(1) does.
 *
 * Here `--timeout` bounds the command itself; the call to the cluster gets that plus its own margin. Exec
 * is not idempotent: a call that got no answer ends OUTCOME_UNKNOWN (the command may have run).
 */
import { constants } from 'node:os';
import type { Command } from 'commander';
import type { NodeExecResult } from '../../../scheduler/dispatch.js';
import { execTimeoutMsMax } from '../../../scheduler/limits.js';
import { ValidationError } from '../../lib/errors.js';
import { type OpsFlags, printJson, withClient, withOpsOptions } from './common.js';

/** timeout(1)'s exit code for a command it killed at the deadline. */
export const execTimedOutExitCode = 124;

export function registerExec(program: Command): void {
  withOpsOptions(
    program
      .command('exec')
      .description('run a command in a running sandbox; exits with its exit code')
      .argument('<id>', 'sandbox id')
      .argument('<command...>', 'the program and its arguments (after --)')
      .usage('[options] <id> -- <command...>'),
  ).action(async (id: string, command: string[], o: OpsFlags) => {
    if (o.timeout > execTimeoutMsMax)
      throw new ValidationError('timeout', `an exec runs at most ${execTimeoutMsMax} ms, got ${o.timeout}`);
    const result = await withClient(o, (c) => c.exec(id, command, { timeoutMs: o.timeout }));
    if (o.json === true) printJson(execJson(result));
    else {
      process.stdout.write(result.stdout);
      process.stderr.write(result.stderr);
    }
    process.exitCode = exitCodeOf(result);
  });
}

export function exitCodeOf(r: NodeExecResult): number {
  if (r.timedOut) return execTimedOutExitCode;
  if (r.exitCode !== null) return r.exitCode;
  const signo = r.signal === null ? undefined : (constants.signals as Record<string, number>)[r.signal];
  return signo === undefined ? 1 : 128 + signo;
}

function execJson(r: NodeExecResult): Record<string, unknown> {
  const text = (b: Uint8Array): string => Buffer.from(b).toString('utf8');
  return {
    exitCode: r.exitCode,
    signal: r.signal,
    stdout: text(r.stdout),
    stderr: text(r.stderr),
    stdoutTruncated: r.stdoutTruncated,
    stderrTruncated: r.stderrTruncated,
    timedOut: r.timedOut,
  };
}
