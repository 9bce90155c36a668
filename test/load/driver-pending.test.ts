import { describe, expect, it } from 'vitest';
import type { SchedulerApi } from '../../scheduler/api.js';
import { createScheduler } from '../../scheduler/scheduler.js';
import { drive } from '../../src/load/driver.js';

describe('load driver', () => {
  it('load driver - a create answered pending is asked again with its id, and counted created only once placed', async () => {
    const scheduler = createScheduler();
    // Answer pending after 50 ms, as a replica does before a remote caller's deadline.
    const api = new Proxy(scheduler, {
      get(target, prop) {
        if (prop === 'create')
          return (spec: Parameters<SchedulerApi['create']>[0], o: Parameters<SchedulerApi['create']>[1]) =>
            target.create(spec, { ...o, pendingReplyMs: 50 });
        const v = Reflect.get(target, prop, target) as unknown;
        return typeof v === 'function' ? v.bind(target) : v;
      },
    }) as SchedulerApi;
    // No node has room yet: every create waits, pending; room comes after a few pending answers.
    await scheduler.registerNode({
      id: 'small',
      capacity: { cpu: 100, memory: 4096, disk: 4096 },
      labels: {},
      state: 'ready',
    });
    const room = setTimeout(() => {
      void scheduler.registerNode({
        id: 'big',
        capacity: { cpu: 16_000, memory: 65_536, disk: 65_536 },
        labels: {},
        state: 'ready',
      });
    }, 400);
    try {
      const result = await drive({
        clients: [api],
        sandboxes: 4,
        wait: 'placed',
        exec: false,
        inFlight: { create: 4, exec: 1, terminate: 4 },
        spec: { tenant: 't1', resources: { cpu: 1000, memory: 512, disk: 512 } },
        runId: 'pend',
        retryForMs: 20_000,
      });
      expect(result.failures).toEqual({});
      expect(result.retries['create:SCHED_NOT_RUNNING'] ?? 0).toBeGreaterThan(0);
      expect(result.phases.create.count).toBe(4);
      const acked = [...result.acks.created.values()];
      expect(acked).toEqual(['big', 'big', 'big', 'big']);
    } finally {
      clearTimeout(room);
      await scheduler.close();
    }
  });
});
