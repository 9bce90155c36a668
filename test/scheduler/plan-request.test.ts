/**
 * The planner builds a plain spec's placement request directly (no conditional spreads); it must be the very
 * request `placementRequestOf` builds, for plain specs and for specs with each optional field placement reads.
 */
import { describe, expect, it } from 'vitest';
import { placementRequestOf } from '../../scheduler/admission.js';
import type { SandboxSpec } from '../../scheduler/commands.js';
import { requestOf } from '../../scheduler/core/plan.js';
import { spec } from './fixtures.js';

const specs: [string, SandboxSpec][] = [
  ['plain', spec('t1', 1000, 2048)],
  [
    'fields placement ignores',
    spec('t2', 500, 512, { stateless: true, resumePolicy: 'move', labels: { a: 'b' } }),
  ],
  ['gpu', spec('t1', 1000, 1024, { gpu: { count: 1, model: 'A100' } })],
  ['fractional gpu', spec('t1', 1000, 1024, { gpu: { milli: 500 } })],
  ['priority', spec('t1', 1000, 1024, { priority: 5 })],
  ['constraints', spec('t1', 1000, 1024, { constraints: [{ label: 'zone', op: 'in', values: ['a'] }] })],
  ['anti-affinity', spec('t1', 1000, 1024, { antiAffinity: { group: 'g', maxPerNode: 1 } })],
  ['spread', spec('t1', 1000, 1024, { spread: { label: 'zone', maxSkew: 1 } })],
  ['image', spec('t1', 1000, 1024, { image: 'img-1' })],
  ['strategy', spec('t1', 1000, 1024, { strategy: 'spread' })],
];

describe('scheduler planner requests', () => {
  it('plan - the planner builds the same placement request as placementRequestOf, plain spec or not', () => {
    for (const [name, s] of specs) {
      const mine = requestOf({ requestId: `r-${name}`, spec: s });
      const theirs = placementRequestOf(`r-${name}`, s);
      expect(mine, name).toEqual(theirs);
      // Same keys in the same order: placement may iterate a request's fields.
      expect(Object.keys(mine), name).toEqual(Object.keys(theirs));
    }
  });
});
