import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const run = promisify(execFile);
const repo = join(import.meta.dirname, '..', '..');
/** Longest any one step (pack, install, compile, an example's run) may take before it counts as a hang. */
const stepMsMax = 180_000;

/** The README's TypeScript examples that import the package (not repo paths), by the module they import. */
async function readmeExamples(): Promise<Map<string, string>> {
  const readme = await readFile(join(repo, 'README.md'), 'utf8');
  const examples = new Map<string, string>();
  for (const m of readme.matchAll(/```ts\n([\s\S]*?)```/g)) {
    const code = m[1] ?? '';
    const from = /from '(trellis(?:\/[a-z]+)?)'/.exec(code)?.[1];
    if (from !== undefined) examples.set(from, code);
  }
  return examples;
}

describe('package - the packed tarball as a consumer meets it', () => {
  let dir: string;
  let consumer: string;

  beforeAll(async () => {
    expect(existsSync(join(repo, 'dist', 'src', 'index.js')), 'dist missing: run npm run build first').toBe(
      true,
    );
    dir = await mkdtemp(join(tmpdir(), 'trellis-pack-'));
    consumer = join(dir, 'consumer');
    await mkdir(consumer);
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('package - npm pack installs into a strict TypeScript project that type-checks and runs the README examples', async () => {
    // Packs the repository as published (package.json `files` and `exports`), installs the tarball into an
    // empty ESM project (dependencies from npm's local cache first), writes the README's embedding,
    // placement and simulation examples there unchanged, compiles them with the strictest options this
    // repository uses (declarations of the package included: skipLibCheck off for it), and runs each to
    // completion.
    const packed = await run('npm', ['pack', '--json', '--pack-destination', dir], {
      cwd: repo,
      timeout: stepMsMax,
    });
    const [info] = JSON.parse(packed.stdout) as { filename: string; files: { path: string }[] }[];
    expect(info).toBeDefined();
    const shipped = new Set(info?.files.map((f) => f.path));
    for (const f of ['LICENSE', 'README.md', 'package.json', 'dist/src/index.d.ts', 'dist/src/placement.js'])
      expect(shipped, f).toContain(f);
    expect([...shipped].filter((f) => f.startsWith('test/') || f.startsWith('dist/test/'))).toEqual([]);

    await writeFile(
      join(consumer, 'package.json'),
      `${JSON.stringify({ name: 'consumer', private: true, type: 'module' }, null, 2)}\n`,
    );
    await run(
      'npm',
      [
        'install',
        '--prefer-offline',
        '--no-audit',
        '--no-fund',
        '--ignore-scripts',
        join(dir, info?.filename ?? ''),
      ],
      { cwd: consumer, timeout: stepMsMax },
    );

    const examples = await readmeExamples();
    expect([...examples.keys()].sort()).toEqual(['trellis', 'trellis/placement', 'trellis/sim']);
    await writeFile(join(consumer, 'embedding.ts'), examples.get('trellis') ?? '');
    await writeFile(join(consumer, 'placement.ts'), examples.get('trellis/placement') ?? '');
    await writeFile(join(consumer, 'sim.ts'), examples.get('trellis/sim') ?? '');
    const tsconfig = {
      compilerOptions: {
        target: 'ES2023',
        lib: ['ES2023'],
        module: 'NodeNext',
        moduleResolution: 'NodeNext',
        strict: true,
        noUncheckedIndexedAccess: true,
        exactOptionalPropertyTypes: true,
        verbatimModuleSyntax: true,
        noImplicitOverride: true,
        // The consumer's Node types come from this repository's copy; nothing else is installed for them.
        typeRoots: [join(repo, 'node_modules', '@types')],
        types: ['node'],
        outDir: 'out',
      },
      files: ['embedding.ts', 'placement.ts', 'sim.ts'],
    };
    await writeFile(join(consumer, 'tsconfig.json'), `${JSON.stringify(tsconfig, null, 2)}\n`);
    const tsc = join(repo, 'node_modules', 'typescript', 'bin', 'tsc');
    // Declarations are checked too (skipLibCheck off), so a broken .d.ts in the package fails here; errors
    // inside other packages' declarations (nats.js's do not pass exactOptionalPropertyTypes) are theirs.
    const compiled = await run(process.execPath, [tsc, '-p', consumer], {
      cwd: consumer,
      timeout: stepMsMax,
    }).then(
      (r) => r.stdout,
      (err: { stdout?: string }) => err.stdout ?? String(err),
    );
    const ours = compiled
      .split('\n')
      .filter((l) => /^\S+\.ts\(\d+,\d+\): error/.test(l))
      .filter((l) => !l.startsWith('node_modules/') || l.startsWith('node_modules/trellis/'));
    expect(ours, compiled).toEqual([]);
    expect(existsSync(join(consumer, 'out', 'embedding.js')), compiled).toBe(true);

    const placement = await run(process.execPath, [join(consumer, 'out', 'placement.js')], {
      cwd: consumer,
      timeout: stepMsMax,
    });
    expect(placement.stdout).toContain("nodeId: 'n1'");
    // The capacity simulation as a library (`trellis/sim`): a what-if of two policies over 200 arrivals.
    const sim = await run(process.execPath, [join(consumer, 'out', 'sim.js')], {
      cwd: consumer,
      timeout: stepMsMax,
    });
    expect(sim.stdout).toMatch(/^dot: \d+ of 200 placed\nspread: \d+ of 200 placed\n$/);
    // The embedding example ends by itself: close() ends the watch loop, and nothing keeps the process alive.
    const embedding = await run(process.execPath, [join(consumer, 'out', 'embedding.js')], {
      cwd: consumer,
      timeout: stepMsMax,
    });
    expect(embedding.stdout).toMatch(/ placed on n1\n/);
    expect(embedding.stdout).toContain('event sandbox');
  }, 600_000);
});
