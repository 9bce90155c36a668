/**
 * `trellis simulate` says what a trace reader left out: rows of an Alibaba 2018 batch_task trace without a
 * plan are skipped (docs/simulation.md), and the summary names how many, so a run on a trace that lost rows
 * does not look like a run on the whole trace. Runs the built CLI (npm run build first).
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCli } from './run-cli.js';

describe('trellis simulate - trace notes', () => {
  it('trellis simulate - skipped batch_task rows are counted in the summary, and none means no note', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'trellis-sim-notes-'));
    try {
      const cluster = join(dir, 'cluster.yaml');
      await writeFile(
        cluster,
        'nodes:\n  - { shape: m5, count: 2, capacity: { cpu: 16000, memory: 65536, disk: 400000 } }\n',
      );
      const rows = [
        'M1,2,j_1,1,Terminated,100,160,50,0.5',
        'M2,1,j_1,1,Terminated,160,400,,',
        'M3,1,j_2,1,Terminated,200,300,100,',
        'M4,1,j_2,1,Terminated,200,300,100,1',
      ];
      const run = async (name: string, lines: string[]) => {
        const trace = join(dir, `${name}.csv`);
        await writeFile(trace, `${lines.join('\n')}\n`);
        const workload = join(dir, `${name}.yaml`);
        await writeFile(
          workload,
          `trace: { format: alibaba-2018-batch-task, path: ${JSON.stringify(trace)} }\n`,
        );
        return runCli(['simulate', '--cluster', cluster, '--workload', workload, '--no-progress']);
      };
      const skipped = await run('skipped', rows);
      expect(skipped.stderr).toBe('');
      expect(skipped.code).toBe(0);
      expect(skipped.stdout).toMatch(/3 arrived/);
      const notes = skipped.stdout.split('\n').filter((l) => l.startsWith('note: '));
      expect(notes).toHaveLength(1);
      expect(notes[0]).toMatch(/skipped\.csv: 2 rows without a plan .* skipped$/);
      const whole = await run('whole', [rows[0] as string, rows[3] as string]);
      expect(whole.code).toBe(0);
      expect(whole.stdout).not.toMatch(/^note: /m);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
