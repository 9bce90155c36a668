import { describe, expect, it } from 'vitest';
import { Deadline, deadlineBudgetMsMax, deadlineWireSchema } from '../../src/lib/deadline.js';
import { DeadlineExceededError } from '../../src/lib/errors.js';

describe('lib/deadline', () => {
  it('lib/deadline - a hop keeps the earlier of the absolute deadline and the re-based budget', () => {
    // Sender at t=1000 with 500 ms. A receiver whose clock is 300 ms behind would, by the absolute time
    // alone, allow 800 ms; the budget caps it at 500. A receiver that got it after a 2 s stall (its clock
    // past the absolute deadline) finds it expired although the budget alone would look fresh.
    let senderNow = 1_000;
    const sent = Deadline.after(500, () => senderNow).toWire();
    expect(sent).toEqual({ atMs: 1_500, budgetMs: 500 });
    let behind = 700;
    const lagging = Deadline.received(sent, () => behind);
    expect(lagging.atMs).toBe(1_200);
    behind = 1_199;
    expect(lagging.expired()).toBe(false);
    behind = 1_200;
    expect(lagging.expired()).toBe(true);
    const stalled = Deadline.received(sent, () => 3_000);
    expect(stalled.expired()).toBe(true);
    expect(() => stalled.check('put k')).toThrow(DeadlineExceededError);
    senderNow = 1_400;
    const d = Deadline.after(500, () => senderNow);
    senderNow = 1_650;
    expect(d.toWire()).toEqual({ atMs: 1_900, budgetMs: 250 });
  });

  it('lib/deadline - the wire form is validated and the budget is bounded', () => {
    expect(deadlineWireSchema.safeParse({ atMs: 1, budgetMs: -1 }).success).toBe(false);
    expect(deadlineWireSchema.safeParse({ atMs: 1.5, budgetMs: 1 }).success).toBe(false);
    expect(deadlineWireSchema.safeParse({ atMs: 1, budgetMs: deadlineBudgetMsMax + 1 }).success).toBe(false);
    expect(Deadline.after(deadlineBudgetMsMax * 2, () => 0).atMs).toBe(deadlineBudgetMsMax);
  });
});
