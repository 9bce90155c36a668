/**
 * Server processes a benchmark starts (etcd members, replicas): spawned here with their output kept in a
 * short tail for failure messages, or adopted when started elsewhere; stopped with SIGTERM (SIGKILL after a
 * grace period), and killed when the benchmark exits any other way. `onInterrupt` runs a cleanup on SIGINT/SIGTERM before exiting.
 */
import { type ChildProcess, spawn } from 'node:child_process';

const live = new Set<ChildProcess>();
process.once('exit', () => {
  // 'exit' handlers can only do synchronous work: a crashed benchmark must not leave servers behind.
  for (const child of live) child.kill('SIGKILL');
});

export interface Child {
  readonly name: string;
  readonly process: ChildProcess;
  /** The last chunks the process printed. */
  readonly tail: readonly string[];
}

export function spawnChild(
  name: string,
  bin: string,
  args: readonly string[],
  env: NodeJS.ProcessEnv = process.env,
): Child {
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
  live.add(child);
  const tail: string[] = [];
  const keep = (chunk: Buffer): void => {
    tail.push(chunk.toString('utf8'));
    if (tail.length > 40) tail.shift();
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  child.once('exit', () => live.delete(child));
  return { name, process: child, tail };
}

/** Tracks a process started elsewhere (e.g. by `spawnReplica`), so it is killed if the benchmark dies. */
export function adoptChild(name: string, child: ChildProcess): Child {
  live.add(child);
  child.once('exit', () => live.delete(child));
  return { name, process: child, tail: [] };
}

export function exited(child: Child): boolean {
  return child.process.exitCode !== null || child.process.signalCode !== null;
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves once the process is gone. */
export async function stopChild(child: Child, graceMs = 5_000): Promise<void> {
  if (exited(child)) return;
  const gone = new Promise<void>((resolve) => child.process.once('exit', () => resolve()));
  child.process.kill('SIGTERM');
  const timer = setTimeout(() => child.process.kill('SIGKILL'), graceMs);
  await gone;
  clearTimeout(timer);
}

/** Throws with the child's last output when it has exited. */
export function assertRunning(child: Child): void {
  if (!exited(child)) return;
  throw new Error(
    `${child.name} exited (code ${child.process.exitCode}, signal ${child.process.signalCode}):\n${child.tail.join('').slice(-2_000)}`,
  );
}

/** On SIGINT or SIGTERM: run `cleanup` once, then exit with 130. */
export function onInterrupt(cleanup: () => Promise<void>): void {
  let running = false;
  const handler = (): void => {
    if (running) return;
    running = true;
    console.error('interrupted: stopping servers');
    void cleanup()
      .catch((err: unknown) => console.error(`cleanup failed: ${String(err)}`))
      .finally(() => process.exit(130));
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
}
