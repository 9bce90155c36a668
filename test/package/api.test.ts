import { readdir, readFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { describe, expect, expectTypeOf, it } from 'vitest';
import type { SandboxSpec } from '../../src/index.js';
import * as api from '../../src/index.js';
import * as placementApi from '../../src/placement.js';

const repo = join(import.meta.dirname, '..', '..');
/** The folders whose error classes a call of the public API can throw. */
const publicRooms = ['placement', 'raft', 'scheduler', 'src/lib', 'src/api'];

async function sourceFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await sourceFiles(p)));
    else if (e.name.endsWith('.ts') && !e.name.endsWith('.d.ts')) out.push(p);
  }
  return out;
}

describe('package - the public API', () => {
  it('package - every error class of the public rooms is exported from trellis', async () => {
    // Finds each `export class X extends …Error` in the folders a public call reaches, loads the class itself
    // and checks the package index exports that very class (under its name or a documented alias).
    const exported = new Set<unknown>(Object.values(api));
    const missing: string[] = [];
    let found = 0;
    for (const room of publicRooms) {
      for (const file of await sourceFiles(join(repo, room))) {
        const text = await readFile(file, 'utf8');
        for (const m of text.matchAll(/^export class (\w+) extends (\w*Error|TrellisError)\b/gm)) {
          const mod = (await import(file)) as Record<string, unknown>;
          const cls = mod[m[1] ?? ''];
          found++;
          if (!exported.has(cls)) missing.push(`${m[1]} (${relative(repo, file)})`);
        }
      }
    }
    expect(found).toBeGreaterThan(30);
    expect(missing).toEqual([]);
    for (const name of ['WalCorruptError', 'MembershipChangeError', 'TrellisError', 'ValidationError'])
      expect(api, name).toHaveProperty(name);
  });

  it('package - trellis/placement exports the engine: planBatch, ClusterIndex, fragmentation', () => {
    // The placement entry point plans on its own, without a scheduler.
    const index = placementApi.ClusterIndex.of([
      { id: 'n1', capacity: { cpu: 4_000, memory: 8_192, disk: 10_000 }, labels: {}, state: 'ready' },
    ]);
    const plan = placementApi.planBatch(index, [
      { id: 'r1', tenant: 't', resources: { cpu: 1_000, memory: 1_024, disk: 1_000 } },
      { id: 'r2', tenant: 't', resources: { cpu: 8_000, memory: 1_024, disk: 1_000 } },
    ]);
    expect(plan.placements.map((p) => [p.requestId, p.nodeId])).toEqual([['r1', 'n1']]);
    expect(plan.rejections.map((r) => r.requestId)).toEqual(['r2']);
    const f = placementApi.fragmentation(plan.index, {
      resources: { cpu: 1_000, memory: 1_024, disk: 1_000 },
    });
    expect(f.hostable).toBe(3);
  });

  it('package - Scheduler.create is typed with SandboxSpec', () => {
    // A type-level check (npm run typecheck): the parameter was `unknown`, which let any value compile.
    expectTypeOf<Parameters<api.Scheduler['create']>[0]>().toEqualTypeOf<SandboxSpec>();
  });

  it('package - watch() iterators end when the scheduler closes, after the events already committed', async () => {
    // Two watchers: one reads along, one reads nothing until after close. close() must end both; the second
    // still gets the events committed before the close, then `done`. A watch opened after close ends at once.
    const scheduler = api.createScheduler();
    const reading = scheduler.watch();
    const idle = scheduler.watch();
    const seen: string[] = [];
    const loop = (async () => {
      for await (const e of reading) seen.push(e.kind);
    })();
    await scheduler.registerNode({
      id: 'n1',
      capacity: { cpu: 4_000, memory: 8_192, disk: 10_000 },
      labels: {},
      state: 'ready',
    });
    await scheduler.create({ tenant: 'acme', resources: { cpu: 500, memory: 512, disk: 1_024 } });
    await scheduler.close();
    await loop;
    expect(seen.length).toBeGreaterThan(0);
    const late: string[] = [];
    for await (const e of idle) late.push(e.kind);
    expect(late).toEqual(seen);
    expect(await scheduler.watch().next()).toEqual({ done: true, value: undefined });
  }, 30_000);
});
