/**
 * Hostile inputs to the simulator's readers and specs, found by trying `trellis simulate` from the outside:
 * each is refused with a typed error that names where (a trace's line and column, a spec's field), instead of
 * a crash, a silent reinterpretation or a run that claims success on nothing.
 */
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  parseCluster,
  parseWorkload,
  readAlibabaBatchTask,
  readAlibabaGpuNodes,
  readAlibabaGpuPods,
  readAzureVmTable,
  readGenericCsv,
  readSpecFile,
  simulate,
  whatIf,
} from '../../src/sim/index.js';
import { rejectsAt, traceDir } from '../helpers/trace-files.js';

const { dir, file } = traceDir('trellis-hostile-');
const rejects = rejectsAt;

const podHeader =
  'name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,scheduled_time';
const nodeHeader = 'sn,cpu_milli,memory_mib,gpu,model';

describe('simulator hostile inputs', () => {
  it('hostile inputs - a missing trace file or a directory is a CONFIG error, not a crash', async () => {
    for (const path of [join(dir, 'no-such.csv'), dir]) {
      for (const read of [
        () => readAzureVmTable(path),
        () => readAlibabaGpuPods(path),
        () => readAlibabaGpuNodes(path),
        () => readGenericCsv(path, { arrival: 'a', cpu: 'c', memory: 'm' }),
      ]) {
        const err = await read().then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(err, path).toMatchObject({ code: 'CONFIG' });
        expect((err as Error).message).toMatch(/cannot read trace/);
      }
    }
  });

  it('hostile inputs - a trace or node list with no data rows is refused, not replayed as nothing', async () => {
    const empty = file('empty.csv', '');
    await expect(readAzureVmTable(empty)).rejects.toMatchObject({ code: 'TRACE_FORMAT' });
    await expect(readAlibabaGpuPods(file('pods-header.csv', `${podHeader}\n`))).rejects.toThrow(
      /no data rows/,
    );
    await expect(readAlibabaGpuNodes(file('nodes-header.csv', `${nodeHeader}\n`))).rejects.toThrow(
      /no data rows/,
    );
  });

  it('hostile inputs - numbers in traces are decimal: hex, binary and octal are refused with line and column', async () => {
    for (const v of ['0x10', '0b11', '0o7']) {
      await rejects(
        readAzureVmTable(file(`az-${v}.csv`, `a,s,d,0,1,1,1,1,c,2,4\nb,s,d,${v},50,1,1,1,c,2,4\n`)),
        2,
        'vmcreated',
      );
    }
    // Decimal forms stay accepted: fractions and exponents.
    const ok = await readAzureVmTable(file('az-dec.csv', 'a,s,d,1.5e1,2e1,1,1,1,c,2,4\n'));
    expect(ok[0]?.atMs).toBe(15_000);
  });

  it('hostile inputs - bytes that are not UTF-8 in a trace field are refused with line and column', async () => {
    const bad = Buffer.concat([
      Buffer.from('a,s,d,0,1,1,1,1,c,2,4\nb,'),
      Buffer.from([0xff, 0xfe]),
      Buffer.from(',d,0,50,1,1,1,c,2,4\n'),
    ]);
    await rejects(readAzureVmTable(file('az-bin.csv', bad)), 2, 'subscriptionid', /UTF-8/);
    // And in a YAML/JSON spec: a SPEC_PARSE error, not a label of replacement characters.
    const spec = Buffer.concat([
      Buffer.from('nodes: [{shape: m, count: 1, capacity: {cpu: 1, memory: 1, disk: 0}, labels: {a: "'),
      Buffer.from([0xc3, 0x28]),
      Buffer.from('"}}]\n'),
    ]);
    expect(() => readSpecFile(file('bad.yaml', spec))).toThrow(
      expect.objectContaining({ code: 'SPEC_PARSE' }),
    );
  });

  it('hostile inputs - a size beyond the scheduler limit names the trace line, not an engine field', async () => {
    await rejects(
      readAlibabaGpuPods(file('pods-big.csv', `${podHeader}\np0,3000000000,1024,0,0,,LS,Running,0,1,0\n`)),
      2,
      'cpu_milli',
    );
    await rejects(
      readAzureVmTable(file('az-bigbucket.csv', 'a,s,d,0,1,1,1,1,c,1e300,4\n')),
      1,
      'vmcorecountbucket',
    );
    await rejects(
      readAlibabaGpuNodes(file('nodes-big.csv', `${nodeHeader}\nn0,3000000000,1024,0,\n`)),
      2,
      'cpu_milli',
    );
  });

  it('hostile inputs - node list: fractional cores and a model with spaces still give valid node ids or a row error', async () => {
    const frac = await readAlibabaGpuNodes(file('nodes-frac.csv', `${nodeHeader}\nn0,64500,1024,1,V100\n`));
    // The nodes register (ids are letters, digits, _ and -): a run places on them.
    const r = simulate(
      frac,
      [{ id: 'p', atMs: 0, spec: { tenant: 't', resources: { cpu: 1, memory: 1, disk: 0 } }, lifetimeMs: 1 }],
      {
        seed: 1,
        policy: { name: 'dot' },
      },
    );
    expect(r.totals.placed).toBe(1);
    await rejects(
      readAlibabaGpuNodes(file('nodes-model.csv', `${nodeHeader}\nn0,1000,1024,1,V 100\n`)),
      2,
      'model',
    );
  });

  it('hostile inputs - batch_task: a task ending when it starts lives 1 ms, not for ever; ending before it starts is refused', async () => {
    const { arrivals } = await readAlibabaBatchTask(
      file('bt-same.csv', 't,1,j,1,Terminated,100,100,100,0.5\n'),
    );
    expect(arrivals[0]?.lifetimeMs).toBe(1);
    await rejects(
      readAlibabaBatchTask(file('bt-before.csv', 't,1,j,1,Terminated,100,50,100,0.5\n')),
      1,
      'end_time',
    );
    // end_time 0 is the trace's "not ended": such a task lives for ever.
    const open = await readAlibabaBatchTask(file('bt-open.csv', 't,1,j,1,Running,100,0,100,0.5\n'));
    expect(open.arrivals[0]?.lifetimeMs).toBe(Number.POSITIVE_INFINITY);
  });

  it('hostile inputs - a duplicate request id in a trace is refused with both lines', async () => {
    await rejects(
      readAlibabaGpuPods(
        file('pods-dup.csv', `${podHeader}\np1,1,1,0,0,,LS,Running,0,1,0\np1,1,1,0,0,,LS,Running,0,1,0\n`),
      ),
      3,
      'name',
      /line 2/,
    );
  });

  it('hostile inputs - generic CSV mapping: gpuMilli without gpuCount, departure with duration, a column named twice', async () => {
    const p = file('g.csv', 'a,d,c,m,g\n1,2,1,1,500\n');
    await expect(readGenericCsv(p, { arrival: 'a', cpu: 'c', memory: 'm', gpuMilli: 'g' })).rejects.toThrow(
      /gpuMilli.*gpuCount/,
    );
    await expect(
      readGenericCsv(p, { arrival: 'a', departure: 'd', duration: 'd', cpu: 'c', memory: 'm' }),
    ).rejects.toThrow(/departure or duration/);
    await rejects(
      readGenericCsv(file('g2.csv', 'a,c,m,a\n1,1,1,2\n'), { arrival: 'a', cpu: 'c', memory: 'm' }),
      1,
      'a',
      /twice/,
    );
  });

  it('hostile inputs - generic CSV without a header: a column is a decimal position, not "0x1" or " 2"', async () => {
    const p = file('g-noheader.csv', '10,20,1000,2048\n');
    for (const bad of ['0x1', '1e0', ' 2', 'cpu']) {
      await expect(
        readGenericCsv(p, { arrival: '0', cpu: bad, memory: '3' }, { header: false }),
      ).rejects.toThrow(/trace\.columns\.cpu: a column position/);
    }
    const ok = await readGenericCsv(
      p,
      { arrival: '0', duration: '1', cpu: '2', memory: '3' },
      { header: false },
    );
    expect(ok.map((a) => [a.atMs, a.lifetimeMs, a.spec.resources.cpu])).toEqual([[10_000, 20_000, 1000]]);
  });

  it('hostile inputs - a quote opening inside a field is a TRACE_FORMAT error with its line', async () => {
    // csv-parse's INVALID_OPENING_QUOTE has no CSV_ prefix, and escaped as a raw CsvError (INTERNAL).
    await rejects(
      readAzureVmTable(file('az-quote.csv', 'a,s,d,0,1,1,1,1,c,2,4\nb,s,d,0,1,1,1,1,Delay"x,2,4\n')),
      2,
      '-',
      /not valid CSV: Invalid Opening Quote/,
    );
  });

  it('hostile inputs - a row with too few columns names the first missing column', async () => {
    await rejects(
      readAzureVmTable(file('az-short.csv', 'a,s,d,0,1,1,1,1,c,2\n')),
      1,
      'vmmemorybucket',
      /11 columns, got 10/,
    );
  });

  it('hostile inputs - specs: uniform min above max, a burst longer than its period, a node event naming a node and a shape', () => {
    const base = { arrivals: { kind: 'poisson', ratePerS: 1 }, count: 1, sizes: [{ cpu: 1, memory: 1 }] };
    expect(() => parseWorkload({ ...base, lifetime: { kind: 'uniform', minS: 10, maxS: 5 } })).toThrow(
      /workload\.lifetime/,
    );
    expect(() =>
      parseWorkload({
        ...base,
        arrivals: { kind: 'bursty', ratePerS: 1, burstRatePerS: 5, everyS: 10, burstS: 50 },
        lifetime: { kind: 'forever' },
      }),
    ).toThrow(/workload\.arrivals/);
    const nodes = [{ shape: 'm', count: 2, capacity: { cpu: 1, memory: 1, disk: 0 } }];
    const arrivals = [
      { id: 'a', atMs: 0, spec: { tenant: 't', resources: { cpu: 1, memory: 1, disk: 0 } }, lifetimeMs: 1 },
    ];
    const run = (events: unknown[]) => () =>
      simulate(parseCluster({ nodes, events }), arrivals, { seed: 1, policy: { name: 'dot' } });
    expect(run([{ atS: 1, kind: 'fail', node: 'm-0', shape: 'm' }])).toThrow(/cluster\.events\.0/);
    // A cluster with no nodes at all has nothing to simulate.
    expect(() =>
      simulate(parseCluster({ nodes: [{ ...nodes[0], count: 0 }] }), arrivals, {
        seed: 1,
        policy: { name: 'dot' },
      }),
    ).toThrow(/no nodes/);
  });
});

describe('simulator library input', () => {
  it('library input - arrivals with a bad time, a bad lifetime or a repeated id are a CONFIG error, not an assertion', () => {
    const cluster = parseCluster({
      nodes: [{ shape: 'm', count: 2, capacity: { cpu: 4000, memory: 8192, disk: 0 } }],
    });
    const spec = { tenant: 't', resources: { cpu: 1000, memory: 1000, disk: 0 } };
    const bad: [string, { id: string; atMs: number; lifetimeMs: number }[]][] = [
      ['atMs', [{ id: 'a', atMs: -5, lifetimeMs: 10 }]],
      ['atMs', [{ id: 'a', atMs: Number.NaN, lifetimeMs: 10 }]],
      ['lifetimeMs', [{ id: 'a', atMs: 0, lifetimeMs: -10 }]],
      ['lifetimeMs', [{ id: 'a', atMs: 0, lifetimeMs: Number.NaN }]],
      [
        'used twice',
        [
          { id: 'a', atMs: 0, lifetimeMs: 10 },
          { id: 'a', atMs: 1, lifetimeMs: 10 },
        ],
      ],
    ];
    for (const [what, arrivals] of bad) {
      expect(() =>
        simulate(
          cluster,
          arrivals.map((a) => ({ ...a, spec })),
          { seed: 1, policy: { name: 'dot' } },
        ),
      ).toThrow(expect.objectContaining({ code: 'CONFIG', message: expect.stringContaining(what) }));
    }
  });
});

describe('simulator library options', () => {
  it('library options - a batch size or sample interval of 0 and NaN numbers are a VALIDATION error, not a hang or an assertion', () => {
    // Before this check a batch size of 0 or a sample interval of 0 ran for ever; the NaNs failed as
    // AssertionFailure ('event time is finite', 'seed must be an integer').
    const cluster = parseCluster({
      nodes: [{ shape: 'm', count: 2, capacity: { cpu: 4000, memory: 8192, disk: 0 } }],
    });
    const arrivals = [
      { id: 'a', atMs: 0, spec: { tenant: 't', resources: { cpu: 1, memory: 1, disk: 0 } }, lifetimeMs: 10 },
    ];
    const cases: [string, Record<string, unknown>][] = [
      ['options.policy.batchSize', { policy: { name: 'x', batchSize: 0 } }],
      ['options.sampleEveryMs', { sampleEveryMs: 0 }],
      ['options.sampleEveryMs', { sampleEveryMs: Number.NaN }],
      ['options.batchWindowMs', { batchWindowMs: Number.NaN }],
      ['options.batchWindowMs', { batchWindowMs: -5 }],
      ['options.pendingTimeoutMs', { pendingTimeoutMs: Number.NaN }],
      ['options.seed', { seed: Number.NaN }],
      ['options.inflation.targetPct', { protocol: 'inflation', inflation: { targetPct: Number.NaN } }],
    ];
    for (const [path, extra] of cases) {
      expect(() =>
        simulate(cluster, arrivals, { seed: 1, policy: { name: 'dot' }, ...extra } as Parameters<
          typeof simulate
        >[2]),
      ).toThrow(expect.objectContaining({ code: 'VALIDATION', path }));
    }
  });
});

describe('simulator progress', () => {
  it('progress - a what-if reports arrivals over all its runs, never going back, and ends at the total', () => {
    const cluster = parseCluster({
      nodes: [{ shape: 'm', count: 2, capacity: { cpu: 4000, memory: 4096, disk: 0 } }],
    });
    const arrivals = Array.from({ length: 50 }, (_, i) => ({
      id: `a${i}`,
      atMs: i * 100,
      spec: { tenant: 't', resources: { cpu: 100, memory: 100, disk: 0 } },
      lifetimeMs: 1000,
    }));
    const seen: number[] = [];
    whatIf(
      [
        { name: 'dot', cluster, policy: { name: 'dot' } },
        { name: 'fgd', cluster, policy: { name: 'fgd', scorer: 'fgd' } },
      ],
      arrivals,
      { seed: 1, onProgress: (n) => seen.push(n) },
    );
    expect(seen.length).toBeGreaterThan(0);
    expect(seen.every((n, i) => i === 0 || n >= (seen[i - 1] as number))).toBe(true);
    expect(seen.at(-1)).toBe(2 * arrivals.length);
  });
});
