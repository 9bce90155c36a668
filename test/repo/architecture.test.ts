import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { checkSource, checkTree, productionFiles } from './architecture.js';

const root = fileURLToPath(new URL('../../', import.meta.url));

describe('repo/architecture - the real tree', () => {
  it('repo/architecture - every import follows the dependency direction and the pure cores stay pure', () => {
    // Checks the whole production tree (src, scheduler, raft, placement) against DESIGN.md's arrows and the
    // pure-core rule; a failure lists file:line and the broken rule.
    const files = productionFiles(root);
    expect(files.length).toBeGreaterThan(5);
    const violations = checkTree(root).map((v) => `${v.file}:${v.line} [${v.rule}] ${v.message}`);
    expect(violations).toEqual([]);
  });
});

describe('repo/architecture - the checker', () => {
  // Each case is a synthetic file that breaks (or keeps) one rule, so the checker is known to catch it.
  const bad: ReadonlyArray<readonly [string, string, string]> = [
    ['placement/x.ts', "import { a } from '../raft/core/y.js';", 'placement may not import raft-core'],
    ['raft/core/x.ts', "import { a } from '../../placement/y.js';", 'raft-core may not import placement'],
    ['raft/x.ts', "import { a } from '../scheduler/y.js';", 'raft may not import scheduler'],
    ['raft/x.ts', "import { a } from '../src/cli/y.js';", 'raft may not import src'],
    ['scheduler/x.ts', "import { a } from '../src/index.js';", 'scheduler may not import src'],
    ['placement/x.ts', "import { readFileSync } from 'node:fs';", "may not import 'node:fs'"],
    ['raft/core/x.ts', "export * from 'nats';", "may not import 'nats'"],
    ['src/x.ts', "import { h } from '../test/helpers.js';", 'src imports test/helpers.ts'],
    ['placement/x.ts', 'export const now = () => Date.now();', 'pure core uses Date'],
    ['placement/x.ts', 'export const r = () => Math.random();', 'pure core uses Math.random'],
    ['raft/core/x.ts', 'export function t() { setTimeout(() => {}, 1); }', 'pure core uses setTimeout'],
    ['raft/core/x.ts', 'export async function f() { await g(); }', 'pure core uses async'],
    ['raft/core/x.ts', 'export const p = performance.now();', 'pure core uses performance'],
    ['placement/x.ts', "const m = await import('./y.js');", 'pure core uses await'],
    [
      'scheduler/core/x.ts',
      'export function t() { setInterval(() => {}, 1); }',
      'pure core uses setInterval',
    ],
    ['scheduler/core/x.ts', 'export const p = () => new Promise(() => {});', 'pure core uses Promise'],
    ['scheduler/core/x.ts', 'export const now = () => Date.now();', 'pure core uses Date'],
    ['scheduler/core/x.ts', "import { a } from '../replica.js';", 'scheduler-core may not import scheduler'],
    ['scheduler/core/x.ts', "import { a } from '../../raft/node.js';", 'scheduler-core may not import raft'],
    ['scheduler/core/x.ts', "import { readFileSync } from 'node:fs';", "may not import 'node:fs'"],
  ];
  for (const [file, text, expected] of bad) {
    it(`repo/architecture - flags: ${expected}`, () => {
      const messages = checkSource(file, text).map((v) => v.message);
      expect(messages.some((m) => m.includes(expected))).toBe(true);
    });
  }

  const good: ReadonlyArray<readonly [string, string]> = [
    ['placement/x.ts', "import { assert } from '../src/lib/assert.js'; import { Map } from 'immutable';"],
    ['raft/core/x.ts', "import type { LogReader } from './storage.js'; const o = { process: 1 }; o.process;"],
    [
      'raft/x.ts',
      "import { open } from 'node:fs/promises'; import { createCodec } from '../src/lib/codec.js';",
    ],
    [
      'scheduler/x.ts',
      "import { planBatch } from '../placement/index.js'; import { RawNode } from '../raft/core/index.js';",
    ],
    ['src/x.ts', "import { Scheduler } from '../scheduler/index.js'; const t = Date.now();"],
    ['scheduler/x.ts', "import { SchedulerCore } from './core/core.js'; const t = Date.now();"],
    ['scheduler/core/x.ts', "import { planBatch } from '../../placement/index.js'; import { z } from 'zod';"],
  ];
  for (const [file, text] of good) {
    it(`repo/architecture - allows: ${file} ${text.slice(0, 50)}`, () => {
      expect(checkSource(file, text)).toEqual([]);
    });
  }
});
