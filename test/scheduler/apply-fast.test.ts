import { OrderedMap } from 'immutable';
import { describe, expect, it } from 'vitest';
import { SlotTable } from '../../scheduler/core/slot-table.js';
import { oweCleanupIn, withCleanup } from '../../scheduler/core/state.js';
import { createRng } from '../../src/lib/prng.js';

describe('scheduler state - fast apply paths keep the rules of the slow ones', () => {
  it('scheduler state - cleanups in a slot table keep exactly what the OrderedMap rule keeps', () => {
    // The state keeps its cleanups in a SlotTable (O(1) eviction of the oldest); the kept debts and their
    // order must be those of withCleanup, the OrderedMap rule older replicas and snapshots followed.
    for (const seed of [1, 2, 3]) {
      const rng = createRng(seed);
      const max = 16;
      let model = OrderedMap<string, string>();
      let table = SlotTable.empty<string>();
      for (let step = 0; step < 300; step++) {
        const draft = table.edit();
        for (let i = rng.int(1, 6); i > 0; i--) {
          const id = `s${rng.int(0, 60)}`;
          const node = `n${rng.int(0, 4)}`;
          model = withCleanup(model, id, node, max);
          oweCleanupIn(draft, id, node, max);
        }
        table = draft.publish();
        expect(JSON.stringify([...table]), `seed ${seed}, step ${step}`).toBe(JSON.stringify([...model]));
      }
    }
  });
});
