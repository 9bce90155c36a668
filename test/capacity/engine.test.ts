/**
 * Capacity simulation engine: workloads whose answer is known. Each test says what it checks; the seeds are
 * fixed, and a failing randomized comparison prints its seed.
 */
import { describe, expect, it } from 'vitest';
import type { SandboxSpec } from '../../src/index.js';
import { createScheduler } from '../../src/index.js';
import { ValidationError } from '../../src/lib/errors.js';
import {
  type Arrival,
  type ClusterSpec,
  clusterNodes,
  parseCluster,
  parseSpecText,
  parseWorkload,
  type RunResult,
  runJson,
  SpecParseError,
  simulate,
  syntheticArrivals,
} from '../../src/sim/index.js';

const spec = (cpu: number, memory: number, extra: Partial<SandboxSpec> = {}): SandboxSpec => ({
  tenant: 'acme',
  resources: { cpu, memory, disk: 1024 },
  ...extra,
});

const at = (id: string, atMs: number, s: SandboxSpec, lifetimeMs = Number.POSITIVE_INFINITY): Arrival => ({
  id,
  atMs,
  spec: s,
  lifetimeMs,
});

const cluster = (count: number, cpu = 8000, memory = 16384): ClusterSpec => ({
  nodes: [{ shape: 'n', count, capacity: { cpu, memory, disk: 100_000 } }],
});

/** A run without its wall-clock timing, which is the only part allowed to differ between equal runs. */
const deterministic = (r: RunResult): unknown => {
  const { timing: _timing, ...rest } = runJson(r) as RunResult;
  return rest;
};

describe('capacity engine', () => {
  it('capacity engine - a perfect packing reaches 100% allocation with binpack', () => {
    // 10 nodes of 8 cores / 16 GiB; 10 requests of 4 cores / 8 GiB and 20 of 2 cores / 4 GiB fill them exactly.
    const arrivals: Arrival[] = [];
    for (let i = 0; i < 20; i++) arrivals.push(at(`s${i}`, 0, spec(2000, 4096)));
    for (let i = 0; i < 10; i++) arrivals.push(at(`b${i}`, 0, spec(4000, 8192)));
    const r = simulate(cluster(10), arrivals, { seed: 1, policy: { name: 'dot' }, pendingTimeoutMs: 0 });
    expect(r.totals.placed).toBe(30);
    expect(r.totals.rejected).toBe(0);
    const last = r.samples[r.samples.length - 1];
    expect(last?.util.cpu).toBe(1);
    expect(last?.util.memory).toBe(1);
    // Arrival order that only packing survives, one request at a time: ten halves first, then five wholes.
    // Best-fit binpack pairs the halves on five nodes and leaves five empty for the wholes; spreading them
    // over all ten nodes (as `spread` does) leaves no room for any whole node, so this part fails without
    // packing (the part above passes under `spread` too). The default binpack scorer `dot` is alignment, not
    // best fit: here it also spreads the halves (the request's small disk share makes an empty node's free
    // shape the better match), so this part uses `dominant`, the tightest-fit scorer.
    const ordered: Arrival[] = [];
    for (let i = 0; i < 10; i++) ordered.push(at(`h${i}`, i, spec(4000, 8192)));
    for (let i = 0; i < 5; i++) ordered.push(at(`w${i}`, 10 + i, spec(8000, 16384)));
    const options = { seed: 1, pendingTimeoutMs: 0 };
    const packed = simulate(cluster(10), ordered, {
      ...options,
      policy: { name: 'dominant', scorer: 'dominant', batchSize: 1 },
    });
    expect(packed.totals).toMatchObject({ placed: 15, rejected: 0 });
    expect(packed.samples.at(-1)?.util.cpu).toBe(1);
    const spread = simulate(cluster(10), ordered, {
      ...options,
      policy: { name: 'spread', strategy: 'spread', batchSize: 1 },
    });
    expect(spread.totals.rejected).toBe(5);
  });

  it('capacity engine - inflation on a perfect packing allocates all arrived demand up to 100%', () => {
    const arrivals = Array.from({ length: 60 }, (_, i) => at(`a${i}`, i, spec(2000, 4096)));
    const r = simulate(cluster(10), arrivals, {
      seed: 3,
      protocol: 'inflation',
      inflation: { targetPct: 100, resource: 'cpu' },
      policy: { name: 'dot', batchSize: 1 },
    });
    // 40 requests reach 100% of cpu; the other 20 are never submitted.
    expect(r.totals.arrived).toBe(40);
    expect(r.totals.placed).toBe(40);
    const points = r.inflation ?? [];
    expect(points[points.length - 1]?.arrivedPct).toBe(100);
    for (const p of points) expect(p.allocatedPct.cpu).toBeCloseTo(p.arrivedPct, 9);
  });

  it('capacity engine - a request that fits nowhere is rejected with the reason placement gives', () => {
    const arrivals = [
      at('huge', 0, spec(64_000, 1024)),
      at('picky', 1, spec(1000, 1024, { constraints: [{ label: 'zone', op: 'eq', value: 'nowhere' }] })),
      at('fine', 2, spec(1000, 1024)),
    ];
    const r = simulate(cluster(4), arrivals, {
      seed: 1,
      policy: { name: 'dot' },
      recordPlacements: true,
      pendingTimeoutMs: 5_000,
    });
    expect(r.rejections?.get('huge')).toBe('resources');
    expect(r.rejections?.get('picky')).toBe('constraint');
    expect(r.placements?.get('fine')).toBeDefined();
    expect(r.totals).toMatchObject({ arrived: 3, placed: 1, rejected: 2, pendingAtEnd: 0 });
  });

  it('capacity engine - a tenant over its quota is rejected for quota, and a waiting request is placed when room frees', () => {
    const c: ClusterSpec = { ...cluster(1, 4000, 8192), quotas: { capped: { sandboxes: 1 } } };
    const arrivals = [
      at('c1', 0, { ...spec(1000, 1024), tenant: 'capped' }, 10_000),
      at('c2', 1, { ...spec(1000, 1024), tenant: 'capped' }),
      at('big1', 2, spec(3000, 1024), 5_000),
      // Waits for big1's room (freed at 5,002 ms), within its 30 s deadline.
      at('big2', 3, spec(3000, 1024)),
    ];
    const r = simulate(c, arrivals, { seed: 1, policy: { name: 'dot' }, recordPlacements: true });
    expect(r.rejections?.get('c2')).toBe('quota');
    expect(r.placements?.get('big2')).toBe('n-0');
    expect(r.totals.rejected).toBe(1);
  });

  it('capacity engine - two runs with one seed are identical, and another seed differs', () => {
    const w = parseWorkload({
      arrivals: { kind: 'bursty', ratePerS: 5, burstRatePerS: 50, everyS: 60, burstS: 10 },
      count: 800,
      sizes: [
        { weight: 3, cpu: 1000, memory: 2048 },
        { weight: 1, cpu: 4000, memory: 8192 },
      ],
      lifetime: { kind: 'lognormal', medianS: 60, sigma: 1 },
      tenants: [{ name: 'a' }, { name: 'b', weight: 2, quota: { sandboxes: 100 } }],
      suspend: { share: 0.1, durationS: 20 },
    });
    const c = parseCluster({
      nodes: [
        { shape: 'm', count: 30, capacity: { cpu: 16000, memory: 32768, disk: 100000 }, zones: ['a', 'b'] },
      ],
      events: [
        { atS: 100, kind: 'fail', shape: 'm', count: 2 },
        { atS: 200, kind: 'drain', node: 'm-5' },
        { atS: 300, kind: 'return', shape: 'm', count: 2 },
      ],
    });
    const run = (seed: number): RunResult => {
      if (!('arrivals' in w)) throw new Error('synthetic');
      return simulate(c, [...syntheticArrivals(w, seed)], {
        seed,
        policy: { name: 'dot', batchSize: 16 },
        batchWindowMs: 500,
      });
    };
    const seed = 42;
    const a = run(seed);
    const b = run(seed);
    expect(deterministic(a), `seed ${seed}`).toEqual(deterministic(b));
    expect(a.totals.lost).toBeGreaterThan(0);
    expect(a.totals.suspended).toBeGreaterThan(0);
    // Another seed differs in what happened, not merely in the seed the report records (which alone made
    // this pass when the generator ignored its seed).
    const outcome = (r: RunResult): unknown => {
      const { seed: _seed, ...rest } = deterministic(r) as RunResult;
      return rest;
    };
    expect(outcome(run(seed + 1))).not.toEqual(outcome(a));
  });

  it('capacity engine - the simulation and the real embedded scheduler make the same placements', async () => {
    // The same nodes in the same order, the same creates one at a time, and terminations in between.
    const c: ClusterSpec = {
      nodes: [
        {
          shape: 'small',
          count: 6,
          capacity: { cpu: 4000, memory: 8192, disk: 50_000 },
          zones: ['z-a', 'z-b'],
        },
        {
          shape: 'large',
          count: 4,
          capacity: { cpu: 16000, memory: 32768, disk: 200_000 },
          zones: ['z-a', 'z-b'],
        },
      ],
    };
    const sizes = [
      spec(500, 1024),
      spec(1000, 2048),
      spec(2000, 8192),
      spec(3000, 2048),
      spec(12000, 16384),
      spec(20000, 1024),
    ];
    const arrivals: Arrival[] = [];
    for (let i = 0; i < 80; i++) {
      // Departures land on half seconds, arrivals on whole ones, so the order of events is never a tie.
      const lifetimeMs = i % 3 === 0 ? Number.POSITIVE_INFINITY : 500 + 1000 * ((i * 7) % 13);
      arrivals.push(at(`r${i}`, i * 1000, sizes[(i * 5) % sizes.length] as SandboxSpec, lifetimeMs));
    }
    const sim = simulate(c, arrivals, {
      seed: 1,
      policy: { name: 'dot', batchSize: 1 },
      pendingTimeoutMs: 0,
      recordPlacements: true,
    });

    const events: { t: number; kind: 'create' | 'end'; a: Arrival }[] = [];
    for (const a of arrivals) {
      events.push({ t: a.atMs, kind: 'create', a });
      if (Number.isFinite(a.lifetimeMs)) events.push({ t: a.atMs + a.lifetimeMs, kind: 'end', a });
    }
    events.sort((x, y) => x.t - y.t);
    const scheduler = createScheduler({ pipeline: { pendingTimeoutMs: 0 } });
    const real = new Map<string, string>();
    try {
      for (const n of clusterNodes(c)) await scheduler.registerNode(n);
      for (const e of events) {
        if (e.kind === 'end') {
          if (real.has(e.a.id)) await scheduler.terminate(e.a.id);
          continue;
        }
        try {
          const sb = await scheduler.create(e.a.spec, { requestId: e.a.id });
          if (sb.nodeId !== undefined) real.set(e.a.id, sb.nodeId);
        } catch {
          // Refused for capacity: the simulation must have rejected it too (checked below).
        }
      }
    } finally {
      await scheduler.close();
    }
    expect(sim.placements?.size).toBeGreaterThan(40);
    expect(sim.totals.rejected).toBeGreaterThan(0);
    expect(new Map(sim.placements)).toEqual(real);
  });

  it('capacity engine - a malformed spec is a typed error with its line or field path', () => {
    expect(() => parseSpecText('nodes: [\n  { shape: a,, }\n', 'cluster.yaml')).toThrow(SpecParseError);
    expect(() => parseSpecText('nodes:\n  - shape: a\n   count: 1\n', 'cluster.yaml')).toThrow(
      expect.objectContaining({ code: 'SPEC_PARSE', message: expect.stringMatching(/line \d+, column \d+/) }),
    );
    // An alias bomb: 9^6 strings from a few lines; refused as a parse error, not an INTERNAL crash.
    const bomb = ['a: &a [x, x, x, x, x, x, x, x, x]'];
    for (const [prev, next] of ['ab', 'bc', 'cd', 'de', 'ef', 'fg']) {
      bomb.push(`${next}: &${next} [${Array(9).fill(`*${prev}`).join(', ')}]`);
    }
    expect(() => parseSpecText(`${bomb.join('\n')}\nnodes: [*g]\n`, 'cluster.yaml')).toThrow(SpecParseError);
    expect(() =>
      parseCluster({ nodes: [{ shape: 'a', count: 1, capacity: { cpu: -1, memory: 1, disk: 1 } }] }),
    ).toThrow(
      expect.objectContaining({ path: 'cluster.nodes.0.capacity.cpu' }) as unknown as ValidationError,
    );
    expect(() =>
      parseWorkload({
        arrivals: { kind: 'poisson', ratePerS: 0 },
        count: 1,
        sizes: [],
        lifetime: { kind: 'forever' },
      }),
    ).toThrow(ValidationError);
  });
});
