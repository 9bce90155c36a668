/**
 * Sandbox commands against a running cluster: `create`, `get`, `ls`, `terminate`, `suspend`, `resume` and
 * `watch`. Each mutation carries a request id (`--request-id`, else a fresh one): a command that ends with
 * OUTCOME_UNKNOWN names it, and running it again with that id applies it at most once.
 */
import { type Command, InvalidArgumentError, Option } from 'commander';
import type { SandboxSpec } from '../../../scheduler/commands.js';
import { UnknownSandboxError } from '../../../scheduler/errors.js';
import { sandboxStates } from '../../../scheduler/lifecycle.js';
import { runningWaitMsDefault, runningWaitMsMax } from '../../../scheduler/limits.js';
import type { Sandbox, SchedulerEvent } from '../../../scheduler/types.js';
import { printable } from '../../lib/text.js';
import { durationMs, nonNegativeInt, positiveInt } from '../args.js';
import {
  labelArg,
  type OpsFlags,
  printFields,
  printJson,
  printTable,
  requestIdArg,
  sandboxJson,
  withClient,
  withOpsOptions,
} from './common.js';

interface CreateFlags extends OpsFlags {
  tenant: string;
  cpu: number;
  memory: number;
  disk: number;
  image?: string;
  label?: Record<string, string>;
  requestId?: string;
  wait: 'placed' | 'running';
  waitTimeout: number;
}

/** `--wait-timeout`: a duration (at least 1 ms) of at most `runningWaitMsMax`, the server's own bound. */
function waitTimeoutArg(raw: string): number {
  const ms = durationMs(raw);
  if (ms > runningWaitMsMax)
    throw new InvalidArgumentError(
      `${JSON.stringify(raw)} is not a wait of 1 ms..${runningWaitMsMax / 60_000} min`,
    );
  return ms;
}

function sandboxRow(sb: Sandbox): (string | number)[] {
  const r = sb.spec.resources;
  return [sb.id, sb.tenant, sb.state, sb.nodeId ?? '-', r.cpu, r.memory, r.disk, sb.spec.image ?? '-'];
}
const sandboxHead = ['ID', 'TENANT', 'STATE', 'NODE', 'CPU', 'MEMORY', 'DISK', 'IMAGE'];

export function registerSandboxCommands(program: Command): void {
  withOpsOptions(
    program
      .command('create')
      .description('create a sandbox; prints its id and node once placed')
      .requiredOption('--tenant <id>', 'tenant the sandbox belongs to')
      .requiredOption('--cpu <milli>', 'CPU in millicores', nonNegativeInt)
      .requiredOption('--memory <mib>', 'memory in MiB', nonNegativeInt)
      .requiredOption('--disk <mib>', 'disk in MiB', nonNegativeInt)
      .option('--image <image>', 'image to boot')
      .option('--label <key=value>', 'a label (repeatable)', labelArg)
      .option(
        '--request-id <id>',
        'idempotency key: a retry with the same id creates at most one sandbox',
        requestIdArg,
      )
      .addOption(
        new Option('--wait <state>', 'return once the sandbox is placed or running')
          .choices(['placed', 'running'])
          .default('placed'),
      )
      .option(
        '--wait-timeout <duration>',
        'with --wait running: how long to wait for the node to report it running (ms, or 5s, 2m)',
        waitTimeoutArg,
        runningWaitMsDefault,
      ),
  ).action(async (o: CreateFlags) => {
    const spec: SandboxSpec = {
      tenant: o.tenant,
      resources: { cpu: o.cpu, memory: o.memory, disk: o.disk },
      ...(o.image === undefined ? {} : { image: o.image }),
      ...(o.label === undefined ? {} : { labels: o.label }),
    };
    const sb = await withClient(o, (c) =>
      c.create(spec, {
        wait: o.wait,
        ...(o.wait === 'running' ? { runningWaitMs: o.waitTimeout } : {}),
        ...(o.requestId === undefined ? {} : { requestId: o.requestId }),
      }),
    );
    if (o.json === true) printJson(sandboxJson(sb));
    // A pending sandbox (no room before the command's deadline) says what it waits for.
    else if (sb.reason === undefined)
      printTable(['ID', 'NODE', 'STATE'], [[sb.id, sb.nodeId ?? '-', sb.state]]);
    else printTable(['ID', 'NODE', 'STATE', 'REASON'], [[sb.id, sb.nodeId ?? '-', sb.state, sb.reason]]);
  });

  withOpsOptions(
    program.command('get').description('show one sandbox').argument('<id>', 'sandbox id'),
  ).action(async (id: string, o: OpsFlags) => {
    const sb = await withClient(o, (c) => c.get(id));
    if (sb === undefined) throw new UnknownSandboxError(`sandbox ${id} does not exist`);
    if (o.json === true) {
      printJson(sandboxJson(sb));
      return;
    }
    const r = sb.spec.resources;
    printFields([
      ['ID', sb.id],
      ['Tenant', sb.tenant],
      ['State', sb.state],
      ['Node', sb.nodeId ?? '-'],
      ['Resources', `cpu ${r.cpu}m, memory ${r.memory} MiB, disk ${r.disk} MiB`],
      ['Image', sb.spec.image ?? '-'],
      [
        'Labels',
        Object.entries(sb.spec.labels ?? {})
          .map(([k, v]) => `${k}=${v}`)
          .join(', ') || '-',
      ],
      ['Request', sb.requestId],
      ...(sb.reason === undefined ? [] : ([['Reason', sb.reason]] as [string, string][])),
      ['Created', new Date(sb.createdAtMs).toISOString()],
      ['Updated', new Date(sb.updatedAtMs).toISOString()],
    ]);
  });

  withOpsOptions(
    program
      .command('ls')
      .description('list sandboxes')
      .option('--tenant <id>', 'only this tenant')
      .addOption(new Option('--state <state>', 'only sandboxes in this state').choices(sandboxStates))
      .option('--node <id>', 'only sandboxes on this node'),
  ).action(async (o: OpsFlags & { tenant?: string; state?: Sandbox['state']; node?: string }) => {
    const filter = {
      ...(o.tenant === undefined ? {} : { tenant: o.tenant }),
      ...(o.state === undefined ? {} : { state: o.state }),
      ...(o.node === undefined ? {} : { nodeId: o.node }),
    };
    const all = await withClient(o, (c) => c.list(filter));
    if (o.json === true) printJson(all.map(sandboxJson));
    else printTable(sandboxHead, all.map(sandboxRow));
  });

  const lifecycle = [
    ['terminate', 'terminate a sandbox', 'terminated'],
    ['suspend', 'suspend a running sandbox (its node keeps the snapshot)', 'suspend requested for'],
    ['resume', 'resume a suspended sandbox', 'resume requested for'],
  ] as const;
  for (const [name, description, done] of lifecycle) {
    withOpsOptions(
      program
        .command(name)
        .description(description)
        .argument('<id>', 'sandbox id')
        .option('--request-id <id>', 'idempotency key for a retry', requestIdArg),
    ).action(async (id: string, o: OpsFlags & { requestId?: string }) => {
      const options = o.requestId === undefined ? {} : { requestId: o.requestId };
      await withClient(o, (c) => c[name](id, options));
      if (o.json === true) printJson({ id, ok: true, op: name });
      else process.stdout.write(`${done} ${id}\n`);
    });
  }

  withOpsOptions(
    program
      .command('watch')
      .description('follow committed events (JSON lines with --json) until interrupted')
      .option(
        '--from <index>',
        'start at this log index (as far back as the servers hold events)',
        nonNegativeInt,
      )
      .option('--count <n>', 'stop after this many events', positiveInt),
  ).action(async (o: OpsFlags & { from?: number; count?: number }) => {
    await withClient(o, async (c) => {
      const events = c.watch(o.from === undefined ? {} : { fromIndex: o.from });
      const stop = () => void events.return?.();
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
      let seen = 0;
      try {
        for await (const e of events) {
          process.stdout.write(`${o.json === true ? JSON.stringify(e) : describeEvent(e)}\n`);
          if (o.count !== undefined && ++seen >= o.count) break;
        }
      } finally {
        process.off('SIGINT', stop);
        process.off('SIGTERM', stop);
      }
    });
  });
}

/** One line per event for people: index, kind and what changed (reasons come from machines: escaped). */
export function describeEvent(e: SchedulerEvent): string {
  return printable(eventLine(e));
}

function eventLine(e: SchedulerEvent): string {
  switch (e.kind) {
    case 'sandbox':
      return `${e.index}  sandbox ${e.sandboxId}  ${e.from} -> ${e.to}${e.nodeId === undefined ? '' : `  node ${e.nodeId}`}${e.reason === undefined ? '' : `  (${e.reason})`}`;
    case 'node':
      return `${e.index}  node ${e.nodeId}  ${e.change}${e.state === undefined ? '' : ` ${e.state}`}`;
    case 'orphan':
      return `${e.index}  orphan ${e.sandboxId} on node ${e.nodeId}  (${e.reason})`;
  }
}
