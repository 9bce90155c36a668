/**
 * A node's list finds a leaving sandbox by a tag (a 30-bit hash of its id) and then the id itself (NodeList in
 * scheduler/core/state.ts). Two ids with one tag must still be told apart: these tests find such a pair and
 * remove each from a list holding both, directly and through `place` and `status` entries.
 */
import { describe, expect, it } from 'vitest';
import type { Command } from '../../scheduler/commands.js';
import { applyCommand, idTag, NodeLists, SchedulerState } from '../../scheduler/state.js';
import { node, placeCmd, run, spec } from './fixtures.js';

/** Two distinct ids with the same tag (a birthday search: ~100,000 ids give a few pairs of 2^30 tags). */
function collidingIds(): [string, string] {
  const byTag = new Map<number, string>();
  for (let i = 0; ; i++) {
    const id = `s${i}`;
    const tag = idTag(id);
    const other = byTag.get(tag);
    if (other !== undefined) return [other, id];
    byTag.set(tag, id);
    expect(i, 'a tag collision within 2^20 ids').toBeLessThan(1 << 20);
  }
}

describe('node list tags', () => {
  const [a, b] = collidingIds();

  it('node list tags - two ids with one tag are told apart on removal', () => {
    expect(a).not.toBe(b);
    expect(idTag(a)).toBe(idTag(b));
    for (const [gone, kept] of [
      [a, b],
      [b, a],
    ] as const) {
      const lists = NodeLists.of(new Map([['n1', ['x', a, b, 'y']]]));
      lists.replay(['n1'], [gone], [-1]);
      expect(lists.get('n1')).toEqual(['x', kept, 'y']);
      lists.replay(['n1', 'n1', 'n1'], [kept, 'x', 'y'], [-1, -1, -1]);
      expect(lists.get('n1')).toBeUndefined();
    }
  });

  it('node list tags - a sandbox that ends leaves its node, not the one sharing its tag', () => {
    for (const [gone, kept] of [
      [a, b],
      [b, a],
    ] as const) {
      let { state } = run([
        { type: 'node.register', atMs: 0, spec: node('n1', 8000, 8192) },
        placeCmd([
          [a, spec(), 'n1'],
          [b, spec(), 'n1'],
        ]),
      ]);
      const end: Command = { type: 'status', atMs: 2, items: [{ sandboxId: gone, state: 'terminated' }] };
      state = applyCommand(state, end, state.applied + 1).state;
      expect([...state.sandboxesOfNode('n1')]).toEqual([kept]);
      expect(state.sandbox(kept)?.state).toBe('placed');
      // The same as a version that builds its lists from its records.
      const rebuilt = SchedulerState.fromData({ ...state.data(), byNode: undefined });
      expect([...rebuilt.sandboxesOfNode('n1')]).toEqual([kept]);
    }
  });
});
