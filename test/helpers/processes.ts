import { readFileSync } from 'node:fs';

/** The process state letter from /proc (R, S, T for stopped, Z for a zombie...), or undefined when it is gone. */
export function procState(pid: number): string | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // The command name in parentheses may hold spaces or parentheses: the state follows the last ')'.
  const close = stat.lastIndexOf(')');
  return stat.slice(close + 2, close + 3);
}

/**
 * A process counts as alive while it exists and is not a zombie: a machine orphaned by a killed worker is
 * reparented to PID 1, which in a container may never reap it, so its exit shows only as state Z
 * (`process.kill(pid, 0)` would call that zombie alive).
 */
export function alive(pid: number): boolean {
  const state = procState(pid);
  return state !== undefined && state !== 'Z';
}
