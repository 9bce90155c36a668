/**
 * What the built `trellis` loads before it parses its arguments: the static import graph of
 * dist/src/cli/main.js. Each command's action imports what runs it (the scheduler, Raft, nats.js, zod, the
 * gateway, metrics, the simulator), so `--help`, `--version` and a bad flag answer in a fraction of the
 * start-up every command used to pay (about 1 CPU s on this machine), and the CLI tests that run the binary
 * dozens of times do not pay it either. A static import of one of those packages from a command's
 * registration brings the cost back; this test names the import chain that did it.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { cliMain } from '../../src/testing/replica-process.js';

/** The packages the CLI may load to declare its commands: the parser and the table printer. */
const startupPackages = new Set(['commander', 'cli-table3']);

/** An `import … from '…'`, `export … from '…'` or `import '…'` statement of emitted JavaScript. */
const staticImport = /^(?:import|export)\s[^;]*?from\s*'([^']+)'|^import\s*'([^']+)'/gm;

interface Graph {
  /** Each own module reached, with the module that first imported it. */
  readonly parents: Map<string, string | undefined>;
  /** Each package reached, with the own module that first imported it. */
  readonly packages: Map<string, string>;
}

function packageOf(specifier: string): string {
  const parts = specifier.split('/');
  return specifier.startsWith('@') ? `${parts[0]}/${parts[1]}` : (parts[0] ?? specifier);
}

/** The static imports of `entry` and of every own module it reaches (dynamic `import()` is not followed). */
function staticGraph(entry: string): Graph {
  const parents = new Map<string, string | undefined>([[entry, undefined]]);
  const packages = new Map<string, string>();
  const queue = [entry];
  for (let file = queue.shift(); file !== undefined; file = queue.shift()) {
    for (const m of readFileSync(file, 'utf8').matchAll(staticImport)) {
      const specifier = m[1] ?? m[2] ?? '';
      if (specifier.startsWith('node:')) continue;
      if (specifier.startsWith('.')) {
        const target = resolve(dirname(file), specifier);
        if (!parents.has(target)) {
          parents.set(target, file);
          queue.push(target);
        }
      } else if (!packages.has(packageOf(specifier))) {
        packages.set(packageOf(specifier), file);
      }
    }
  }
  return { parents, packages };
}

function chainOf(graph: Graph, file: string): string {
  const root = resolve(dirname(cliMain), '../..');
  const chain: string[] = [];
  for (let f: string | undefined = file; f !== undefined; f = graph.parents.get(f))
    chain.unshift(f.slice(root.length + 1));
  return chain.join(' > ');
}

describe('trellis cli - start-up imports', () => {
  it('trellis cli - declaring the commands loads only commander and cli-table3; each action loads the rest', () => {
    expect(existsSync(cliMain), `${cliMain} missing: run npm run build first`).toBe(true);
    const graph = staticGraph(cliMain);
    const extra = [...graph.packages]
      .filter(([name]) => !startupPackages.has(name))
      .map(([name, by]) => `${name} (${chainOf(graph, by)})`);
    expect(extra).toEqual([]);
    // The graph is read at all: commander is found, and so are the command modules main.js registers.
    expect([...graph.packages.keys()]).toContain('commander');
    expect(graph.parents.has(join(dirname(cliMain), 'server-command.js'))).toBe(true);
  });

  it('trellis cli - the graph reader follows re-exports and finds a package two modules down', () => {
    // The reader itself, on the real tree: server.js (what `trellis server` runs) reaches nats and zod.
    const graph = staticGraph(join(dirname(cliMain), 'server.js'));
    expect([...graph.packages.keys()]).toEqual(expect.arrayContaining(['nats', 'zod', 'ioredis', 'pino']));
    const ioredisBy = graph.packages.get('ioredis');
    expect(ioredisBy).toBeDefined();
    expect(chainOf(graph, ioredisBy as string).split(' > ').length).toBeGreaterThan(2);
  });
});
