/**
 * Alibaba cluster traces.
 *
 * v2018 `batch_task.csv` (no header): task_name, instance_num, job_name, task_type, status, start_time,
 * end_time, plan_cpu, plan_mem. Units: times in seconds; `plan_cpu` is cores × 100 (100 = one core), so
 * millicores = plan_cpu × 10; `plan_mem` is normalised to [0, 100] of one machine's memory, so MiB =
 * plan_mem / 100 × `machineMemoryMiB` (the trace does not publish the machine size; default 128 GiB). Every
 * task becomes `instance_num` sandboxes (at most `instancesPerTaskMax`) of its plan, living from start to end
 * (at least 1 ms; `end_time` 0 is a task not ended when the trace was cut, which lives for ever).
 * Rows without a plan (empty plan_cpu or plan_mem, as some are) are skipped and counted.
 *
 * GPU v2023 (`openb_pod_list_*.csv`, header): name, cpu_milli, memory_mib, num_gpu, gpu_milli, gpu_spec, qos,
 * pod_phase, creation_time, deletion_time, scheduled_time. Units: cpu in millicores, memory in MiB, `num_gpu`
 * whole GPUs (0–8), `gpu_milli` the share of one GPU when `num_gpu` is 1 (1000 = whole), times in seconds;
 * `gpu_spec` lists accepted GPU models separated by `|` (empty: any), kept as a constraint on the node label
 * `gpuModel`. Node list (`openb_node_list_*.csv`, header): sn, cpu_milli, memory_mib, gpu, model.
 */
import type { SandboxSpec } from '../../../scheduler/commands.js';
import { TraceFormatError } from '../errors.js';
import type { ClusterSpec, NodeGroup } from '../spec.js';
import type { Arrival } from '../workload.js';
import { byTime, eachRow, gpuAsk, idOf, intOf, num, reqNum, SpecPool } from './csv.js';

export const batchTaskColumns = [
  'task_name',
  'instance_num',
  'job_name',
  'task_type',
  'status',
  'start_time',
  'end_time',
  'plan_cpu',
  'plan_mem',
] as const;
/** Sandboxes one batch task expands to at most. */
export const instancesPerTaskMax = 10_000;
export const defaultMachineMemoryMiB = 131_072;

export interface BatchTaskRead {
  readonly arrivals: Arrival[];
  /** Rows without a plan, skipped. */
  readonly skipped: number;
}

export async function readAlibabaBatchTask(
  path: string,
  options: { limit?: number; machineMemoryMiB?: number } = {},
): Promise<BatchTaskRead> {
  const memUnit = (options.machineMemoryMiB ?? defaultMachineMemoryMiB) / 100;
  const pool = new SpecPool();
  const out: Arrival[] = [];
  let skipped = 0;
  await eachRow(
    path,
    {
      header: false,
      names: batchTaskColumns,
      ...(options.limit === undefined ? {} : { limit: options.limit }),
    },
    (row) => {
      const cpu = num(row, 'plan_cpu', { optional: true });
      const mem = num(row, 'plan_mem', { optional: true });
      if (cpu === undefined || mem === undefined) {
        skipped += 1;
        return;
      }
      const start = reqNum(row, 'start_time');
      const end = reqNum(row, 'end_time');
      const n = reqNum(row, 'instance_num');
      if (!Number.isInteger(n) || n > instancesPerTaskMax)
        throw new TraceFormatError(
          row.line,
          'instance_num',
          `must be a whole number up to ${instancesPerTaskMax}`,
        );
      if (mem > 100)
        throw new TraceFormatError(row.line, 'plan_mem', `normalised memory must be in [0, 100], got ${mem}`);
      const spec = pool.get({
        tenant: 'batch',
        resources: { cpu: intOf(row, 'plan_cpu', cpu * 10), memory: Math.round(mem * memUnit), disk: 0 },
      });
      // end_time 0 is a task that had not ended when the trace was cut: it lives for ever.
      if (end !== 0 && end < start) throw new TraceFormatError(row.line, 'end_time', 'ends before it starts');
      const lifetimeMs = end === 0 ? Number.POSITIVE_INFINITY : Math.max(1, Math.round((end - start) * 1000));
      for (let i = 0; i < n; i++)
        out.push({ id: `bt${row.line}-${i}`, atMs: Math.round(start * 1000), spec, lifetimeMs });
    },
  );
  return { arrivals: byTime(out), skipped };
}

export async function readAlibabaGpuPods(path: string, limit?: number): Promise<Arrival[]> {
  const pool = new SpecPool();
  const ids = new Map<string, number>();
  const out: Arrival[] = [];
  await eachRow(path, { header: true, ...(limit === undefined ? {} : { limit }) }, (row) => {
    const created = reqNum(row, 'creation_time');
    const deleted = num(row, 'deletion_time', { optional: true });
    if (deleted !== undefined && deleted < created)
      throw new TraceFormatError(row.line, 'deletion_time', 'deleted before created');
    const count = reqNum(row, 'num_gpu');
    const milli = reqNum(row, 'gpu_milli');
    if (milli > 1000)
      throw new TraceFormatError(row.line, 'gpu_milli', `a share of one GPU is at most 1000, got ${milli}`);
    const models = row
      .get('gpu_spec')
      .split('|')
      .map((m) => m.trim())
      .filter((m) => m !== '' && m !== 'nan');
    const spec: SandboxSpec = {
      tenant: 'openb',
      resources: {
        cpu: intOf(row, 'cpu_milli', reqNum(row, 'cpu_milli')),
        memory: intOf(row, 'memory_mib', reqNum(row, 'memory_mib')),
        disk: 0,
      },
      ...gpuAsk(row, 'num_gpu', count, milli),
      ...(models.length === 0
        ? {}
        : { constraints: [{ label: 'gpuModel', op: 'in' as const, values: models }] }),
    };
    out.push({
      id: idOf(row, 'name', ids),
      atMs: Math.round(created * 1000),
      spec: pool.get(spec),
      lifetimeMs:
        deleted === undefined
          ? Number.POSITIVE_INFINITY
          : Math.max(1, Math.round((deleted - created) * 1000)),
    });
  });
  return byTime(out);
}

/** Node disk given to trace nodes, which publish none (requests ask for none either). MiB. */
export const traceNodeDiskMiB = 1 << 20;

/** A GPU model as the node list names it; it becomes part of node ids (letters, digits, '_' and '-'). */
const modelPattern = /^[A-Za-z0-9_-]{1,64}$/;

/** A node list as a cluster spec: one group per distinct (cpu, memory, GPUs, model), labelled `gpuModel`. */
export async function readAlibabaGpuNodes(path: string): Promise<ClusterSpec> {
  const groups = new Map<string, NodeGroup>();
  await eachRow(path, { header: true }, (row) => {
    const cpu = intOf(row, 'cpu_milli', reqNum(row, 'cpu_milli'));
    const memory = intOf(row, 'memory_mib', reqNum(row, 'memory_mib'));
    const gpus = reqNum(row, 'gpu');
    if (!Number.isInteger(gpus) || gpus > 64)
      throw new TraceFormatError(row.line, 'gpu', `must be a whole number up to 64`);
    const model = row.get('model').trim();
    const hasModel = gpus > 0 && model !== '' && model !== 'nan';
    if (gpus > 0 && !hasModel)
      throw new TraceFormatError(row.line, 'model', 'a node with GPUs names their model');
    if (hasModel && !modelPattern.test(model))
      throw new TraceFormatError(
        row.line,
        'model',
        `not a model name: ${JSON.stringify(model.slice(0, 40))}`,
      );
    // Exact sizes in the name (node ids are built from it): whole cores and GiB read as such, else millicores
    // and MiB, so two shapes never share a name (and a group) by rounding.
    const cores = cpu % 1000 === 0 ? `${cpu / 1000}c` : `${cpu}m`;
    const mem = memory % 1024 === 0 ? `${memory / 1024}g` : `${memory}mi`;
    const shape = `${hasModel ? model : 'cpu'}-${cores}-${mem}-${gpus}`;
    const g = groups.get(shape);
    if (g !== undefined) {
      groups.set(shape, { ...g, count: g.count + 1 });
      return;
    }
    groups.set(shape, {
      shape,
      count: 1,
      capacity: { cpu, memory, disk: traceNodeDiskMiB },
      ...(hasModel ? { gpu: { model, count: gpus }, labels: { gpuModel: model } } : {}),
    });
  });
  return { nodes: [...groups.values()] };
}
