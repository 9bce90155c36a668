/**
 * The `trellis simulate` command and its flags, declared without loading the simulator (simulate.ts runs
 * it: src/sim, the scheduler core, the trace readers), which the action imports.
 */
import type { Command } from 'commander';
import { TrellisError } from '../lib/errors.js';
import { outputFile } from './args.js';
import type { SimulateFlags } from './simulate.js';

/** The policies `--policy` names (src/sim's policy specs build them). */
export const builtinPolicies = [
  'dot',
  'dominant',
  'blend',
  'gpu-bestfit',
  'gpu-dot',
  'fgd',
  'spread',
] as const;

export function registerSimulate(program: Command): void {
  program
    .command('simulate')
    .description(
      'capacity simulation: replay a workload in virtual time through the scheduler code (docs/simulation.md)',
    )
    .option('--cluster <file>', 'cluster spec, YAML or JSON')
    .option('--node-list <file>', 'an Alibaba GPU v2023 node list (CSV) as the cluster')
    .requiredOption('--workload <file>', 'workload spec, YAML or JSON (synthetic, or naming a trace)')
    .option('--protocol <name>', 'replay | inflation', 'replay')
    .option('--target-pct <n>', 'inflation: stop when arrived demand reaches this % of capacity', '100')
    .option(
      '--inflation-resource <r>',
      'inflation: cpu | memory | gpu (default gpu when the cluster has GPUs)',
    )
    .option('--policy <names>', `comma-separated built-in policies (${builtinPolicies.join(', ')})`, 'dot')
    .option('--policies <file>', 'a YAML/JSON list of policy specs, instead of --policy')
    .option('--compare-cluster <file...>', 'what-if: more cluster specs to run the same workload on')
    .option('--batch <n>', 'requests planned together at most')
    .option('--window-ms <n>', 'virtual ms a batch collects arrivals (0: one instant)', '0')
    .option(
      '--pending-timeout-s <n>',
      'virtual seconds a request may wait for room (0: rejected at once)',
      '30',
    )
    .option('--seed <n>', 'seed of every random choice', '1')
    .option('--find-min-nodes <shape>', 'sizing: smallest count of this node shape within --max-rejected')
    .option('--max-rejected <pct>', 'sizing: rejected share allowed (default 1%)')
    .option('--json <file>', 'write the JSON report', outputFile)
    .option('--csv <file>', 'write the samples as CSV', outputFile)
    .option('--html <file>', 'write the self-contained HTML report', outputFile)
    .option('--no-progress', 'no progress bar')
    .action(async (flags: SimulateFlags) => {
      const { runSimulate } = await import('./simulate.js');
      try {
        await runSimulate(flags, (line) => process.stdout.write(`${line}\n`));
      } catch (err) {
        if (!(err instanceof TrellisError)) throw err;
        process.stderr.write(`error: ${err.message.split('\n')[0]} (${err.code})\n`);
        process.exitCode = 1;
      }
    });
}
