import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import { exitCodes } from '../../src/cli/errors.js';
import { registerServer } from '../../src/cli/server.js';

const requiredAfterMerge = new Set(['--id', '--peers', '--data']);
const operations = join(import.meta.dirname, '..', '..', 'docs', 'operations.md');

describe('trellis cli - docs/operations.md agrees with the command', () => {
  it('trellis cli - the trellis server flag table lists every flag with the default --help shows', async () => {
    // Registers the server command as the CLI does and compares each option's default (what --help prints)
    // with the table's cell; once, the docs said 100,000 snapshot entries while the flag defaulted to 10,000.
    const program = new Command();
    registerServer(program);
    const server = program.commands.find((c) => c.name() === 'server');
    const docs = await readFile(operations, 'utf8');
    // The table under the header `| flag | default | meaning |`, up to the first line that is not a row.
    const start = docs.indexOf('| flag | default | meaning |');
    expect(start).toBeGreaterThan(0);
    const end = docs.indexOf('\n\n', start);
    const table = docs.slice(start, end === -1 ? undefined : end);
    const rows = new Map(
      [...table.matchAll(/^\| `(--[a-z-]+) [^`]*` \| ([^|]+) \|/gm)].map((m) => [m[1], (m[2] ?? '').trim()]),
    );
    const options = (server?.options ?? []).filter((o) => !o.hidden && o.long !== '--help');
    expect(options.length).toBeGreaterThan(8);
    for (const o of options) {
      // --id, --peers and --data may come from the flags, TRELLIS_* or --config, so commander cannot mark them
      // mandatory; the server refuses to start without them.
      const required = o.mandatory || requiredAfterMerge.has(o.long ?? '');
      const want = required ? 'required' : o.defaultValue === undefined ? 'none' : String(o.defaultValue);
      expect(rows.get(o.long ?? ''), o.long).toBe(want);
    }
  });

  it('trellis cli - the exit code table lists every exit code the CLI uses', async () => {
    // Each value of exitCodes appears as a row of the table, so a new code cannot go undocumented.
    const docs = await readFile(operations, 'utf8');
    const start = docs.indexOf('## The `trellis` command: errors and exit codes');
    const end = docs.indexOf('\n## ', start + 1);
    const section = docs.slice(start, end === -1 ? undefined : end);
    const listed = new Set([...section.matchAll(/^\| (\d+) \|/gm)].map((m) => Number(m[1])));
    expect([...listed].sort((a, b) => a - b)).toEqual(Object.values(exitCodes).sort((a, b) => a - b));
  });
});
