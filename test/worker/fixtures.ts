/** Shared pieces for the worker tests: ids, specs, a driver wrapper that counts calls, a status log. */
import type { NodeId, SandboxId } from '../../src/lib/ids.js';
import type { Driver, MachineSpec } from '../../src/worker/driver.js';
import type { StatusReport } from '../../src/worker/protocol.js';

export const sid = (s: string): SandboxId => s as SandboxId;
export const nid = (s: string): NodeId => s as NodeId;

export function spec(id: string, disk = 64): MachineSpec {
  return { sandboxId: sid(id), resources: { cpu: 500, memory: 128, disk }, image: 'default' };
}

/** Counts each driver operation and the most boots that ever ran at once. */
export interface Counting {
  readonly driver: Driver;
  readonly calls: Record<string, number>;
  bootsNow: number;
  bootsPeak: number;
}

export function counting(inner: Driver): Counting {
  const c: Counting = { driver: inner, calls: {}, bootsNow: 0, bootsPeak: 0 };
  const count = (name: string): void => {
    c.calls[name] = (c.calls[name] ?? 0) + 1;
  };
  const wrapped: Driver = {
    kind: inner.kind,
    capabilities: inner.capabilities,
    execStdinBytesMax: inner.execStdinBytesMax,
    createDisk: (s) => {
      count('createDisk');
      return inner.createDisk(s);
    },
    boot: async (s) => {
      count('boot');
      c.bootsNow++;
      c.bootsPeak = Math.max(c.bootsPeak, c.bootsNow);
      try {
        await inner.boot(s);
      } finally {
        c.bootsNow--;
      }
    },
    exec: (id, r) => {
      count('exec');
      return inner.exec(id, r);
    },
    stop: (id) => {
      count('stop');
      return inner.stop(id);
    },
    destroy: (id) => {
      count('destroy');
      return inner.destroy(id);
    },
    suspend: (id) => {
      count('suspend');
      return inner.suspend(id);
    },
    resume: (id) => {
      count('resume');
      return inner.resume(id);
    },
    list: () => inner.list(),
    close: () => inner.close(),
  };
  (c as { driver: Driver }).driver = wrapped;
  return c;
}

/** A status sink that keeps every batch. */
export function statusLog(): {
  sink: (batch: readonly StatusReport[]) => Promise<void>;
  batches: StatusReport[][];
  states: (id: string) => string[];
} {
  const batches: StatusReport[][] = [];
  return {
    batches,
    sink: async (batch) => {
      batches.push([...batch]);
    },
    states: (id) =>
      batches
        .flat()
        .filter((r) => r.sandboxId === id)
        .map((r) => r.state),
  };
}
