/**
 * demo - `npm start`'s cluster demo on a small scale: 3 in-process Raft replicas with simulated workers, 400
 * sandboxes through create → running → exec → terminate with a leadership move halfway. Every sandbox must
 * either run (and then exec and terminate) or fail for a reason the demo provokes on purpose — the sim driver's
 * injected failures, the quota, capacity and constraints, the malformed specs — and the replicas must agree at the end. Before the wait
 * for running read a lagging replica's state as "terminated", half the sandboxes after the move failed here.
 */
import { describe, expect, it } from 'vitest';
import { runClusterDemo } from '../../src/demo/cluster-demo.js';

describe('demo - cluster demo', () => {
  it('demo - every sandbox runs or fails for a provoked reason, through a leader change', async () => {
    let text = '';
    const r = await runClusterDemo({
      nodes: 20,
      sandboxes: 400,
      progress: false,
      out: { write: (t: string) => (text += t) },
    });
    expect(r.leaderChanges, text).toBe(1);
    expect(r.replicasEqual, text).toBe(true);
    expect(r.running, text).toBeGreaterThan(0);
    expect(r.execd, text).toBe(r.running);
    const failed = Object.values(r.failed).reduce((a, b) => a + b, 0);
    expect(r.running + failed, text).toBe(400);
    for (const why of Object.keys(r.failed))
      expect(why, text).toMatch(/simulated|QuotaExceeded|NoCapacity|Validation/);
    expect(text).toContain('where to look next');
  }, 120_000);
});
