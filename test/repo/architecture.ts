/**
 * The architecture rules of DESIGN.md, as code: which folder may import which, and what the pure cores may
 * not touch. Read by `architecture.test.ts` over the real tree, and unit-tested on synthetic sources so the
 * checker itself is known to fail on a wrong arrow.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { dirname, join, normalize, relative, sep } from 'node:path';
import ts from 'typescript';

/** The rooms of the design. Files outside these rooms (test/, bench/) are not constrained. */
export type Room =
  | 'placement'
  | 'raft-core'
  | 'raft'
  | 'scheduler-core'
  | 'scheduler'
  | 'lib-pure'
  | 'lib'
  | 'src'
  | 'tooling';

/** Helpers every room may import: dependency-free and pure. */
const pureHelpers = new Set(['src/lib/assert.ts', 'src/lib/errors.ts', 'src/lib/ids.ts', 'src/lib/prng.ts']);

export function roomOf(path: string): Room {
  const p = path.split(sep).join('/');
  if (pureHelpers.has(p)) return 'lib-pure';
  if (p.startsWith('src/lib/')) return 'lib';
  if (p.startsWith('placement/')) return 'placement';
  if (p.startsWith('raft/core/')) return 'raft-core';
  if (p.startsWith('raft/')) return 'raft';
  if (p.startsWith('scheduler/core/')) return 'scheduler-core';
  if (p.startsWith('scheduler/')) return 'scheduler';
  if (p.startsWith('src/')) return 'src';
  return 'tooling';
}

/** For each room, the rooms it may import from (its own always included). */
const allowedRooms: Record<Room, readonly Room[]> = {
  'lib-pure': ['lib-pure'],
  lib: ['lib-pure', 'lib'],
  placement: ['placement', 'lib-pure'],
  'raft-core': ['raft-core', 'lib-pure'],
  raft: ['raft', 'raft-core', 'lib-pure', 'lib'],
  // The scheduler's pure core: apply and the leader's decisions, over placement and the codec/validation
  // helpers; never the shells (pipeline, replica, Raft) around it.
  'scheduler-core': ['scheduler-core', 'placement', 'lib-pure', 'lib'],
  scheduler: ['scheduler', 'scheduler-core', 'placement', 'raft', 'raft-core', 'lib-pure', 'lib'],
  src: ['src', 'scheduler', 'scheduler-core', 'placement', 'raft', 'raft-core', 'lib-pure', 'lib'],
  tooling: [
    'tooling',
    'src',
    'scheduler',
    'scheduler-core',
    'placement',
    'raft',
    'raft-core',
    'lib-pure',
    'lib',
  ],
};

/** For each room, the npm packages it may import; `node` stands for Node's built-in modules. */
const allowedPackages: Record<Room, readonly string[] | 'any'> = {
  'lib-pure': [],
  lib: ['@msgpack/msgpack', 'zod'],
  placement: ['immutable'],
  'raft-core': [],
  'scheduler-core': ['immutable', 'zod'],
  raft: ['node', 'nats', '@msgpack/msgpack', 'zod'],
  scheduler: ['node', 'immutable', '@msgpack/msgpack', 'zod'],
  src: 'any',
  tooling: 'any',
};

/**
 * Globals a pure core may not touch: clocks, timers, randomness, the process and the outside world, and
 * promises (a pure core decides; waiting is its shell's job).
 */
const impureGlobals = new Set([
  'Date',
  'Promise',
  'performance',
  'setTimeout',
  'setInterval',
  'setImmediate',
  'queueMicrotask',
  'process',
  'require',
  'fetch',
  'crypto',
  'globalThis',
]);

export interface Violation {
  readonly file: string;
  readonly line: number;
  readonly rule: 'import-direction' | 'package' | 'pure-core';
  readonly message: string;
}

const builtins = new Set(builtinModules);

function packageName(specifier: string): string {
  if (specifier.startsWith('node:') || builtins.has(specifier.split('/')[0] ?? '')) return 'node';
  const parts = specifier.split('/');
  return specifier.startsWith('@') ? `${parts[0]}/${parts[1]}` : (parts[0] ?? specifier);
}

/** Maps a relative import to the repository path of the TypeScript file it names. */
function resolveRelative(fromFile: string, specifier: string): string {
  const joined = normalize(join(dirname(fromFile), specifier))
    .split(sep)
    .join('/');
  return joined.endsWith('.js') ? `${joined.slice(0, -3)}.ts` : joined;
}

/** Checks one file's text; `file` is its path relative to the repository root. */
export function checkSource(file: string, text: string): Violation[] {
  const room = roomOf(file);
  const source = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true);
  const violations: Violation[] = [];
  const lineOf = (node: ts.Node): number =>
    source.getLineAndCharacterOfPosition(node.getStart(source)).line + 1;
  const checkSpecifier = (node: ts.Node, specifier: string): void => {
    if (specifier.startsWith('.')) {
      const target = resolveRelative(file, specifier);
      const targetRoom = roomOf(target);
      if (target.startsWith('test/') || target.startsWith('bench/')) {
        if (room !== 'tooling') {
          violations.push({
            file,
            line: lineOf(node),
            rule: 'import-direction',
            message: `${room} imports ${target}`,
          });
        }
        return;
      }
      if (!allowedRooms[room].includes(targetRoom)) {
        violations.push({
          file,
          line: lineOf(node),
          rule: 'import-direction',
          message: `${room} may not import ${targetRoom} (${target})`,
        });
      }
      return;
    }
    const allowed = allowedPackages[room];
    const name = packageName(specifier);
    if (allowed !== 'any' && !allowed.includes(name)) {
      violations.push({
        file,
        line: lineOf(node),
        rule: 'package',
        message: `${room} may not import '${specifier}'`,
      });
    }
  };
  const pure =
    room === 'placement' || room === 'raft-core' || room === 'scheduler-core' || room === 'lib-pure';
  const visit = (node: ts.Node): void => {
    if (
      (ts.isImportDeclaration(node) || ts.isExportDeclaration(node)) &&
      node.moduleSpecifier !== undefined
    ) {
      if (ts.isStringLiteral(node.moduleSpecifier)) checkSpecifier(node, node.moduleSpecifier.text);
    } else if (ts.isCallExpression(node) && node.expression.kind === ts.SyntaxKind.ImportKeyword) {
      const arg = node.arguments[0];
      if (arg !== undefined && ts.isStringLiteral(arg)) checkSpecifier(node, arg.text);
      else violations.push({ file, line: lineOf(node), rule: 'import-direction', message: 'dynamic import' });
    }
    if (pure) checkPurity(node);
    ts.forEachChild(node, visit);
  };
  const checkPurity = (node: ts.Node): void => {
    const flag = (what: string): void => {
      violations.push({ file, line: lineOf(node), rule: 'pure-core', message: `pure core uses ${what}` });
    };
    if (ts.isIdentifier(node) && impureGlobals.has(node.text)) {
      // Only free references count: a property named `process` (obj.process) or a declared name is fine.
      const parent = node.parent;
      const isPropertyName =
        (ts.isPropertyAccessExpression(parent) && parent.name === node) ||
        (ts.isPropertyAssignment(parent) && parent.name === node) ||
        ts.isMethodDeclaration(parent) ||
        ts.isPropertyDeclaration(parent) ||
        ts.isPropertySignature(parent) ||
        ts.isMethodSignature(parent);
      if (!isPropertyName) flag(node.text);
    }
    if (
      ts.isPropertyAccessExpression(node) &&
      ts.isIdentifier(node.expression) &&
      node.expression.text === 'Math' &&
      node.name.text === 'random'
    ) {
      flag('Math.random');
    }
    if (ts.isAwaitExpression(node)) flag('await');
    if (
      ts.canHaveModifiers(node) &&
      ts.getModifiers(node)?.some((m) => m.kind === ts.SyntaxKind.AsyncKeyword)
    ) {
      flag('async');
    }
  };
  visit(source);
  return violations;
}

/** Lists the TypeScript files of the production rooms under `root`. */
export function productionFiles(root: string): string[] {
  const out: string[] = [];
  const walk = (dir: string): void => {
    for (const name of readdirSync(dir)) {
      const path = join(dir, name);
      if (statSync(path).isDirectory()) walk(path);
      else if (name.endsWith('.ts')) out.push(relative(root, path).split(sep).join('/'));
    }
  };
  for (const top of ['src', 'scheduler', 'raft', 'placement']) {
    try {
      walk(join(root, top));
    } catch {
      // A room that does not exist yet has nothing to check.
    }
  }
  return out.sort();
}

/** Checks every production file under `root`. */
export function checkTree(root: string): Violation[] {
  return productionFiles(root).flatMap((file) => checkSource(file, readFileSync(join(root, file), 'utf8')));
}
