/**
 * Node and cluster commands: `nodes`, `node register|drain|cordon|uncordon|remove`, and `status` (the
 * replica that answers, the leader, term, commit and applied index, nodes and utilization).
 */
import { type Command, InvalidArgumentError } from 'commander';
import type { NodeSpec, NodeView } from '../../../placement/index.js';
import { positiveInt } from '../args.js';
import {
  labelArg,
  nodeJson,
  type OpsFlags,
  percent,
  printFields,
  printJson,
  printTable,
  requestIdArg,
  withClient,
  withOpsOptions,
} from './common.js';

/** `MODELxCOUNT`, e.g. `a100x4`. */
export function gpuArg(raw: string): { model: string; count: number } {
  const m = /^(.+)x(\d{1,3})$/.exec(raw.trim());
  if (m === null || (m[1] ?? '') === '')
    throw new InvalidArgumentError(`${JSON.stringify(raw)} is not MODELxCOUNT (e.g. a100x4)`);
  return { model: m[1] as string, count: Number(m[2]) };
}

function nodeRow(n: NodeView): (string | number)[] {
  const c = n.spec.capacity;
  const used = (k: 'cpu' | 'memory' | 'disk') => `${n.allocated[k]}/${c[k]}`;
  const labels =
    Object.entries(n.spec.labels)
      .map(([k, v]) => `${k}=${v}`)
      .join(',') || '-';
  const gpu = n.spec.gpu === undefined ? '-' : `${n.spec.gpu.model}x${n.spec.gpu.count}`;
  return [n.id, n.state, used('cpu'), used('memory'), used('disk'), gpu, labels];
}

interface RegisterFlags extends OpsFlags {
  cpu: number;
  memory: number;
  disk: number;
  label?: Record<string, string>;
  gpu?: { model: string; count: number };
  requestId?: string;
}

export function registerNodeCommands(program: Command): void {
  withOpsOptions(program.command('nodes').description('list nodes with their allocation')).action(
    async (o: OpsFlags) => {
      const nodes = await withClient(o, (c) => c.nodes());
      if (o.json === true) printJson(nodes.map(nodeJson));
      else printTable(['ID', 'STATE', 'CPU', 'MEMORY', 'DISK', 'GPU', 'LABELS'], nodes.map(nodeRow));
    },
  );

  const node = program.command('node').description('register, drain, cordon, uncordon or remove a node');
  withOpsOptions(
    node
      .command('register')
      .description('register a node with its capacity')
      .argument('<id>', 'node id')
      .requiredOption('--cpu <milli>', 'CPU capacity in millicores', positiveInt)
      .requiredOption('--memory <mib>', 'memory capacity in MiB', positiveInt)
      .requiredOption('--disk <mib>', 'disk capacity in MiB', positiveInt)
      .option('--label <key=value>', 'a label (repeatable)', labelArg)
      .option('--gpu <MODELxCOUNT>', 'GPUs, e.g. a100x4', gpuArg)
      .option('--request-id <id>', 'idempotency key for a retry', requestIdArg),
  ).action(async (id: string, o: RegisterFlags) => {
    const spec: NodeSpec = {
      id,
      capacity: { cpu: o.cpu, memory: o.memory, disk: o.disk },
      labels: o.label ?? {},
      state: 'ready',
      ...(o.gpu === undefined ? {} : { gpu: o.gpu }),
    };
    await withClient(o, (c) =>
      c.registerNode(spec, o.requestId === undefined ? {} : { requestId: o.requestId }),
    );
    if (o.json === true) printJson({ id, ok: true, op: 'register' });
    else process.stdout.write(`registered node ${id}\n`);
  });

  const states = [
    ['drain', 'draining', 'stop placing on a node; its sandboxes stay'],
    ['cordon', 'cordoned', 'stop placing on a node'],
    ['uncordon', 'ready', 'place on a node again'],
  ] as const;
  for (const [name, state, description] of states) {
    withOpsOptions(
      node
        .command(name)
        .description(description)
        .argument('<id>', 'node id')
        .option('--request-id <id>', 'idempotency key for a retry', requestIdArg),
    ).action(async (id: string, o: OpsFlags & { requestId?: string }) => {
      await withClient(o, (c) =>
        c.setNodeState(id, state, o.requestId === undefined ? {} : { requestId: o.requestId }),
      );
      if (o.json === true) printJson({ id, ok: true, op: name, state });
      else process.stdout.write(`node ${id} is ${state}\n`);
    });
  }
  withOpsOptions(
    node
      .command('remove')
      .description('remove an empty node')
      .argument('<id>', 'node id')
      .option('--request-id <id>', 'idempotency key for a retry', requestIdArg),
  ).action(async (id: string, o: OpsFlags & { requestId?: string }) => {
    await withClient(o, (c) => c.removeNode(id, o.requestId === undefined ? {} : { requestId: o.requestId }));
    if (o.json === true) printJson({ id, ok: true, op: 'remove' });
    else process.stdout.write(`removed node ${id}\n`);
  });

  withOpsOptions(
    program
      .command('status')
      .description('the replica group: leader, term, log positions, nodes and utilization'),
  ).action(async (o: OpsFlags) => {
    const { status, nodes } = await withClient(o, async (c) => ({
      status: await c.status(),
      nodes: await c.nodes(),
    }));
    const sum = (f: (n: NodeView) => number) => nodes.reduce((a, n) => a + f(n), 0);
    const util = {
      cpu: { used: sum((n) => n.allocated.cpu), capacity: sum((n) => n.spec.capacity.cpu) },
      memory: { used: sum((n) => n.allocated.memory), capacity: sum((n) => n.spec.capacity.memory) },
      disk: { used: sum((n) => n.allocated.disk), capacity: sum((n) => n.spec.capacity.disk) },
    };
    const ready = nodes.filter((n) => n.state === 'ready').length;
    if (o.json === true) {
      printJson({
        cluster: o.cluster,
        leader: status.leader ?? null,
        replica: status.replica,
        role: status.role,
        term: status.term,
        commit: status.commit,
        applied: status.applied,
        replicas: status.replicas,
        nodes: { total: nodes.length, ready },
        utilization: util,
        sandboxes: status.stats.sandboxes,
        pending: status.stats.pending,
      });
      return;
    }
    printFields([
      ['Cluster', o.cluster],
      ['Leader', status.leader ?? '(none)'],
      ['Answered by', `${status.replica} (${status.role})`],
      ['Replicas', status.replicas.join(', ')],
      ['Term', status.term],
      ['Commit index', status.commit],
      ['Applied index', status.applied],
      ['Nodes', `${nodes.length} (${ready} ready)`],
      ['CPU', `${percent(util.cpu.used, util.cpu.capacity)} of ${util.cpu.capacity}m`],
      ['Memory', `${percent(util.memory.used, util.memory.capacity)} of ${util.memory.capacity} MiB`],
      ['Disk', `${percent(util.disk.used, util.disk.capacity)} of ${util.disk.capacity} MiB`],
      ['Sandboxes', `${status.stats.sandboxes} (${status.stats.pending} pending)`],
    ]);
  });
}
