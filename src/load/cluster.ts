/**
 * The cluster a load run drives, as real processes: one nats-server, `replicas` `trellis server` processes
 * (scheduler state, file storage under `<data>/<id>` with fsync, /metrics on a loopback port each), and
 * `trellis worker --sim-nodes` processes that together run `nodes` simulated nodes. Every process is the
 * leader of its own process group (processes.ts), and each can be crashed, paused and restarted in place
 * (same ports, same data directory) for the chaos schedule.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { findBinary } from '../binaries.js';
import { assert } from '../lib/assert.js';
import { UnavailableError } from '../lib/errors.js';
import { cliMain } from '../testing/replica-process.js';
import { crash, exited, type Managed, type ProcUsage, spawnManaged, stop, usageOf } from './processes.js';

/** The only interface anything here binds to or dials. */
export { loopbackHost } from '../testing/servers.js';

import { freePort, loopbackHost } from '../testing/servers.js';
/** How long a started process may take to answer. */
export const startTimeoutMs = 30_000;
/** Simulated nodes one worker process runs at most (the rest go to further processes). */
export const simNodesPerWorkerMax = 250;
/** Worker processes a run starts at most. */
export const workerProcessesMax = 4;

export type Role = 'nats' | 'replica' | 'worker';

/** One process of the cluster, restartable in place. */
export interface Member {
  readonly name: string;
  readonly role: Role;
  /** /metrics port (replicas), nats-server's monitoring port (nats), else 0. */
  readonly metricsPort: number;
  process: Managed;
}

export interface NodeShape {
  readonly cpu: number;
  readonly memory: number;
  readonly disk: number;
}

export interface LoadClusterOptions {
  /** Directory for every replica's and worker's data (and nats-server's config). */
  readonly dir: string;
  readonly cluster: string;
  readonly replicas: number;
  readonly nodes: number;
  readonly nodeShape: NodeShape;
  /**
   * Boots one simulated node runs at once (`trellis worker --boots-concurrent`); the worker's default of 2
   * (QEMU under TCG) when absent.
   */
  readonly bootsConcurrent?: number;
  /** Raft tick of the replicas. */
  readonly tickMs: number;
  /** Extra arguments for the leader's node process (e.g. `--cpu-prof`); applied to every replica. */
  readonly replicaNodeArgs?: readonly string[];
  readonly logLevel?: string;
}

/** Resolves once a nats-server on `port` greets with INFO. */
async function natsGreets(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host: loopbackHost, port });
    const timer = setTimeout(() => socket.destroy(), 1_000);
    socket.once('data', (d) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(d.toString('utf8').startsWith('INFO '));
    });
    socket.once('error', () => {
      clearTimeout(timer);
      resolve(false);
    });
    socket.once('close', () => resolve(false));
  });
}

/** Polls `check` until it holds; fails when the process exits or the time runs out. */
export async function waitFor(what: string, m: Managed | undefined, check: () => Promise<boolean>) {
  const deadline = Date.now() + startTimeoutMs;
  for (;;) {
    if (m !== undefined && exited(m)) {
      throw new UnavailableError(
        `${what}: ${m.name} exited (code ${m.child.exitCode}, signal ${m.child.signalCode}): ${m.tail.join('').slice(-1_000)}`,
      );
    }
    if (await check().catch(() => false)) return;
    if (Date.now() > deadline) throw new UnavailableError(`${what}: not ready within ${startTimeoutMs} ms`);
    await sleep(25);
  }
}

/** GETs a replica's /metrics text; undefined when it does not answer. */
export async function scrape(port: number): Promise<string | undefined> {
  try {
    const res = await fetch(`http://${loopbackHost}:${port}/metrics`, { signal: AbortSignal.timeout(2_000) });
    return res.ok ? await res.text() : undefined;
  } catch {
    return undefined;
  }
}

/** A process of the cluster that exited without the harness asking: a product failure the run reports. */
export interface UnexpectedExit {
  readonly name: string;
  readonly atMs: number;
  readonly code: number | null;
  readonly signal: string | null;
  /** Its last output (its error line). */
  readonly lastOutput: string;
}

/** Messages nats-server received from (`in`) and sent to (`out`) each connection, by connection name. */
export type NatsTraffic = Map<string, { readonly in: number; readonly out: number }>;

/** Reads nats-server's `/connz` (undefined when it does not answer). */
export async function natsTraffic(monitorPort: number): Promise<NatsTraffic | undefined> {
  try {
    const res = await fetch(`http://${loopbackHost}:${monitorPort}/connz?limit=4096`, {
      signal: AbortSignal.timeout(2_000),
    });
    if (!res.ok) return undefined;
    const body = (await res.json()) as {
      connections?: { name?: string; cid?: number; in_msgs?: number; out_msgs?: number }[];
    };
    const out: NatsTraffic = new Map();
    for (const c of body.connections ?? []) {
      const name = c.name ?? `cid-${c.cid ?? '?'}`;
      const was = out.get(name) ?? { in: 0, out: 0 };
      out.set(name, { in: was.in + (c.in_msgs ?? 0), out: was.out + (c.out_msgs ?? 0) });
    }
    return out;
  } catch {
    return undefined;
  }
}

/** Characters of a dead process's output kept in its `UnexpectedExit`. */
const lastOutputCharsMax = 600;

export class LoadCluster {
  readonly o: LoadClusterOptions;
  readonly natsPort: number;
  readonly nats: Member;
  readonly replicas: readonly Member[];
  readonly workers: readonly Member[];
  readonly #launch: Map<string, () => Managed>;
  /** Every exit the harness did not cause, in order (a replica or worker that died by itself). */
  readonly unexpectedExits: UnexpectedExit[];

  private constructor(
    o: LoadClusterOptions,
    natsPort: number,
    launch: Map<string, () => Managed>,
    members: Member[],
    unexpectedExits: UnexpectedExit[],
  ) {
    this.o = o;
    this.unexpectedExits = unexpectedExits;
    this.natsPort = natsPort;
    this.#launch = launch;
    this.nats = members.find((m) => m.role === 'nats') as Member;
    this.replicas = members.filter((m) => m.role === 'replica');
    this.workers = members.filter((m) => m.role === 'worker');
  }

  get natsUrl(): string {
    return `nats://${loopbackHost}:${this.natsPort}`;
  }

  get replicaIds(): readonly string[] {
    return this.replicas.map((r) => r.name);
  }

  get members(): readonly Member[] {
    return [this.nats, ...this.replicas, ...this.workers];
  }

  /** Starts nats-server, the replicas and the workers; stops what it started when any of it fails. */
  static async start(o: LoadClusterOptions): Promise<LoadCluster> {
    assert(o.replicas >= 1 && o.nodes >= 1, 'a cluster has replicas and nodes', { ...o });
    await mkdir(o.dir, { recursive: true });
    const launch = new Map<string, () => Managed>();
    const members: Member[] = [];
    const unexpectedExits: UnexpectedExit[] = [];
    const startedMs = Date.now();
    /** Starts a process and records its exit when the harness did not cause it. */
    const watched = (spawnIt: () => Managed) => (): Managed => {
      const m = spawnIt();
      m.child.once('exit', (code, signal) => {
        if (m.ended) return;
        unexpectedExits.push({
          name: m.name,
          atMs: Date.now() - startedMs,
          code,
          signal,
          lastOutput: m.tail.join('').trim().slice(-lastOutputCharsMax),
        });
      });
      return m;
    };
    const natsPort = await freePort();
    const natsMonitorPort = await freePort();
    // TRELLIS_DEBUG: a process that dies leaves its stack in its log.
    // Typed errors (answers such as NotLeaderError) are built on hot paths: without stacks, as in production.
    const env = {
      ...process.env,
      TRELLIS_LOG_LEVEL: o.logLevel ?? 'warn',
      TRELLIS_DEBUG: '1',
      TRELLIS_TYPED_STACKS: '0',
    };
    // Every process's output goes to <dir>/<name>.log as well: the record of a run that stalls.
    const logOf = (name: string): string => join(o.dir, `${name}.log`);
    try {
      const natsBin = findBinary('nats-server', 'nats-server');
      const natsConf = join(o.dir, 'nats.conf');
      // Every client of a 100,000-sandbox run shares one server: room for many connections and pending bytes.
      // The monitoring port gives messages per connection (`/connz`): the report's messages per sandbox.
      await writeFile(
        natsConf,
        `listen: "${loopbackHost}:${natsPort}"\nmax_pending: 268435456\nhttp: "${loopbackHost}:${natsMonitorPort}"\n`,
      );
      launch.set(
        'nats',
        watched(() => spawnManaged('nats-server', natsBin, ['-c', natsConf], process.env, logOf('nats'))),
      );
      members.push({
        name: 'nats',
        role: 'nats',
        metricsPort: natsMonitorPort,
        process: (launch.get('nats') as () => Managed)(),
      });
      await waitFor('nats-server', members[0]?.process, () => natsGreets(natsPort));

      const natsUrl = `nats://${loopbackHost}:${natsPort}`;
      const ids = Array.from({ length: o.replicas }, (_, i) => `r${i}`);
      for (const id of ids) {
        const metricsPort = await freePort();
        const args = [
          ...(o.replicaNodeArgs ?? []),
          cliMain,
          'server',
          ...['--id', id, '--peers', ids.join(','), '--nats', natsUrl, '--cluster', o.cluster],
          ...['--data', join(o.dir, id), '--state', 'scheduler', '--tick-ms', String(o.tickMs)],
          ...['--metrics-port', String(metricsPort), '--stop-timeout', '3s'],
        ];
        launch.set(
          id,
          watched(() => spawnManaged(id, process.execPath, args, env, logOf(id))),
        );
        members.push({
          name: id,
          role: 'replica',
          metricsPort,
          process: (launch.get(id) as () => Managed)(),
        });
      }
      for (const m of members.filter((x) => x.role === 'replica')) {
        await waitFor(
          `replica ${m.name}`,
          m.process,
          async () => (await scrape(m.metricsPort)) !== undefined,
        );
      }

      const processes = Math.min(
        workerProcessesMax,
        Math.max(1, Math.ceil(o.nodes / simNodesPerWorkerMax)),
        o.nodes,
      );
      // With chaos a worker process is restarted: at least two, so the others keep running meanwhile.
      const count = Math.max(processes, Math.min(2, o.nodes));
      for (let w = 0; w < count; w++) {
        const n = Math.floor(o.nodes / count) + (w < o.nodes % count ? 1 : 0);
        const name = `w${w}`;
        const args = [
          cliMain,
          'worker',
          ...['--node-id', `load-${name}`, '--sim-nodes', String(n), '--seed', String(1 + w * 100_000)],
          ...['--cpu', String(o.nodeShape.cpu), '--memory', String(o.nodeShape.memory)],
          ...['--disk', String(o.nodeShape.disk), '--data', join(o.dir, name)],
          ...['--nats', natsUrl, '--cluster', o.cluster, '--stop-timeout', '3s'],
          ...(o.bootsConcurrent === undefined ? [] : ['--boots-concurrent', String(o.bootsConcurrent)]),
        ];
        launch.set(
          name,
          watched(() => spawnManaged(name, process.execPath, args, env, logOf(name))),
        );
        members.push({
          name,
          role: 'worker',
          metricsPort: 0,
          process: (launch.get(name) as () => Managed)(),
        });
      }
    } catch (err) {
      await Promise.all(members.map((m) => stop(m.process)));
      throw err;
    }
    return new LoadCluster(o, natsPort, launch, members, unexpectedExits);
  }

  member(name: string): Member {
    const m = this.members.find((x) => x.name === name);
    assert(m !== undefined, 'a member of this cluster', { name });
    return m;
  }

  /** Starts a crashed or stopped member again in place (same ports, same data). */
  async restart(m: Member): Promise<void> {
    assert(exited(m.process), 'a member restarts only once it is gone', { name: m.name });
    const launch = this.#launch.get(m.name);
    assert(launch !== undefined, 'every member has its launcher', { name: m.name });
    m.process = launch();
    if (m.role === 'nats') await waitFor('nats-server', m.process, () => natsGreets(this.natsPort));
    if (m.role === 'replica')
      await waitFor(`replica ${m.name}`, m.process, async () => (await scrape(m.metricsPort)) !== undefined);
  }

  /** True while the member's current process runs. */
  running(m: Member): boolean {
    return !exited(m.process);
  }

  async crash(m: Member): Promise<void> {
    await crash(m.process);
  }

  /** CPU seconds and resident memory of every member now. */
  async usage(): Promise<Map<string, ProcUsage>> {
    const out = new Map<string, ProcUsage>();
    for (const m of this.members) {
      const u = await usageOf(m.process.pid);
      if (u !== undefined) out.set(m.name, u);
    }
    return out;
  }

  /** Stops the workers first (they stop their machines), then the replicas, then nats-server. */
  async stop(): Promise<void> {
    await Promise.all(this.workers.map((m) => stop(m.process)));
    await Promise.all(this.replicas.map((m) => stop(m.process)));
    await stop(this.nats.process);
  }
}
