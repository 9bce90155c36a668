/**
 * metrics - the one interface and its two adapters. Checks that every declared Trellis metric reaches the
 * Prometheus exposition with its name and labels, that values move when the code records them, that the memory
 * sink answers the same numbers, and that the HTTP endpoint serves /metrics, /healthz and /readyz over real
 * loopback HTTP.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { MemoryMetrics, metricDefs, noopMetrics, trellisMetrics } from '../../src/lib/metrics.js';
import { startMetricsServer } from '../../src/metrics/http.js';
import { PrometheusMetrics } from '../../src/metrics/prometheus.js';

async function get(port: number, path: string): Promise<{ status: number; body: string }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: res.status, body: await res.text() };
}

function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

describe('metrics', () => {
  it('metrics - the memory sink counts, sets and buckets what the handles record', () => {
    const sink = new MemoryMetrics();
    const m = trellisMetrics(sink);
    m.placements.inc({ result: 'placed', reason: 'none' }, 3);
    m.placements.inc({ result: 'rejected', reason: 'NO_CAPACITY' });
    m.pendingDepth.set(7);
    m.pendingDepth.inc(undefined, -2);
    for (const s of [0.0004, 0.0004, 0.003, 0.2]) m.placementBatchSeconds.observe(s);
    expect(sink.value('trellis_placements_total', { result: 'placed', reason: 'none' })).toBe(3);
    expect(sink.value('trellis_placements_total', { result: 'rejected', reason: 'NO_CAPACITY' })).toBe(1);
    expect(sink.value('trellis_pending_queue_depth')).toBe(5);
    const seen = sink.observations('trellis_placement_batch_duration_seconds');
    expect(seen?.count).toBe(4);
    expect(seen?.sum).toBeCloseTo(0.2038, 10);
    expect(sink.quantile('trellis_placement_batch_duration_seconds', 0.5)).toBe(0.0005);
    expect(sink.quantile('trellis_placement_batch_duration_seconds', 0.99)).toBe(0.25);
    expect(() => m.placements.inc({ nosuch: 'x' })).toThrow(/label declared/);
    // The no-op sink accepts everything and records nothing.
    const none = trellisMetrics(noopMetrics);
    none.placements.inc({ result: 'placed', reason: 'none' });
  });

  it('metrics - /metrics exposes every declared metric and values move; /healthz and /readyz answer', async () => {
    const prom = new PrometheusMetrics();
    const m = trellisMetrics(prom);
    let ready = false;
    const server = await startMetricsServer({
      metrics: prom,
      port: 0,
      readiness: () => (ready ? { ready: true } : { ready: false, reason: 'no leader yet' }),
    });
    try {
      m.raftTerm.set(3, { replica: 'r1' });
      m.placements.inc({ result: 'placed', reason: 'none' }, 2);
      m.placementBatchSeconds.observe(0.002);
      let scrape = await get(server.port, '/metrics');
      expect(scrape.status).toBe(200);
      for (const def of Object.values(metricDefs)) expect(scrape.body).toContain(`# HELP ${def.name} `);
      expect(scrape.body).toContain('trellis_process_cpu_user_seconds_total');
      expect(sample(scrape.body, 'trellis_raft_term{replica="r1"}')).toBe(3);
      expect(sample(scrape.body, 'trellis_placements_total{result="placed",reason="none"}')).toBe(2);
      expect(sample(scrape.body, 'trellis_placement_batch_duration_seconds_count')).toBe(1);

      m.raftTerm.set(4, { replica: 'r1' });
      m.placements.inc({ result: 'placed', reason: 'none' });
      m.placementBatchSeconds.observe(0.004);
      scrape = await get(server.port, '/metrics');
      expect(sample(scrape.body, 'trellis_raft_term{replica="r1"}')).toBe(4);
      expect(sample(scrape.body, 'trellis_placements_total{result="placed",reason="none"}')).toBe(3);
      expect(sample(scrape.body, 'trellis_placement_batch_duration_seconds_count')).toBe(2);
      expect(sample(scrape.body, 'trellis_placement_batch_duration_seconds_bucket{le="0.0025"}')).toBe(1);

      expect(await get(server.port, '/healthz')).toEqual({ status: 200, body: 'ok\n' });
      expect(await get(server.port, '/readyz')).toEqual({ status: 503, body: 'not ready: no leader yet\n' });
      ready = true;
      expect((await get(server.port, '/readyz')).status).toBe(200);
      expect((await get(server.port, '/nope')).status).toBe(404);
      expect((await fetch(`http://127.0.0.1:${server.port}/metrics`, { method: 'POST' })).status).toBe(405);
    } finally {
      await server.close();
    }
  });

  it('metrics - a port already taken is a ConfigError, not a crash', async () => {
    const prom = new PrometheusMetrics({ processMetrics: false });
    const first = await startMetricsServer({ metrics: prom, port: 0 });
    try {
      await expect(startMetricsServer({ metrics: prom, port: first.port })).rejects.toMatchObject({
        code: 'CONFIG',
      });
    } finally {
      await first.close();
    }
  });

  it('metrics - the Grafana dashboard in docs/ queries only metrics Trellis declares', () => {
    const text = readFileSync(new URL('../../docs/grafana-dashboard.json', import.meta.url), 'utf8');
    const dashboard = JSON.parse(text) as { panels: { targets: { expr: string }[] }[] };
    const declared = new Set(Object.values(metricDefs).map((d) => d.name));
    const used = new Set<string>();
    for (const p of dashboard.panels) {
      for (const t of p.targets) for (const m of t.expr.matchAll(/trellis_[a-z_]+/g)) used.add(m[0]);
    }
    expect(used.size).toBeGreaterThan(10);
    for (const name of used) {
      if (name.startsWith('trellis_process_')) continue; // prom-client's process metrics, with our prefix
      expect(declared, name).toContain(name.replace(/_(bucket|sum|count)$/, ''));
    }
  });
});
