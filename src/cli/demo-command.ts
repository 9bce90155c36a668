/**
 * The `trellis demo` and `trellis cluster-demo` commands and their flags, declared without loading what
 * runs them (demo.ts: the placement engine; src/demo: the whole embedded stack), which each action imports.
 */
import type { Command } from 'commander';
import { batchRequestsMax } from '../../placement/limits.js';
import { intBetween, nonNegativeInt } from './args.js';

/** Sizes the demo accepts: it generates everything in memory, and one batch is one planBatch call. */
export const demoNodesMax = 100_000;
export const demoRequestsMax = 1_000_000;

export function registerDemo(program: Command): void {
  program
    .command('demo')
    .description('place a realistic workload on a generated cluster, in-process, and explain the outcome')
    .option('--seed <n>', 'random seed', nonNegativeInt, 1)
    .option('--nodes <n>', 'nodes in the generated cluster', intBetween(1, demoNodesMax), 500)
    .option('--requests <n>', 'sandboxes to place', intBetween(1, demoRequestsMax), 6000)
    .option('--batch <n>', 'requests per batch', intBetween(1, batchRequestsMax), 1000)
    .action(async (opts: { seed: number; nodes: number; requests: number; batch: number }) => {
      const { runPlacementDemo } = await import('./demo.js');
      runPlacementDemo({ ...opts, out: (line) => process.stdout.write(`${line}\n`) });
    });
}

export function registerClusterDemo(program: Command): void {
  program
    .command('cluster-demo')
    .description(
      'the whole path in process: 3 Raft replicas, simulated node workers, sandboxes through create, running, exec and terminate, a leader change',
    )
    .option('--seed <n>', 'random seed', nonNegativeInt, 1)
    .option('--nodes <n>', 'registered nodes, each with a simulated worker', intBetween(1, demoNodesMax), 200)
    .option(
      '--sandboxes <n>',
      'sandboxes taken through their lifecycle',
      intBetween(1, demoRequestsMax),
      3000,
    )
    .action(async (opts: { seed: number; nodes: number; sandboxes: number }) => {
      // Loaded by this command alone: it brings the whole embedded stack and HDR histograms.
      const { runClusterDemo } = await import('../demo/cluster-demo.js');
      await runClusterDemo({ ...opts, out: process.stdout });
    });
}
