/**
 * Runs the built `trellis` CLI (dist/src/cli/main.js) as a child process with a bounded timeout and
 * collects what it printed, for tests that check the command as a person meets it.
 */
import { spawn } from 'node:child_process';
import { cliMain } from '../../src/testing/replica-process.js';

export interface CliRun {
  readonly code: number | null;
  /** Set when the run was killed, by the timeout or otherwise. */
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly timedOut: boolean;
}

/**
 * Longest a CLI invocation in these tests may take before it counts as a hang and is killed. Generous: an
 * invocation takes half a second on an idle machine, but over 20 s was seen on 2 cores at load 26.
 */
export const cliRunMsMax = 60_000;

export function runCli(
  args: readonly string[],
  options: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [cliMain, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, TRELLIS_LOG_LEVEL: 'warn', TRELLIS_DEBUG: '', ...options.env },
    });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString('utf8');
    });
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString('utf8');
    });
    const timer = setTimeout(() => {
      if (child.exitCode !== null || child.signalCode !== null) return; // exited; 'close' is on its way
      timedOut = true;
      child.kill('SIGKILL');
    }, options.timeoutMs ?? cliRunMsMax);
    child.once('error', reject);
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, timedOut });
    });
  });
}

/** The shape every failure must have: exactly one line, `error: <message> (<CODE>)`, and no stack frame. */
export const errorLine = /^error: .+ \(([A-Z][A-Z_]*)\)$/;
export const stackFrame = /^\s+at /m;
