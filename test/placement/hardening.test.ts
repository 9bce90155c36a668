/**
 * Issue 11, item 4: the placement bugs an independent brute-force checker found, one `describe` per sub-item.
 * Each example reproduces the reported case; the properties at the end would have found them from random
 * input (prototype-named labels and GPU model `*` are in the generators of fixtures.ts).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  bucketCount,
  ClusterIndex,
  dominantShare,
  type IndexBuilder,
  type NodeSpec,
  type PlacementRequest,
  type Plan,
  planBatch,
  referencePlace,
  spreadKey,
} from '../../placement/index.js';
import { passMaskOf } from '../../placement/stages/pass-mask.js';
import { BatchCache, compileRequest } from '../../placement/stages/request.js';
import { binpackScorers } from '../../placement/stages/score-binpack.js';
import { TrellisError, ValidationError } from '../../src/lib/errors.js';
import { createRng, smallBatch, smallCluster } from './fixtures.js';
import { checkPlan, holds } from './oracle.js';

const ready = (id: string, cpu: number, labels: Record<string, string> = {}): NodeSpec => ({
  id,
  capacity: { cpu, memory: 100_000, disk: 100_000 },
  labels,
  state: 'ready',
});
const req = (id: string, cpu: number, extra: Partial<PlacementRequest> = {}): PlacementRequest => ({
  id,
  tenant: 't',
  resources: { cpu, memory: 1, disk: 1 },
  ...extra,
});

function views(index: ClusterIndex | IndexBuilder): unknown {
  return { nodes: [...index.nodes()], cap: index.readyCapacity, alloc: index.readyAllocated };
}

describe('placement/hardening - 1. reused rejections carry the numbers of the cluster they meet', () => {
  it('placement/hardening - a rejection repeated after a placement reports the shortfall left by that placement', () => {
    // The reported case: node a has 4000 mcpu; r1 (5000) is rejected, r2 (3000) is placed, r3 (5000) must
    // report a 4000 shortfall (1000 left), not r1's 1000.
    const index = ClusterIndex.of([ready('a', 4000)]);
    const plan = planBatch(index, [
      req('r1', 5000, { priority: 0 }),
      req('r2', 3000, { priority: -1 }),
      req('r3', 5000, { priority: -2 }),
    ]);
    const byId = new Map(plan.rejections.map((r) => [r.requestId, r]));
    expect(byId.get('r1')?.closest?.shortfall).toEqual({ cpu: 1000 });
    expect(byId.get('r3')?.closest?.shortfall).toEqual({ cpu: 4000 });
    expect(byId.get('r3')?.message).toContain('lacking 4000 millicores cpu');
  });

  it('placement/hardening - every rejection in a batch is true of the cluster as placed so far', () => {
    // Replays each plan in its order: before each rejected request, recomputes from the specs and the
    // placements so far how many nodes were short of each resource, and the closest node's shortfall.
    fc.assert(
      fc.property(fc.integer(), fc.integer({ min: 1, max: 12 }), (seed, n) => {
        const rng = createRng(seed);
        const nodes = smallCluster(rng, n).map((s) => ({ ...s, state: 'ready' as const }));
        // No group rules: those requests are always diagnosed afresh; this checks the reuse path.
        const requests = smallBatch(rng, 60, n).map(
          ({ spread: _s, antiAffinity: _a, pinnedNode: _p, ...r }) => r,
        );
        const plan = planBatch(ClusterIndex.of(nodes), requests, { seed });
        checkRejectionsAsPlaced(nodes, requests, plan);
      }),
      { numRuns: 60 },
    );
  });
});

/** Free resources per node after the placements of `plan` that come before each request in plan order. */
function checkRejectionsAsPlaced(
  nodes: readonly NodeSpec[],
  requests: readonly PlacementRequest[],
  plan: Plan,
): void {
  const reqById = new Map(requests.map((r) => [r.id, r]));
  const placedOn = new Map(plan.placements.map((p) => [p.requestId, p]));
  const rejected = new Map(plan.rejections.map((r) => [r.requestId, r]));
  const free = new Map(nodes.map((s) => [s.id, { ...s.capacity }]));
  const gpuFree = new Map(nodes.map((s) => [s.id, new Array<number>(s.gpu?.count ?? 0).fill(1000)]));
  for (const id of plan.order) {
    const r = reqById.get(id) as PlacementRequest;
    const p = placedOn.get(id);
    if (p !== undefined) {
      const f = free.get(p.nodeId) as { cpu: number; memory: number; disk: number };
      f.cpu -= r.resources.cpu;
      f.memory -= r.resources.memory;
      f.disk -= r.resources.disk;
      const g = gpuFree.get(p.nodeId) as number[];
      for (const d of p.gpuDevices) g[d.device] = (g[d.device] ?? 0) - d.milli;
      continue;
    }
    const rej = rejected.get(id);
    if (rej === undefined) throw new Error(`${id} has no outcome`);
    const short = { cpu: 0, memory: 0, disk: 0, gpu: 0 };
    let resources = 0;
    for (const s of nodes) {
      if (
        r.gpu !== undefined &&
        (s.gpu === undefined || (r.gpu.model !== undefined && r.gpu.model !== s.gpu.model))
      )
        continue;
      if (!(r.constraints ?? []).every((c) => holds(c, s.labels))) continue;
      const f = free.get(s.id) as { cpu: number; memory: number; disk: number };
      const g = gpuFree.get(s.id) as number[];
      const lacks = {
        cpu: r.resources.cpu > f.cpu,
        memory: r.resources.memory > f.memory,
        disk: r.resources.disk > f.disk,
        gpu:
          r.gpu !== undefined &&
          (r.gpu.count !== undefined
            ? g.filter((x) => x === 1000).length < r.gpu.count
            : !g.some((x) => x >= (r.gpu?.milli ?? 0))),
      };
      expect(Object.values(lacks).some(Boolean), `${id} rejected but fits on ${s.id}`).toBe(true);
      resources++;
      for (const k of ['cpu', 'memory', 'disk', 'gpu'] as const) if (lacks[k]) short[k]++;
    }
    expect(rej.filtered.resources, `${id}: ${rej.message}`).toBe(resources);
    expect(rej.shortOf, `${id}: ${rej.message}`).toEqual(short);
    if (rej.closest !== undefined) {
      const f = free.get(rej.closest.nodeId) as { cpu: number; memory: number; disk: number };
      for (const k of ['cpu', 'memory', 'disk'] as const) {
        const lack = rej.closest.shortfall[k];
        if (lack !== undefined) expect(lack, `${id} closest ${k}`).toBe(r.resources[k] - f[k]);
      }
    }
  }
}

describe('placement/hardening - 2. GPU model "*" is a model name, and facts never leak between signatures', () => {
  const gpuNode: NodeSpec = {
    id: 'g1',
    capacity: { cpu: 8000, memory: 8192, disk: 8192 },
    gpu: { model: 'a100', count: 2 },
    labels: {},
    state: 'ready',
  };

  it('placement/hardening - a rejected model "*" request does not reject a no-model request, now or in later batches', () => {
    // `*` names no node's model here, so the first request is rejected; the one without a model fits on
    // the a100 node in the same batch, in a later batch on the plan's index, and on the original snapshot.
    const index = ClusterIndex.of([gpuNode]);
    const star = req('star', 100, { priority: 5, gpu: { milli: 100, model: '*' } });
    const plain = req('plain', 100, { gpu: { milli: 100 } });
    const first = planBatch(index, [star, plain]);
    expect(first.rejections.map((r) => r.requestId)).toEqual(['star']);
    expect(first.placements.map((p) => p.requestId)).toEqual(['plain']);
    const later = planBatch(first.index, [{ ...plain, id: 'plain2' }]);
    expect(later.placements.map((p) => p.nodeId)).toEqual(['g1']);
    expect(planBatch(index, [{ ...plain, id: 'plain3' }]).placements).toHaveLength(1);
  });

  it('placement/hardening - a no-model request first does not let a model "*" request onto other models', () => {
    // The other order: the no-model verdict (passes) must not be read for `*` (fails on a100).
    const index = ClusterIndex.of([gpuNode]);
    const plan = planBatch(index, [
      req('plain', 100, { priority: 5, gpu: { milli: 100 } }),
      req('star', 100, { gpu: { milli: 100, model: '*' } }),
    ]);
    expect(plan.placements.map((p) => p.requestId)).toEqual(['plain']);
    expect(plan.rejections[0]?.constraint).toBe('gpu model = *');
  });

  it('placement/hardening - a node whose model is "*" serves "*" requests and no-model requests', () => {
    const index = ClusterIndex.of([{ ...gpuNode, gpu: { model: '*', count: 1 } }]);
    const plan = planBatch(index, [
      req('star', 100, { gpu: { milli: 100, model: '*' } }),
      req('plain', 100, { gpu: { milli: 100 } }),
      req('a100', 100, { gpu: { milli: 100, model: 'a100' } }),
    ]);
    expect(plan.placements.map((p) => p.requestId).sort()).toEqual(['plain', 'star']);
    expect(plan.rejections.map((r) => r.requestId)).toEqual(['a100']);
  });
});

describe('placement/hardening - 2b. constraint signatures are told apart field by field', () => {
  // Class verdicts are shared per constraint signature across batches on one class membership, found by a
  // hash of the signature and a field-by-field check; these signatures differ where a careless key would not.
  const nodes = [
    ready('ab', 8000, { a: 'b', c: 'x' }),
    ready('abc', 8000, { a: 'bc' }),
    ready('cx', 8000, { c: 'x', z: 'q' }),
    ready('yx', 8000, { v: 'y' }),
  ];
  const cases: { readonly constraints: PlacementRequest['constraints']; readonly on: string[] }[] = [
    { constraints: [{ label: 'a', op: 'eq', value: 'bc' }], on: ['abc'] },
    {
      constraints: [
        { label: 'a', op: 'eq', value: 'b' },
        { label: 'c', op: 'eq', value: 'x' },
      ],
      on: ['ab'],
    },
    { constraints: [{ label: 'a', op: 'in', values: ['bc'] }], on: ['abc'] },
    { constraints: [{ label: 'a', op: 'notIn', values: ['bc'] }], on: ['ab', 'cx', 'yx'] },
    { constraints: [{ label: 'a', op: 'in', values: ['b', 'c'] }], on: ['ab'] },
    { constraints: [{ label: 'a', op: 'in', values: ['bc', 'x'] }], on: ['abc'] },
    { constraints: [{ label: 'c', op: 'exists' }], on: ['ab', 'cx'] },
    { constraints: [{ label: 'z', op: 'exists' }], on: ['cx'] },
    { constraints: [{ label: 'v', op: 'eq', value: 'y' }], on: ['yx'] },
  ];

  it('placement/hardening - each signature in one batch lands only on the nodes it admits', () => {
    // Every request takes a whole node, so each of its placements names a node its constraints admit.
    const index = ClusterIndex.of(nodes);
    for (let round = 0; round < 2; round++) {
      const plan = planBatch(
        index,
        cases.map((c, i) => req(`r${i}`, 8000, { constraints: c.constraints ?? [] })),
      );
      for (const p of plan.placements) {
        const i = Number(p.requestId.slice(1));
        expect(cases[i]?.on, `${p.requestId} on ${p.nodeId}`).toContain(p.nodeId);
      }
    }
    for (const [i, c] of cases.entries()) {
      const alone = planBatch(index, [req(`alone${i}`, 1, { constraints: c.constraints ?? [] })]);
      expect(alone.placements.map((p) => p.nodeId)).toEqual([c.on[0]]);
    }
  });
});

describe('placement/hardening - 3. labels named like Object.prototype members are ordinary labels', () => {
  const names = ['constructor', 'toString', '__proto__', 'hasOwnProperty', 'valueOf'];

  it('placement/hardening - a node without such a label fails "exists", "in" and spread on it', () => {
    // The node has only a zone: each prototype-named constraint must rule it out, and a spread on such a
    // label finds no eligible node.
    const index = ClusterIndex.of([ready('n1', 8000, { zone: 'a' })]);
    for (const name of names) {
      const exists = planBatch(index, [req('e', 1, { constraints: [{ label: name, op: 'exists' }] })]);
      expect(exists.placements, name).toHaveLength(0);
      expect(exists.rejections[0]?.code).toBe('constraint');
      const notIn = planBatch(index, [
        req('n', 1, { constraints: [{ label: name, op: 'notIn', values: ['x'] }] }),
      ]);
      expect(notIn.placements, name).toHaveLength(1);
      const spread = planBatch(index, [req('s', 1, { spread: { label: name, maxSkew: 1 } })]);
      expect(spread.placements, name).toHaveLength(0);
    }
  });

  it('placement/hardening - a node that has such a label (as JSON gives it) matches it and spreads on it', () => {
    // JSON.parse makes `__proto__` an own key; the index must keep it as a label like any other.
    const labels = JSON.parse('{"__proto__":"x","constructor":"y","zone":"a"}') as Record<string, string>;
    const index = ClusterIndex.of([ready('n1', 8000, labels), ready('n2', 8000, { zone: 'b' })]);
    expect(Object.getOwnPropertyDescriptor(index.get('n1')?.spec.labels, '__proto__')?.value).toBe('x');
    const plan = planBatch(index, [
      req('p', 1, { constraints: [{ label: '__proto__', op: 'eq', value: 'x' }] }),
      req('c', 1, { constraints: [{ label: 'constructor', op: 'in', values: ['y'] }] }),
      req('s', 1, { spread: { label: '__proto__', maxSkew: 1, group: 'g' } }),
    ]);
    expect(plan.placements.map((p) => p.nodeId)).toEqual(['n1', 'n1', 'n1']);
    expect(plan.index.spreadCounts('g', '__proto__').get('x')).toBe(1);
  });

  it('placement/hardening - labels holding separators never merge two nodes into one class', () => {
    // `a=b: c` and `a: b=c` once shared a feasibility class (labels were joined with "="), so a constraint
    // on `a` was judged on the wrong node's labels; spread counters likewise joined group and label.
    const index = ClusterIndex.of([ready('n1', 8000, { 'a=b': 'c' }), ready('n2', 8000, { a: 'b=c' })]);
    const plan = planBatch(index, [req('r', 1, { constraints: [{ label: 'a', op: 'eq', value: 'b=c' }] })]);
    expect(plan.placements.map((p) => p.nodeId)).toEqual(['n2']);
    expect(spreadKey('g\u0000x', 'y')).not.toBe(spreadKey('g', 'x\u0000y'));
  });
});

describe('placement/hardening - 4. the index keeps its own copy of every spec', () => {
  it('placement/hardening - mutating a spec after ClusterIndex.of, registerNode or updateNode changes nothing', () => {
    // Each spec object is changed in place after the index took it; views and placements must not move.
    const spec = {
      id: 'n1',
      capacity: { cpu: 1000, memory: 1000, disk: 1000 },
      labels: { zone: 'a' } as Record<string, string>,
      state: 'ready' as NodeSpec['state'],
      images: ['img1'],
    };
    const index = ClusterIndex.of([spec]);
    const second = { ...spec, id: 'n2', labels: { zone: 'b' } as Record<string, string>, images: ['img2'] };
    const updated = { ...spec, id: 'n1', capacity: { cpu: 2000, memory: 1000, disk: 1000 } };
    const next = index.edit().registerNode(second).updateNode(updated).publish();
    const before = [views(index), views(next)];
    spec.capacity.cpu = 999_999;
    spec.labels.zone = 'z';
    spec.images.push('img9');
    spec.state = 'down';
    second.labels.zone = 'z';
    updated.capacity.cpu = 999_999;
    expect([views(index), views(next)]).toEqual(before);
    const plan = planBatch(next, [
      req('r', 1500, { constraints: [{ label: 'zone', op: 'eq', value: 'a' }] }),
    ]);
    expect(plan.placements.map((p) => p.nodeId)).toEqual(['n1']);
    expect(Object.isFrozen(next.get('n1')?.spec.labels)).toBe(true);
  });
});

describe('placement/hardening - 5. plan options are validated', () => {
  it('placement/hardening - bad limits, unknown strategy or scorer names and non-integer seeds are typed errors', () => {
    // A candidate limit of 0 used to stop the walk before its first node and reject a request that fits.
    const index = ClusterIndex.of(Array.from({ length: 100 }, (_, i) => ready(`n${i}`, 1000)));
    const r = [req('r', 1)];
    const bad: unknown[] = [
      null,
      'binpack',
      { limits: { candidateLimit: 0 } },
      { limits: { candidateLimit: -1 } },
      { limits: { candidateLimit: Number.NaN } },
      { limits: { candidateLimit: 1.5 } },
      { limits: { visitAfterFirstMax: -1 } },
      { limits: { selectiveRatio: 0 } },
      { limits: { candidatelimit: 8 } },
      { limits: null },
      { strategy: 'bogus' },
      { strategy: null },
      { binpackScorer: 'bogus' },
      { seed: Number.NaN },
      { seed: 1.5 },
      { seed: '1' },
      { seed: Number.POSITIVE_INFINITY },
    ];
    for (const options of bad) {
      expect(() => planBatch(index, r, options as never), JSON.stringify(options)).toThrow(ValidationError);
    }
    expect(
      planBatch(index, r, { limits: { candidateLimit: 1, visitAfterFirstMax: 0 } }).placements,
    ).toHaveLength(1);
  });
});

describe('placement/hardening - 6. malformed input is a ValidationError, never a TypeError', () => {
  const okNode = ready('n1', 1000, { zone: 'a' });
  const okReq = req('r', 1);

  it('placement/hardening - null and wrongly typed node fields are refused with ValidationError', () => {
    const bad: unknown[] = [
      null,
      'n1',
      { ...okNode, labels: null },
      { ...okNode, labels: ['a'] },
      { ...okNode, labels: { zone: 5 } },
      { ...okNode, gpu: null },
      { ...okNode, gpu: { model: 'a100', count: '2' } },
      { ...okNode, images: 'img' },
      { ...okNode, images: [null] },
      { ...okNode, capacity: null },
      { ...okNode, capacity: { cpu: 1, memory: 1 } },
      { ...okNode, state: null },
      { ...okNode, id: null },
    ];
    for (const spec of bad) {
      expect(() => ClusterIndex.of([spec as NodeSpec]), JSON.stringify(spec)).toThrow(ValidationError);
    }
  });

  it('placement/hardening - null and wrongly typed request fields and batches are refused with ValidationError', () => {
    const index = ClusterIndex.of([okNode]);
    const before = views(index);
    const bad: unknown[] = [
      null,
      7,
      { ...okReq, resources: null },
      { ...okReq, gpu: null },
      { ...okReq, gpu: 'a100' },
      { ...okReq, constraints: null },
      { ...okReq, constraints: [null] },
      { ...okReq, constraints: { label: 'zone', op: 'exists' } },
      { ...okReq, constraints: [{ label: 'zone', op: 'in', values: 'a' }] },
      { ...okReq, preferences: null },
      { ...okReq, preferences: [null] },
      { ...okReq, preferences: [{ constraint: null, weight: 1 }] },
      { ...okReq, spread: null },
      { ...okReq, spread: { label: 'zone', maxSkew: Number.POSITIVE_INFINITY } },
      { ...okReq, antiAffinity: null },
      { ...okReq, priority: null },
      { ...okReq, imageId: null },
      { ...okReq, pinnedNode: null },
      { ...okReq, strategy: null },
    ];
    for (const r of bad) {
      expect(() => planBatch(index, [req('other', 1), r as PlacementRequest]), JSON.stringify(r)).toThrow(
        ValidationError,
      );
    }
    expect(() => planBatch(index, null as never)).toThrow(ValidationError);
    expect(() => planBatch(index, 'r' as never)).toThrow(ValidationError);
    expect(() => planBatch(null as never, [okReq])).toThrow(ValidationError);
    expect(() => planBatch({} as never, [okReq])).toThrow(ValidationError);
    expect(views(index)).toEqual(before);
  });

  it('placement/hardening - any value in any request field is placed or refused with ValidationError', () => {
    // Replaces one field of a valid request (or of one of its rules) with an arbitrary value.
    const index = ClusterIndex.of(smallCluster(createRng(1), 20));
    const fields = ['id', 'tenant', 'resources', 'gpu', 'priority', 'constraints', 'preferences', 'spread'];
    const more = ['antiAffinity', 'imageId', 'pinnedNode', 'strategy'];
    fc.assert(
      fc.property(fc.constantFrom(...fields, ...more), fc.anything(), fc.integer(), (field, value, seed) => {
        const base = smallBatch(createRng(seed), 1, 20)[0] as PlacementRequest;
        const r = { ...base, [field]: value };
        try {
          const plan = planBatch(index, [r as PlacementRequest], { seed });
          expect(plan.placements.length + plan.rejections.length).toBe(1);
        } catch (err) {
          expect(err, String(err)).toBeInstanceOf(ValidationError);
        }
      }),
      { numRuns: 300 },
    );
  });

  it('placement/hardening - a value whose toString throws is refused with ValidationError, not a TypeError', () => {
    // Found by the property below (seed 1317736258): an error message built with String(value) ran the
    // object's own toString, and `{ toString: '' }` made that a TypeError.
    const hostile = { toString: '' };
    const base = smallCluster(createRng(1), 1)[0] as NodeSpec;
    expect(() => ClusterIndex.of([{ ...base, state: hostile } as unknown as NodeSpec])).toThrow(
      ValidationError,
    );
    const index = ClusterIndex.of([base]);
    for (const options of [
      { strategy: hostile },
      { seed: hostile },
      { limits: { candidateLimit: hostile } },
    ]) {
      expect(() => planBatch(index, [], options as never)).toThrow(ValidationError);
    }
  });

  it('placement/hardening - any value in any node field is registered or refused with ValidationError', () => {
    const fields = ['id', 'capacity', 'gpu', 'labels', 'state', 'images'];
    fc.assert(
      fc.property(fc.constantFrom(...fields), fc.anything(), fc.integer(), (field, value, seed) => {
        const base = smallCluster(createRng(seed), 1)[0] as NodeSpec;
        try {
          ClusterIndex.of([{ ...base, [field]: value } as NodeSpec]);
        } catch (err) {
          expect(err, String(err)).toBeInstanceOf(ValidationError);
        }
      }),
      { numRuns: 300 },
    );
  });
});

describe('placement/hardening - 7. allocations never over-commit and never free above capacity', () => {
  const gpuSpec: NodeSpec = {
    id: 'n1',
    capacity: { cpu: 4000, memory: 4000, disk: 4000 },
    gpu: { model: 'a100', count: 2 },
    labels: {},
    state: 'ready',
  };

  it('placement/hardening - NaN, fractional and negative amounts and a device named twice are refused', () => {
    // Each write is refused with ValidationError and leaves the builder exactly as it was.
    const b = ClusterIndex.of([gpuSpec]).edit();
    b.allocate('n1', {
      resources: { cpu: 1000, memory: 1000, disk: 0 },
      gpuDevices: [{ device: 0, milli: 600 }],
    });
    const before = views(b);
    const res = (cpu: number) => ({ cpu, memory: 0, disk: 0 });
    const bad: (() => unknown)[] = [
      () => b.allocate('n1', { resources: res(Number.NaN) }),
      () => b.allocate('n1', { resources: res(0.5) }),
      () => b.allocate('n1', { resources: res(-5000) }),
      () => b.allocate('n1', { resources: null as never }),
      () => b.allocate('n1', null as never),
      () =>
        b.allocate('n1', {
          resources: res(0),
          gpuDevices: [
            { device: 1, milli: 600 },
            { device: 1, milli: 600 },
          ],
        }),
      () => b.allocate('n1', { resources: res(0), gpuDevices: [{ device: 1, milli: -200 }] }),
      () => b.allocate('n1', { resources: res(0), gpuDevices: [{ device: 1.5, milli: 100 }] }),
      () => b.release('n1', { resources: res(-5000) }),
      () =>
        b.release('n1', {
          resources: res(0),
          gpuDevices: [
            { device: 0, milli: 300 },
            { device: 0, milli: 300 },
          ],
        }),
    ];
    for (const write of bad) {
      expect(write).toThrow(ValidationError);
      expect(views(b)).toEqual(before);
    }
  });

  it('placement/hardening - under any sequence of writes allocation stays within 0..capacity', () => {
    // Random allocations and releases with arbitrary (often bad) numbers: each is applied or refused with a
    // typed error that changes nothing, and every node stays within its capacity and device shares.
    const amountArb = fc.oneof(
      fc.integer({ min: 0, max: 5000 }),
      fc.integer({ min: -5000, max: -1 }),
      fc.constantFrom(Number.NaN, 0.5, Number.POSITIVE_INFINITY),
    );
    const deviceArb = fc.record({
      device: fc.integer({ min: -1, max: 2 }),
      milli: fc.integer({ min: -100, max: 1200 }),
    });
    const writeArb = fc.record({
      release: fc.boolean(),
      cpu: amountArb,
      memory: fc.integer({ min: 0, max: 3000 }),
      devices: fc.array(deviceArb, { maxLength: 3 }),
    });
    fc.assert(
      fc.property(fc.array(writeArb, { maxLength: 40 }), (writes) => {
        const b = ClusterIndex.of([gpuSpec]).edit();
        for (const w of writes) {
          const shape = { resources: { cpu: w.cpu, memory: w.memory, disk: 0 }, gpuDevices: w.devices };
          const before = views(b);
          try {
            if (w.release) b.release('n1', shape);
            else b.allocate('n1', shape);
          } catch (err) {
            expect(err).toBeInstanceOf(TrellisError);
            expect(views(b)).toEqual(before);
          }
          const v = b.get('n1');
          for (const k of ['cpu', 'memory', 'disk'] as const) {
            expect(v?.allocated[k]).toBeGreaterThanOrEqual(0);
            expect(v?.free[k]).toBeGreaterThanOrEqual(0);
          }
          for (const g of v?.gpuFree ?? []) {
            expect(g).toBeGreaterThanOrEqual(0);
            expect(g).toBeLessThanOrEqual(1000);
          }
        }
      }),
      { numRuns: 200 },
    );
  });
});

describe('placement/hardening - the reference placer and the oracle agree', () => {
  it('placement/hardening - reference placements pass the oracle and reference rejections fit nowhere by the oracle', () => {
    // The reference uses the placer's own feasibility functions; the oracle is written from the specs alone.
    // Requests with spread are left to the spread checks in plan.test.ts.
    fc.assert(
      fc.property(fc.integer(), fc.integer({ min: 1, max: 30 }), (seed, n) => {
        const rng = createRng(seed);
        const nodes = smallCluster(rng, n);
        const requests = smallBatch(rng, 50, n).map(({ spread: _s, ...r }) => r);
        const b = ClusterIndex.of(nodes).edit();
        const plan: { placements: Plan['placements'][number][]; rejections: Plan['rejections'][number][] } = {
          placements: [],
          rejections: [],
        };
        for (const r of requests) {
          const out = referencePlace(b, r);
          if (out.kind === 'placed') plan.placements.push(out.placement);
          else {
            plan.rejections.push(out.rejection);
            for (const s of nodes) expect(oracleFits(b, s, r), `${r.id} fits on ${s.id}`).toBe(false);
          }
        }
        checkPlan(nodes, requests, { ...plan, order: requests.map((r) => r.id) } as unknown as Plan);
      }),
      { numRuns: 60 },
    );
  });
});

/** Could `s` host `r` now? From the spec, the builder's free numbers and the anti-affinity count alone. */
function oracleFits(b: IndexBuilder, s: NodeSpec, r: PlacementRequest): boolean {
  if (s.state !== 'ready') return false;
  if (r.pinnedNode !== undefined && r.pinnedNode !== s.id) return false;
  if (!(r.constraints ?? []).every((c) => holds(c, s.labels))) return false;
  const v = b.get(s.id);
  if (v === undefined) return false;
  if (r.antiAffinity !== undefined) {
    const slot = b.slotOf(s.id) ?? -1;
    if (b.antiAffinityCount(r.antiAffinity.group, slot) >= r.antiAffinity.maxPerNode) return false;
  }
  if (r.resources.cpu > v.free.cpu || r.resources.memory > v.free.memory || r.resources.disk > v.free.disk)
    return false;
  if (r.gpu === undefined) return true;
  if (s.gpu === undefined || (r.gpu.model !== undefined && r.gpu.model !== s.gpu.model)) return false;
  return r.gpu.count !== undefined
    ? v.gpuFree.filter((f) => f === 1000).length >= r.gpu.count
    : v.gpuFree.some((f) => f >= (r.gpu?.milli ?? 0));
}

describe('placement/hardening - scores kept in typed arrays end to end', () => {
  it('placement/hardening - scores written in place equal the scorers returned values, under each named scorer and past the offer arrays first size', () => {
    // The placer writes each candidate's score into BestNode's typed arrays (no boxed double crosses a call);
    // the reference placer scores through the returning functions. Exact scans of 33-64 nodes offer more
    // candidates than BestNode first holds (32), larger clusters take the class walks.
    fc.assert(
      fc.property(
        fc.integer(),
        fc.constantFrom(...binpackScorers),
        fc.integer({ min: 33, max: 160 }),
        (seed, scorer, nodeCount) => {
          const rng = createRng(seed);
          const nodes = smallCluster(rng, nodeCount).map((s) => ({ ...s, state: 'ready' as const }));
          const requests = smallBatch(rng, 12, nodeCount);
          let fast = ClusterIndex.of(nodes);
          const ref = ClusterIndex.of(nodes).edit();
          const limits = { candidateLimit: 1e9, visitAfterFirstMax: 1e9, localityCandidatesMax: 0 };
          for (const r of requests) {
            const plan = planBatch(fast, [r], { binpackScorer: scorer, limits });
            const theirs = referencePlace(ref, r, 'binpack', scorer);
            const mine = plan.placements[0];
            if (theirs.kind === 'rejected') {
              expect(mine).toBeUndefined();
              continue;
            }
            expect(mine?.score, `${r.id} under ${scorer}`).toBe(theirs.placement.score);
            if (mine !== undefined && mine.nodeId !== theirs.placement.nodeId) {
              const shape = {
                resources: r.resources,
                gpuDevices: theirs.placement.gpuDevices,
                ...(r.antiAffinity === undefined ? {} : { antiAffinityGroup: r.antiAffinity.group }),
                ...(r.spread === undefined
                  ? {}
                  : { spread: { group: r.spread.group ?? r.tenant, label: r.spread.label } }),
              };
              ref.release(theirs.placement.nodeId, shape);
              ref.allocate(mine.nodeId, { ...shape, gpuDevices: mine.gpuDevices });
            }
            fast = plan.index;
          }
        },
      ),
      { numRuns: 60 },
    );
  });
});

describe('placement/hardening - the duplicate-id check reuses one table across batches', () => {
  it('placement/hardening - a batch is refused exactly when two of its requests share an id, batch after batch', () => {
    // The check is an open-addressing table reused by every batch (plan.ts, IdTable): entries of earlier
    // batches must not count, colliding hashes must not make a false duplicate, and the error names the
    // first request whose id came before.
    const index = ClusterIndex.of([ready('a', 1_000_000)]);
    fc.assert(
      fc.property(
        fc.array(fc.array(fc.integer({ min: 0, max: 400 }), { minLength: 1, maxLength: 300 }), {
          minLength: 1,
          maxLength: 4,
        }),
        (batches) => {
          for (const ns of batches) {
            const requests = ns.map((n) => req(`q${n}`, 1));
            const firstRepeat = ns.findIndex((n, i) => ns.indexOf(n) < i);
            if (firstRepeat < 0) {
              expect(planBatch(index, requests).placements.length).toBe(ns.length);
              continue;
            }
            const err = (() => {
              try {
                planBatch(index, requests);
              } catch (e) {
                return e;
              }
              return undefined;
            })();
            expect(err).toBeInstanceOf(ValidationError);
            expect((err as ValidationError).path).toBe(`requests.${firstRepeat}.id`);
          }
        },
      ),
      { numRuns: 80 },
    );
    // A batch of distinct ids larger than any above: the table grows to hold it.
    const many = Array.from({ length: 1500 }, (_, i) => req(`m${i}`, 1));
    expect(planBatch(index, many).placements.length).toBe(1500);
  });
});

describe('placement/hardening - a spread domain index per request, in one batch', () => {
  it('placement/hardening - spread requests of different labels, groups and skews in one batch land where each alone would', () => {
    // planBatch refills one compiled request per request, spread domain index included (request.ts,
    // compileSpread): a verdict or score left over from the request before, or a label with fewer values read
    // through a longer array, would move a placement. Planning each request alone against the index the ones
    // before it left must give the same node and score.
    fc.assert(
      fc.property(fc.integer(), fc.integer({ min: 6, max: 40 }), (seed, nodeCount) => {
        const rng = createRng(seed);
        const nodes: NodeSpec[] = Array.from({ length: nodeCount }, (_, i) =>
          ready(`n${String(i).padStart(3, '0')}`, rng.int(2, 12), {
            zone: `z${rng.int(0, 3)}`,
            rack: `r${rng.int(0, 7)}`,
          }),
        );
        const labels = ['zone', 'rack'] as const;
        const requests = Array.from({ length: 24 }, (_, i) =>
          req(`q${String(i).padStart(3, '0')}`, 1, {
            spread: {
              label: labels[rng.int(0, 2)] as string,
              maxSkew: rng.int(1, 3),
              group: `g${rng.int(0, 3)}`,
            },
          }),
        );
        const batch = planBatch(ClusterIndex.of(nodes), requests);
        let alone = ClusterIndex.of(nodes);
        expect(batch.placements.length).toBeGreaterThan(0);
        const byId = new Map(batch.placements.map((p) => [p.requestId, p]));
        for (const r of requests) {
          const one = planBatch(alone, [r]);
          const mine = byId.get(r.id);
          expect(mine?.nodeId, `${r.id} (seed ${seed})`).toBe(one.placements[0]?.nodeId);
          expect(mine?.score, `${r.id} (seed ${seed})`).toBe(one.placements[0]?.score);
          alone = one.index;
        }
      }),
      { numRuns: 60 },
    );
  });
});

describe('placement/hardening - constraint fields checked without building their paths up front', () => {
  // The messages a bad constraint or preference field got before paths were built lazily, verbatim.
  const cases: [Partial<PlacementRequest> | Record<string, unknown>, string][] = [
    [{ constraints: [null] }, 'requests.1.constraints.0: must be an object, got null'],
    [
      { constraints: [{ label: 'a', op: 'exists' }, []] },
      'requests.1.constraints.1: must be an object, got an array',
    ],
    [
      { constraints: [{ label: '', op: 'exists' }] },
      'requests.1.constraints.0.label: must be a string of 1..256 characters',
    ],
    [
      { constraints: [{ label: 'x'.repeat(257), op: 'eq', value: 'v' }] },
      'requests.1.constraints.0.label: must be a string of 1..256 characters',
    ],
    [
      { constraints: [{ label: 'a', op: 'eq', value: 7 }] },
      'requests.1.constraints.0.value: must be a string of 1..256 characters',
    ],
    [
      { constraints: [{ label: 'a', op: 'in', values: 'v' }] },
      'requests.1.constraints.0.values: must be an array, got string',
    ],
    [
      { constraints: [{ label: 'a', op: 'in', values: Array(65).fill('v') }] },
      'requests.1.constraints.0.values: at most 64 entries',
    ],
    [
      { constraints: [{ label: 'a', op: 'notIn', values: [] }] },
      'requests.1.constraints.0.values: must list 1..64 values',
    ],
    [
      { constraints: [{ label: 'a', op: 'in', values: ['v', 'w', ''] }] },
      'requests.1.constraints.0.values.2: must be a string of 1..256 characters',
    ],
    [
      { constraints: [{ label: 'a', op: 'like' }] },
      'requests.1.constraints.0.op: must be one of eq, in, notIn, exists',
    ],
    [
      { preferences: [{ constraint: null, weight: 1 }] },
      'requests.1.preferences.0.constraint: must be an object, got null',
    ],
    [
      {
        preferences: [
          { constraint: { label: 'a', op: 'exists' }, weight: 1 },
          { constraint: { label: 'a', op: 'in', values: [1] }, weight: 1 },
        ],
      },
      'requests.1.preferences.1.constraint.values.0: must be a string of 1..256 characters',
    ],
    [
      { preferences: [{ constraint: { label: 'a', op: 'eq' }, weight: 1 }] },
      'requests.1.preferences.0.constraint.value: must be a string of 1..256 characters',
    ],
  ];
  it('placement/hardening - each bad constraint or preference field is refused with its full path and message, planning nothing', () => {
    const index = ClusterIndex.of([ready('n1', 4_000, { a: 'v' })]);
    for (const [extra, message] of cases) {
      const batch = [req('ok', 100), { ...req('bad', 100), ...extra } as PlacementRequest];
      let caught: unknown;
      try {
        planBatch(index, batch);
      } catch (err) {
        caught = err;
      }
      expect(caught, message).toBeInstanceOf(ValidationError);
      expect((caught as ValidationError).message).toBe(message);
      expect((caught as ValidationError).code).toBe('VALIDATION');
    }
    expect(
      planBatch(index, [
        req('ok', 100),
        req('ok2', 100, { constraints: [{ label: 'a', op: 'in', values: ['v'] }] }),
      ]).placed.count,
    ).toBe(2);
  });
});

describe('placement/hardening - request classes (one lookup per class, runs by class id)', () => {
  // Strings of one length whose first, middle and last characters agree: the class hash reads only those, so
  // these collide and only the field-by-field comparison tells the classes apart.
  const zoneA = 'zXaYc';
  const zoneB = 'zYaXc';
  const nodes: NodeSpec[] = Array.from({ length: 12 }, (_, i) => ({
    id: i === 0 ? 'nXaYb' : i === 1 ? 'nYaXb' : `n${i}`,
    capacity: { cpu: 8_000 + 500 * i, memory: 16_000 + 1_000 * i, disk: 16_000 + 1_000 * i },
    labels: { zone: i % 2 === 0 ? zoneA : zoneB },
    state: 'ready',
    images: i % 3 === 0 ? ['iXmYg'] : i % 3 === 1 ? ['iYmXg'] : [],
  }));
  const variants: Partial<PlacementRequest>[] = [
    {},
    { constraints: [{ label: 'zone', op: 'eq', value: zoneA }] },
    { constraints: [{ label: 'zone', op: 'eq', value: zoneB }] },
    { constraints: [{ label: 'zone', op: 'in', values: [zoneA] }] },
    { imageId: 'iXmYg' },
    { imageId: 'iYmXg' },
    { pinnedNode: 'nXaYb' },
    { pinnedNode: 'nYaXb' },
    { preferences: [{ constraint: { label: 'zone', op: 'eq', value: zoneA }, weight: 50 }] },
    { preferences: [{ constraint: { label: 'zone', op: 'eq', value: zoneB }, weight: 50 }] },
    { strategy: 'binpack' },
    { resources: { cpu: 700, memory: 1_000, disk: 1_000 } },
    { gpu: { milli: 250 } },
    { resources: { cpu: 14_000, memory: 1_000, disk: 1_000 } },
    {
      resources: { cpu: 14_000, memory: 1_000, disk: 1_000 },
      constraints: [{ label: 'zone', op: 'eq', value: zoneA }],
    },
    {
      resources: { cpu: 14_000, memory: 1_000, disk: 1_000 },
      constraints: [{ label: 'zone', op: 'eq', value: zoneB }],
    },
  ];

  /** Each request lands where planning it alone, in batch order, would put it, or is rejected alike. */
  function expectAsAlone(requests: PlacementRequest[]): void {
    const index = ClusterIndex.of(nodes);
    const plan = planBatch(index, requests);
    const byId = new Map(requests.map((r) => [r.id, r]));
    const placed = new Map(plan.placements.map((p) => [p.requestId, p]));
    const rejected = new Map(plan.rejections.map((r) => [r.requestId, r]));
    let alone = index;
    for (const id of plan.order) {
      const one = planBatch(alone, [byId.get(id) as PlacementRequest]);
      const mine = placed.get(id);
      const theirs = one.placements[0];
      expect({ id, node: mine?.nodeId, score: mine?.score }).toEqual({
        id,
        node: theirs?.nodeId,
        score: theirs?.score,
      });
      const no = rejected.get(id);
      const noAlone = one.rejections[0];
      expect({ id, code: no?.code, shortOf: no?.shortOf, closest: no?.closest }).toEqual({
        id,
        code: noAlone?.code,
        shortOf: noAlone?.shortOf,
        closest: noAlone?.closest,
      });
      alone = one.index;
    }
  }
  const sized = { resources: { cpu: 500, memory: 1_000, disk: 1_000 } };

  it('placement/hardening - requests whose class hashes collide are placed as each alone would be', () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 0, max: variants.length - 1 }), { minLength: 1, maxLength: 40 }),
        (picks) => {
          // Each pick three times in a row: runs of one class (placed in one step) and their breaks.
          const requests = picks
            .flatMap((v) => [v, v, v])
            .map((v, i) => ({ ...req(`q${String(i).padStart(3, '0')}`, 500), ...sized, ...variants[v] }));
          expectAsAlone(requests as PlacementRequest[]);
        },
      ),
      { numRuns: 60 },
    );
  });

  it('placement/hardening - requests differing only in a preference never share a run', () => {
    const batch = [8, 8, 8, 9, 9, 9, 9, 8, 8].map((v, i) => ({
      ...req(`p${i}`, 500),
      ...sized,
      ...variants[v],
    }));
    expectAsAlone(batch as PlacementRequest[]);
  });

  it('placement/hardening - requests of one class with and without group rules are compiled as each alone would be', () => {
    // A class is made of shape, constraints, preferences, image, pin and strategy; group rules are per request. A
    // request of a known class is compiled from the class's tables (classes.ts), reading the request's own spread
    // and anti-affinity only when validation marked it grouped: a grouped request must never be taken as plain
    // (compiled without its rule, or placed as a follower of a plain request of its class), and the class's own
    // fields (a request strategy among them) must be the ones compiled.
    const rules: Partial<PlacementRequest>[] = [
      {},
      { antiAffinity: { group: 'g', maxPerNode: 1 } },
      { spread: { label: 'zone', maxSkew: 1, group: 's' } },
    ];
    const classVariants: Partial<PlacementRequest>[] = [
      {},
      { strategy: 'spread' },
      { imageId: 'iXmYg' },
      { constraints: [{ label: 'zone', op: 'eq', value: zoneA }] },
      { preferences: [{ constraint: { label: 'zone', op: 'eq', value: zoneB }, weight: 50 }] },
    ];
    fc.assert(
      fc.property(
        fc.array(
          fc.tuple(
            fc.integer({ min: 0, max: classVariants.length - 1 }),
            fc.array(fc.integer({ min: 0, max: rules.length - 1 }), { minLength: 1, maxLength: 4 }),
          ),
          { minLength: 1, maxLength: 12 },
        ),
        (picks) => {
          // Requests of one class in a row (adjacent in batch order: same share, ids ascending), rules mixed.
          let n = 0;
          const requests = picks.flatMap(([v, rs]) =>
            rs.map((rule) => ({
              ...req(`c${String(n++).padStart(3, '0')}`, 500),
              ...sized,
              ...classVariants[v],
              ...rules[rule],
            })),
          );
          expectAsAlone(requests as PlacementRequest[]);
        },
      ),
      { numRuns: 80 },
    );
  });

  it('placement/hardening - batch order is priority, then dominant share, then id, batch after batch', () => {
    // Up to three batches through the reused tables, many priorities and shapes, ids out of order, shapes of
    // equal share (a run across classes, ordered by id).
    const index = ClusterIndex.of(nodes);
    fc.assert(
      fc.property(
        fc.array(
          fc.array(
            fc.record({
              prio: fc.integer({ min: -3, max: 3 }),
              cpu: fc.constantFrom(0, 250, 500, 1_000),
              memory: fc.constantFrom(1, 2, 100),
              image: fc.constantFrom(undefined, 'iXmYg', 'iYmXg'),
              id: fc.integer({ min: 0, max: 999 }),
            }),
            { minLength: 1, maxLength: 80 },
          ),
          { minLength: 1, maxLength: 3 },
        ),
        (batches) => {
          for (const batch of batches) {
            const seen = new Set<number>();
            const requests: PlacementRequest[] = batch
              .filter((b) => !seen.has(b.id) && seen.add(b.id) !== undefined)
              .map((b) => ({
                id: `o${String(999 - b.id).padStart(3, '0')}`,
                tenant: 't',
                resources: { cpu: b.cpu, memory: b.memory, disk: 1 },
                priority: b.prio,
                ...(b.image === undefined ? {} : { imageId: b.image }),
              }));
            const share = (r: PlacementRequest): number =>
              dominantShare(r, index.readyCapacity, index.readyGpuMilli);
            const expected = [...requests]
              .sort(
                (a, b) =>
                  (b.priority ?? 0) - (a.priority ?? 0) ||
                  share(b) - share(a) ||
                  (a.id < b.id ? -1 : a.id > b.id ? 1 : 0),
              )
              .map((r) => r.id);
            expect(planBatch(index, requests).order).toEqual(expected);
          }
        },
      ),
      { numRuns: 150 },
    );
  });
});

describe('placement/hardening - pass masks of constrained signatures (ninth pass)', () => {
  /** The slots a constrained walk of `r` may visit in `bucket` from `from`, in order, from the specs alone. */
  function passingInBucket(b: IndexBuilder, r: PlacementRequest, bucket: number, from: number): number[] {
    const out: number[] = [];
    for (let slot = Math.max(0, from); slot < b.slotCount; slot++) {
      if (!b.isLive(slot) || b.bucketOfSlot(slot) !== bucket) continue;
      const spec = b.meta(slot).spec;
      if (spec.state !== 'ready') continue;
      if (!(r.constraints ?? []).every((c) => holds(c, spec.labels))) continue;
      if (r.gpu !== undefined) {
        if (spec.gpu === undefined) continue;
        if (r.gpu.model !== undefined && r.gpu.model !== spec.gpu.model) continue;
      }
      out.push(slot);
    }
    return out;
  }

  it('placement/hardening - a masked bucket scan visits exactly the passing nodes of the bucket in slot order, per signature and per class membership', () => {
    // Several pages (256 slots each), nodes moved between buckets by allocations, the signatures of one batch
    // queried in turn through one cache, and a second version whose class membership changed (relabelled and
    // drained nodes): each scan must visit what the specs say, stop where the visit says, and nothing else.
    fc.assert(
      fc.property(fc.integer(), fc.integer({ min: 257, max: 900 }), (seed, n) => {
        const rng = createRng(seed);
        const specs = smallCluster(rng, n);
        const base = ClusterIndex.of(specs);
        const edit = base.edit();
        for (let k = 0; k < 20; k++) {
          const spec = specs[rng.int(0, n)] as NodeSpec;
          edit.updateNode({
            ...spec,
            labels: { ...spec.labels, zone: rng.pick(['a', 'b', 'c']) },
            state: rng.chance(0.3) ? 'draining' : 'ready',
          });
        }
        const changed = edit.publish();
        const signatures = smallBatch(rng, 60, n).filter(
          (r) => (r.constraints?.length ?? 0) > 0 || r.gpu !== undefined,
        );
        for (const index of [base, changed]) {
          const b = index.edit();
          for (let k = 0; k < n; k++) {
            const slot = rng.int(0, b.slotCount);
            if (!b.isLive(slot)) continue;
            const free = b.view(slot).free;
            const cpu = Math.floor(free.cpu * rng.next());
            if (cpu > 0) b.allocateSlot(slot, { resources: { cpu, memory: 0, disk: 0 } });
          }
          const cache = new BatchCache(index);
          for (let k = 0; k < 4 * signatures.length; k++) {
            const r = signatures[rng.int(0, signatures.length)] as PlacementRequest;
            const req = compileRequest(b, r, 'binpack', cache);
            const mask = passMaskOf(req.shared, b);
            const anySlot = rng.int(0, b.slotCount);
            const bucket =
              b.isLive(anySlot) && b.bucketOfSlot(anySlot) >= 0 && rng.chance(0.8)
                ? b.bucketOfSlot(anySlot)
                : rng.int(0, bucketCount);
            const from = rng.chance(0.3) ? 0 : rng.int(0, b.slotCount + 1);
            const stopAfter = rng.int(1, 40);
            const seen: number[] = [];
            const stopped = mask.scan(b, req, bucket, from, (slot) => {
              seen.push(slot);
              return seen.length >= stopAfter;
            });
            const want = passingInBucket(b, r, bucket, from).slice(0, stopAfter);
            expect(seen, `seed ${seed}, ${JSON.stringify(r)}, bucket ${bucket} from ${from}`).toEqual(want);
            expect(stopped).toBe(want.length >= stopAfter ? want[stopAfter - 1] : -1);
          }
        }
      }),
      { numRuns: 25 },
    );
  });
});
