/**
 * Shared pieces of the gateway tests: reading streams back, waiting on a condition with a bound, and the
 * committed events of a replica as the reference the events stream is compared with.
 */
import type { Redis } from 'ioredis';
import type { SchedulerStateMachine } from '../../scheduler/state-machine.js';
import type { SchedulerEvent } from '../../scheduler/types.js';

export interface Fields {
  readonly [name: string]: string;
}

/** Every entry of `stream`, oldest first, read in pages. */
export async function readAll(redis: Redis, stream: string): Promise<[string, Fields][]> {
  const out: [string, Fields][] = [];
  let start = '-';
  for (;;) {
    const page = (await redis.xrange(stream, start, '+', 'COUNT', 5_000)) as [string, string[]][];
    for (const [id, flat] of page) {
      const f: Record<string, string> = {};
      for (let i = 0; i + 1 < flat.length; i += 2) f[flat[i] as string] = flat[i + 1] as string;
      out.push([id, f]);
    }
    if (page.length < 5_000) return out;
    start = `(${(page[page.length - 1] as [string, string[]])[0]}`;
  }
}

/** Resolves once `check()` holds; throws with `what` (and the last value seen) after `timeoutMs`. */
export async function waitFor<T>(
  what: string,
  probe: () => Promise<T>,
  check: (value: T) => boolean,
  timeoutMs = 60_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (check(value)) return value;
    if (Date.now() > deadline)
      throw new Error(`timed out waiting for ${what}; last: ${JSON.stringify(value).slice(0, 500)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * The committed events a state machine applies from now on, each with its stream id (`index-n`); a replay
 * after a restart (indexes already seen) is skipped, as `Scheduler.watch()` does.
 */
export function collectEvents(machine: SchedulerStateMachine): {
  readonly events: { id: string; event: SchedulerEvent }[];
  off(): void;
} {
  const events: { id: string; event: SchedulerEvent }[] = [];
  let seen = machine.state.applied;
  const off = machine.onApply(({ events: es }, entry) => {
    if (entry.index <= seen) return;
    seen = entry.index;
    es.forEach((event, n) => {
      events.push({ id: `${entry.index}-${n}`, event });
    });
  });
  return { events, off };
}

export const nodeSpec = (id: string) => ({
  id,
  capacity: { cpu: 10_000_000, memory: 10_000_000, disk: 100_000_000 },
  labels: {},
  state: 'ready' as const,
});

export const sandboxSpec = { tenant: 't1', resources: { cpu: 10, memory: 10, disk: 10 } };
