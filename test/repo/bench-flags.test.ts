/**
 * The benchmark scripts are run from the outside too (`npm run bench:* -- FLAGS`): a bad or unknown flag ends
 * one with a single `error: … (USAGE)` line and exit code 2, as the CLI does, not a stack trace or a run on
 * NaN. Runs the built scripts (dist/bench), each with flags that fail before any work starts.
 */
import { spawnSync } from 'node:child_process';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

const benchDir = resolve(import.meta.dirname, '../../dist/bench');

const cases: [script: string, args: string[], mentions: RegExp][] = [
  ['simulate.js', ['--arrivals', 'abc'], /--arrivals/],
  ['simulate.js', ['--arrivals', '1e3'], /--arrivals/],
  ['simulate.js', ['--nodes', '0'], /--nodes/],
  ['simulate.js', ['--window-ms', '-1'], /--window-ms/],
  ['simulate.js', ['--json'], /--json/],
  ['simulate.js', ['--bogus'], /--bogus/],
  ['gpu-policies.js', ['--seed', '1.5'], /--seed/],
  ['gpu-policies.js', ['--target-pct', 'NaN'], /--target-pct/],
  ['placement-tail.js', ['--runs', '0x10'], /--runs/],
  ['placement.js', ['--nope'], /--nope/],
  ['fuzz.js', ['--seconds', '0'], /--seconds/],
  ['raft-nats.js', ['--route', 'sideways'], /--route/],
  ['worker.js', ['--drivers'], /--drivers/],
];

describe('bench flags', () => {
  it.each(cases)('bench flags - %s %j: one USAGE line, exit 2', (script, args, mentions) => {
    const r = spawnSync(process.execPath, [join(benchDir, script), ...args], {
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(r.status).toBe(2);
    expect(r.stdout).toBe('');
    const lines = r.stderr.trimEnd().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^error: .+ \(USAGE\)$/);
    expect(lines[0]).toMatch(mentions);
  });
});
