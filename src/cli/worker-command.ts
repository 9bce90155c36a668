/**
 * The `trellis worker` command and its flags, declared without loading what runs it (worker.ts: the node
 * worker, its drivers, NATS, metrics), which the action imports.
 */
import { type Command, InvalidArgumentError, Option } from 'commander';
import { resourceAmountMax } from '../../placement/limits.js';
import { nodeItemsMax } from '../api/limits.js';
import { type NodeId, nodeId as parseNodeId } from '../lib/ids.js';
import type { DriverKind } from '../worker/driver.js';
import { bootsConcurrentLimit, workerDefaults } from '../worker/limits.js';
import { durationMs, intBetween, nonNegativeInt, port } from './args.js';
import { type ConnectionFlags, withConnectionOptions } from './connect-options.js';

/** Simulated nodes one process runs: as many as one heartbeat call carries (one call beats for all). */
export const simNodesMax = nodeItemsMax;
/** Labels one node may carry (the scheduler's own bound on a node spec is looser). */
export const workerLabelsMax = 64;
export const heartbeatIntervalMsDefault = 1_000;
export const workerStopTimeoutMsDefault = 5_000;
export const workerConnectTimeoutMsDefault = 30_000;
const driverKinds: readonly DriverKind[] = ['sim', 'process', 'qemu'];

export interface WorkerFlags extends ConnectionFlags {
  nodeId: NodeId;
  driver?: DriverKind;
  cpu?: number;
  memory?: number;
  disk?: number;
  label: Record<string, string>;
  data: string;
  simNodes?: number;
  seed: number;
  heartbeatInterval: number;
  bootsConcurrent?: number;
  execsConcurrent?: number;
  metricsPort?: number;
  stopTimeout: number;
}

export function registerWorker(program: Command): void {
  const cmd = program
    .command('worker')
    .description('run the node worker of one node (or --sim-nodes N simulated nodes) against a cluster')
    .requiredOption('--node-id <id>', 'this node (with --sim-nodes: the prefix of ID-0..ID-N-1)', nodeIdArg)
    .addOption(
      new Option('--driver <kind>', 'what stands in for a VM (default sim with --sim-nodes)').choices(
        driverKinds,
      ),
    )
    .option('--cpu <millicores>', 'capacity in millicores (default: the CPUs of this machine)', amountArg)
    .option('--memory <mib>', 'capacity in MiB (default: the memory of this machine)', amountArg)
    .option('--disk <mib>', 'capacity in MiB (default: the free disk under --data)', amountArg)
    .option('--label <key=value>', 'a node label (repeatable)', labelArg, {})
    .option('--data <dir>', 'directory for disks and states (one subdirectory per node)', 'trellis-worker')
    .option('--sim-nodes <n>', `run N simulated nodes in this process (1..${simNodesMax})`, simNodesArg)
    .option('--seed <n>', "seed of the sim driver's latency model (node i uses seed + i)", nonNegativeInt, 1)
    .option(
      '--heartbeat-interval <duration>',
      'time between heartbeats (ms, or 1s)',
      durationMs,
      heartbeatIntervalMsDefault,
    )
    .option(
      '--boots-concurrent <n>',
      `boots (create, resume) one node runs at once (default ${workerDefaults.bootsConcurrentMax}; a sim node costs nothing to boot)`,
      intBetween(1, bootsConcurrentLimit),
    )
    .option(
      '--execs-concurrent <n>',
      `commands one node runs at once before refusing more (default ${workerDefaults.execsConcurrentMax})`,
      intBetween(1, bootsConcurrentLimit),
    )
    .option('--metrics-port <port>', 'serve /metrics, /healthz and /readyz on 127.0.0.1:PORT', port)
    .option(
      '--stop-timeout <duration>',
      'on SIGTERM/SIGINT, exit after this long even if NATS has not closed',
      durationMs,
      workerStopTimeoutMsDefault,
    );
  withConnectionOptions(cmd, workerConnectTimeoutMsDefault).action(async (o: WorkerFlags) => {
    const { runWorker } = await import('./worker.js');
    await runWorker(o);
  });
}

function nodeIdArg(raw: string): NodeId {
  try {
    return parseNodeId(raw, 'node id');
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
}

function amountArg(raw: string): number {
  return intBetween(1, resourceAmountMax)(raw);
}

const simNodesArg = intBetween(1, simNodesMax);

const labelPattern = /^([^=\s]{1,256})=(.{1,256})$/;

function labelArg(raw: string, previous: Record<string, string>): Record<string, string> {
  const m = labelPattern.exec(raw);
  if (m === null || m[1] === undefined || m[2] === undefined) {
    throw new InvalidArgumentError(`${JSON.stringify(raw)} is not key=value (1..256 characters each)`);
  }
  if (m[1] in previous) throw new InvalidArgumentError(`label ${m[1]} is given twice`);
  if (Object.keys(previous).length >= workerLabelsMax) {
    throw new InvalidArgumentError(`at most ${workerLabelsMax} labels`);
  }
  return { ...previous, [m[1]]: m[2] };
}
