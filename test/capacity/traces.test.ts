/**
 * Trace readers: each parses a small sample written here in its documented units, and rejects a malformed
 * row with the file's line number and the column's name (TraceFormatError).
 */
import { describe, expect, it } from 'vitest';
import {
  readAlibabaBatchTask,
  readAlibabaGpuNodes,
  readAlibabaGpuPods,
  readAzureVmTable,
  readGenericCsv,
  simulate,
} from '../../src/sim/index.js';
import { rejectsAt, traceDir } from '../helpers/trace-files.js';

const { file } = traceDir('trellis-traces-');
const rejects = rejectsAt;

describe('trace readers', () => {
  it('trace readers - azure vmtable: cores and GB buckets become millicores and MiB, seconds become ms', async () => {
    const p = file(
      'vmtable.csv',
      [
        'vm1hash,sub/A+1,dep1,0,300,90.5,10.2,80.1,Interactive,2,4',
        'vm2hash,subB,dep2,60,3660,50,5,45,Delay-insensitive,>24,>64',
        'vm3hash,subB,dep3,120,180,50,5,45,Unknown,8,32',
      ].join('\n'),
    );
    const a = await readAzureVmTable(p);
    expect(
      a.map((x) => [
        x.id,
        x.atMs,
        x.lifetimeMs,
        x.spec.resources.cpu,
        x.spec.resources.memory,
        x.spec.tenant,
      ]),
    ).toEqual([
      ['az1', 0, 300_000, 2000, 4096, 'sub_2fA_2b1'],
      ['az2', 60_000, 3_600_000, 30_000, 71_680, 'subB'],
      ['az3', 120_000, 60_000, 8000, 32_768, 'subB'],
    ]);
    const bad = file(
      'vmtable-bad.csv',
      'a,s,d,0,10,1,1,1,c,2,4\nb,s,d,0,10,1,1,1,c,2,4\nc,s,d,5,10,1,1,1,c,lots,4\n',
    );
    await rejects(readAzureVmTable(bad), 3, 'vmcorecountbucket');
    // A NaN where a number is required is named as such, not as an empty field.
    const nan = file('vmtable-nan.csv', 'a,s,d,NaN,10,1,1,1,c,2,4\n');
    await rejects(readAzureVmTable(nan), 1, 'vmcreated');
    await expect(readAzureVmTable(nan)).rejects.toThrow(/no value \(NaN\)/);
  });

  it('trace readers - alibaba 2018 batch_task: plan_cpu/100 cores, plan_mem % of a machine, one sandbox per instance', async () => {
    const p = file(
      'batch_task.csv',
      [
        'M1,2,j_1,1,Terminated,100,160,50,0.5',
        'R2_1,1,j_1,1,Terminated,160,400,100,1',
        'M3,1,j_2,1,Terminated,200,300,,',
      ].join('\n'),
    );
    const { arrivals, skipped } = await readAlibabaBatchTask(p, { machineMemoryMiB: 100_000 });
    expect(skipped).toBe(1);
    expect(
      arrivals.map((x) => [x.id, x.atMs, x.lifetimeMs, x.spec.resources.cpu, x.spec.resources.memory]),
    ).toEqual([
      ['bt1-0', 100_000, 60_000, 500, 500],
      ['bt1-1', 100_000, 60_000, 500, 500],
      ['bt2-0', 160_000, 240_000, 1000, 1000],
    ]);
    const bad = file(
      'batch_task-bad.csv',
      'M1,1,j,1,Terminated,100,160,50,0.5\nM2,1,j,1,Terminated,soon,160,50,0.5\n',
    );
    await rejects(readAlibabaBatchTask(bad), 2, 'start_time');
  });

  it('trace readers - alibaba GPU 2023 pods: milli-cpu, MiB, whole GPUs or milli shares, GPU model constraints', async () => {
    const header =
      'name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,scheduled_time';
    const p = file(
      'pods.csv',
      [
        header,
        'openb-pod-0000,12000,16384,1,1000,,LS,Running,0,100,0',
        'openb-pod-0001,6000,12288,1,460,,LS,Running,10,50,10',
        'openb-pod-0002,88000,327680,8,1000,V100M16|V100M32,BE,Succeeded,20,,20',
        'openb-pod-0003,4000,8192,0,0,,BE,Running,30,40,30',
      ].join('\n'),
    );
    const a = await readAlibabaGpuPods(p);
    expect(
      a.map((x) => [
        x.id,
        x.atMs,
        x.lifetimeMs,
        x.spec.resources.cpu,
        x.spec.resources.memory,
        x.spec.gpu ?? null,
      ]),
    ).toEqual([
      ['openb-pod-0000', 0, 100_000, 12_000, 16_384, { count: 1 }],
      ['openb-pod-0001', 10_000, 40_000, 6000, 12_288, { milli: 460 }],
      ['openb-pod-0002', 20_000, Number.POSITIVE_INFINITY, 88_000, 327_680, { count: 8 }],
      ['openb-pod-0003', 30_000, 10_000, 4000, 8192, null],
    ]);
    expect(a[2]?.spec.constraints).toEqual([{ label: 'gpuModel', op: 'in', values: ['V100M16', 'V100M32'] }]);
    const bad = file(
      'pods-bad.csv',
      `${header}\nopenb-pod-0,1000,1024,1,500,,LS,Running,0,1,0\nopenb-pod-1,1000,1024,1,1500,,LS,Running,0,1,0\n`,
    );
    await rejects(readAlibabaGpuPods(bad), 3, 'gpu_milli');
  });

  it('trace readers - alibaba GPU 2023 node list becomes a cluster that the pods replay on', async () => {
    const nodes = file(
      'nodes.csv',
      [
        'sn,cpu_milli,memory_mib,gpu,model',
        'openb-node-0000,64000,262144,2,P100',
        'openb-node-0001,64000,262144,2,P100',
        'openb-node-0002,96000,786432,8,V100M32',
        'openb-node-0003,32000,262144,0,',
      ].join('\n'),
    );
    const cluster = await readAlibabaGpuNodes(nodes);
    expect(
      cluster.nodes.map((g) => [g.shape, g.count, g.capacity.cpu, g.capacity.memory, g.gpu ?? null]),
    ).toEqual([
      ['P100-64c-256g-2', 2, 64_000, 262_144, { model: 'P100', count: 2 }],
      ['V100M32-96c-768g-8', 1, 96_000, 786_432, { model: 'V100M32', count: 8 }],
      ['cpu-32c-256g-0', 1, 32_000, 262_144, null],
    ]);
    const header =
      'name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,scheduled_time';
    const pods = file(
      'pods2.csv',
      `${header}\np0,8000,16384,2,1000,V100M32,LS,Running,0,,0\np1,8000,16384,1,500,P100,LS,Running,1,,1\n`,
    );
    const r = simulate(cluster, await readAlibabaGpuPods(pods), {
      seed: 1,
      policy: { name: 'dot' },
      recordPlacements: true,
    });
    expect(r.placements?.get('p0')).toBe('V100M32-96c-768g-8-0');
    expect(r.placements?.get('p1')?.startsWith('P100-')).toBe(true);
    const bad = file('nodes-bad.csv', 'sn,cpu_milli,memory_mib,gpu,model\nn0,1000,1024,two,P100\n');
    await rejects(readAlibabaGpuNodes(bad), 2, 'gpu');
  });

  it('trace readers - generic CSV with a column mapping, in seconds, millicores and MiB', async () => {
    const p = file(
      'generic.csv',
      ['job,t,end,millis,mib,team', 'j1,1.5,11.5,250,512,red', 'j2,0,,1000,2048,blue'].join('\n'),
    );
    const a = await readGenericCsv(p, {
      id: 'job',
      arrival: 't',
      departure: 'end',
      cpu: 'millis',
      memory: 'mib',
      tenant: 'team',
    });
    expect(
      a.map((x) => [
        x.id,
        x.atMs,
        x.lifetimeMs,
        x.spec.resources.cpu,
        x.spec.resources.memory,
        x.spec.tenant,
      ]),
    ).toEqual([
      ['j2', 0, Number.POSITIVE_INFINITY, 1000, 2048, 'blue'],
      ['j1', 1500, 10_000, 250, 512, 'red'],
    ]);
    const bad = file('generic-bad.csv', 'job,t,end,millis,mib,team\nj1,1,2,250,512,red\nj2,1,2,250,-5,red\n');
    await rejects(readGenericCsv(bad, { id: 'job', arrival: 't', cpu: 'millis', memory: 'mib' }), 3, 'mib');
  });

  it('trace readers - a tenant field becomes a tenant id one to one (two fields never share a tenant)', async () => {
    const fields = ['a+b', 'a/b', 'a_b', 'a b', 'a_2bb', 'ü', '', 'x'.repeat(300), `${'x'.repeat(300)}y`];
    const rows = fields.map((t, i) => `r${i},0,1000,1024,"${t}"`);
    const p = file('tenants.csv', ['id,t,cpu,mem,who', ...rows].join('\n'));
    const a = await readGenericCsv(p, { id: 'id', arrival: 't', cpu: 'cpu', memory: 'mem', tenant: 'who' });
    const tenantOfRow = new Map(a.map((x) => [x.id, x.spec.tenant]));
    const tenants = fields.map((_, i) => tenantOfRow.get(`r${i}`) as string);
    expect(new Set(tenants).size).toBe(fields.length);
    for (const t of tenants) expect(t).toMatch(/^[A-Za-z0-9_-]{1,128}$/);
    expect(tenants.slice(0, 7)).toEqual(['a_2bb', 'a_2fb', 'a_5fb', 'a_20b', 'a_5f2bb', '_c3_bc', 'default']);
  });
});
