/**
 * The load run's report for people: per phase throughput and latency, the placement batch histogram from
 * the replicas' /metrics, Raft commits per second and mean entry size, each process's CPU and memory, the
 * chaos events and the checker's counts. Tables are cli-table3's (already the CLI's table library).
 */
import Table from 'cli-table3';
import { borderless } from '../cli/ops/common.js';
import { formatCheck } from './checker.js';
import { phases } from './driver.js';
import type { LoadReport } from './run.js';

function table(head: readonly string[], rows: readonly (readonly (string | number)[])[]): string[] {
  const t = new Table({
    head: [...head],
    chars: borderless,
    style: { head: [], border: [], 'padding-left': 0, 'padding-right': 0 },
  });
  for (const r of rows) t.push(r.map(String));
  return t
    .toString()
    .split('\n')
    .map((l) => l.trimEnd());
}

const ms = (x: number | undefined): string =>
  x === undefined ? 'n/a' : x < 10 ? x.toFixed(2) : x.toFixed(0);

export function formatReport(r: LoadReport): string[] {
  const o = r.options;
  const lines: string[] = [];
  lines.push(
    `load: ${o.sandboxes} sandboxes on ${o.nodes} simulated nodes, ${o.replicas} replicas (file storage, fsync), ${o.clients} clients over NATS, ${o.ratePerMin === undefined ? 'full speed' : `${o.ratePerMin}/min`}${o.chaos === undefined ? '' : ', chaos'}`,
  );
  const reached = o.wait === 'running' ? 'running' : 'placed';
  lines.push(
    `all ${reached} ${r.drive.allCreatedSeconds.toFixed(2)} s after the first create; all terminated ${r.drive.allTerminatedSeconds.toFixed(2)} s`,
  );
  if (!r.drive.execAvailable) lines.push('exec: not run (it needs --wait running)');
  lines.push('');
  lines.push(
    ...table(
      ['phase', 'count', 'per s', 'p50 ms', 'p99 ms', 'max ms'],
      phases.map((p) => {
        const s = r.drive.phases[p];
        const name = p === 'create' ? `create→${reached}` : p;
        return [name, s.count, Math.round(s.perSecond), ms(s.p50Ms), ms(s.p99Ms), ms(s.maxMs)];
      }),
    ),
  );
  const failures = Object.entries(r.drive.failures);
  if (failures.length > 0) lines.push(`failed: ${failures.map(([k, n]) => `${k} ${n}`).join(', ')}`);
  const retries = Object.entries(r.drive.retries ?? {});
  if (retries.length > 0) lines.push(`retried: ${retries.map(([k, n]) => `${k} ${n}`).join(', ')}`);
  lines.push('');
  const h = r.placementBatch;
  lines.push(
    `placement batch (leader /metrics): ${h.count} batches, mean ${h.count === 0 ? 'n/a' : ((1_000 * h.sum) / h.count).toFixed(3)} ms, p50 <= ${ms(r.placementBatchP50Ms)} ms, p99 <= ${ms(r.placementBatchP99Ms)} ms`,
  );
  let prev = 0;
  const max = Math.max(1, ...h.buckets.map((b, i) => b.count - (h.buckets[i - 1]?.count ?? 0)));
  for (const b of h.buckets) {
    const n = b.count - prev;
    prev = b.count;
    if (n === 0) continue;
    const le = b.le === Number.POSITIVE_INFINITY ? '+Inf' : `${(b.le * 1_000).toString()} ms`;
    lines.push(`  <= ${le.padStart(9)} ${String(n).padStart(8)} ${'#'.repeat(Math.ceil((40 * n) / max))}`);
  }
  lines.push(
    `raft: ${r.raftCommitsPerSecond} commits/s, mean entry ${r.raftEntryBytesMean === undefined ? 'n/a' : `${r.raftEntryBytesMean} bytes`}, term ${r.raftTerms.first} → ${r.raftTerms.last} while driving`,
  );
  const m = r.natsMessagesPerSandbox;
  if (m !== undefined) {
    lines.push(`nats messages per sandbox: ${m.in} in, ${m.out} out (by connection, in/out):`);
    const rows = Object.entries(m.byConnection).sort((a, b) => b[1].in + b[1].out - (a[1].in + a[1].out));
    lines.push(`  ${rows.map(([name, t]) => `${name} ${t.in}/${t.out}`).join(', ')}`);
  }
  lines.push('');
  lines.push(
    ...table(
      ['process', 'cpu s', 'cpu % of a core', 'rss max MiB'],
      r.processes.map((p) => [p.name, p.cpuSeconds, p.cpuPercent, p.rssMaxMiB]),
    ),
  );
  if (r.chaos !== undefined) {
    lines.push('', 'chaos:');
    for (const e of r.chaos.events) lines.push(`  ${(e.atMs / 1_000).toFixed(2).padStart(7)} s  ${e.what}`);
  }
  lines.push('', ...formatCheck(r.check));
  lines.push(
    `  processes that died by themselves  ${r.unexpectedExits.length === 0 ? 'none' : r.unexpectedExits.length}`,
  );
  for (const x of r.unexpectedExits)
    lines.push(
      `    ${x.name} at ${(x.atMs / 1_000).toFixed(2)} s (code ${x.code}, signal ${x.signal}): ${x.lastOutput.split('\n').at(-1) ?? ''}`,
    );
  return lines;
}
