/**
 * The HTML report in a real browser: Debian's headless `chromium`, driven by playwright-core. The report of a
 * what-if run (two policies), an inflation run and a sizing search is opened from a file with every network
 * request refused; the test checks that every plot renders (an SVG with a non-empty box and drawn data marks) and
 * that the page logs no console error. A missing chromium is a failure, never a skip.
 */
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { afterAll, describe, expect, it } from 'vitest';
import {
  type Arrival,
  type ClusterSpec,
  findMinNodes,
  parseWorkload,
  reportHtml,
  simulate,
  syntheticArrivals,
  whatIf,
} from '../../src/sim/index.js';

const chromiumPath = '/usr/bin/chromium';
const dir = mkdtempSync(join(tmpdir(), 'trellis-html-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function arrivalsOf(count: number): Arrival[] {
  const w = parseWorkload({
    arrivals: { kind: 'poisson', ratePerS: 4 },
    count,
    sizes: [
      { weight: 3, cpu: 1000, memory: 2048, disk: 1024 },
      { weight: 1, cpu: 4000, memory: 8192, disk: 1024, gpu: { milli: 500 } },
      { weight: 0.05, cpu: 40000, memory: 1024, disk: 1 },
    ],
    lifetime: { kind: 'exponential', meanS: 120 },
  });
  if (!('arrivals' in w)) throw new Error('synthetic workload expected');
  return [...syntheticArrivals(w, 7)];
}

describe('html report', () => {
  it('html report - renders every plot in headless chromium with no console errors and no network', async () => {
    // Never a skip: without the browser this test fails and says how to install it.
    if (!existsSync(chromiumPath))
      throw new Error(`${chromiumPath} is missing: run scripts/ensure-services.sh`);
    const cluster: ClusterSpec = {
      nodes: [
        { shape: 'cpu', count: 12, capacity: { cpu: 16000, memory: 65536, disk: 100000 } },
        {
          shape: 'gpu',
          count: 2,
          capacity: { cpu: 32000, memory: 131072, disk: 100000 },
          gpu: { model: 'T4', count: 4 },
        },
      ],
      events: [{ atS: 60, kind: 'fail', shape: 'cpu', count: 2 }],
    };
    const arrivals = arrivalsOf(600);
    const runs = whatIf(
      [
        { name: 'dot', cluster, policy: { name: 'dot' } },
        { name: 'dominant', cluster, policy: { name: 'dominant' } },
      ],
      arrivals,
      { seed: 1, pendingTimeoutMs: 20_000 },
    );
    const inflation = simulate(cluster, arrivals, {
      seed: 1,
      protocol: 'inflation',
      policy: { name: 'dot inflation' },
    });
    const hostable = arrivals.filter((a) => a.spec.resources.cpu <= 16000 && a.spec.gpu === undefined);
    const sizing = findMinNodes(cluster, 'cpu', hostable, { seed: 1, policy: { name: 'dot' } }, 0.05);
    expect(sizing.steps.some((s) => !s.ok)).toBe(true);
    const html = reportHtml({ title: 'test <report> & "quotes"', runs: [...runs, inflation], sizing });
    const path = join(dir, 'report.html');
    writeFileSync(path, html);

    const expected = ['what-if', 'fragmentation', 'inflation', 'sizing'];
    for (let i = 0; i < 3; i++) expected.push(`latency-${i}`, `wait-${i}`);
    for (let i = 0; i < 2; i++) expected.push(`utilization-${i}`, `pending-rejected-${i}`);

    // A fresh profile directory per run (playwright takes it as launchPersistentContext's first argument).
    const context = await chromium.launchPersistentContext(join(dir, 'profile'), {
      executablePath: chromiumPath,
      headless: true,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--no-first-run',
      ],
    });
    const errors: string[] = [];
    const requests: string[] = [];
    try {
      const page = await context.newPage();
      page.on('console', (m) => {
        if (m.type() === 'error') errors.push(m.text());
      });
      page.on('pageerror', (e) => errors.push(String(e)));
      await page.route('**/*', async (route) => {
        const url = route.request().url();
        if (url.startsWith('file://')) return route.continue();
        requests.push(url);
        return route.abort();
      });
      await page.goto(`file://${path}`, { waitUntil: 'load' });
      const plots = await page.$$eval('svg.plot', (svgs) =>
        svgs.map((s) => {
          const box = s.getBoundingClientRect();
          return {
            plot: s.getAttribute('data-plot'),
            width: box.width,
            height: box.height,
            // Data marks (lines and bars, class "mark") with a drawn extent: axes and legend swatches do
            // not count, so a plot whose data drew nothing fails.
            marks: [...s.querySelectorAll('.mark')].filter((m) => {
              const b = (m as unknown as { getBBox(): { width: number; height: number } }).getBBox();
              return b.width > 0 || b.height > 0;
            }).length,
          };
        }),
      );
      const names = plots.map((p) => p.plot);
      for (const want of expected) expect(names, `plot ${want}`).toContain(want);
      for (const p of plots) {
        expect(p.width, `plot ${p.plot}`).toBeGreaterThan(100);
        expect(p.height, `plot ${p.plot}`).toBeGreaterThan(100);
        expect(p.marks, `plot ${p.plot}`).toBeGreaterThan(0);
      }
      expect(await page.title()).toBe('test <report> & "quotes"');
    } finally {
      await context.close();
    }
    expect(errors).toEqual([]);
    expect(requests).toEqual([]);
  });
});
