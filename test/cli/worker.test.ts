/**
 * `trellis worker` end to end with real processes: a real nats-server, the embedded scheduler served over
 * NATS by the API adapter in this test process (the worker reaches it only through NATS), and the built
 * `trellis worker` spawned as a child process with the `process` driver (real child processes as machines)
 * or `--sim-nodes`. The dispatcher is not part of this command, so machines are started by sending the
 * worker's own command frames on its node subject, as the leader's dispatcher will.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type NatsConnection, connect as natsConnect } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createScheduler, type Scheduler } from '../../scheduler/scheduler.js';
import { type ApiServer, serveApi } from '../../src/api/nats-server.js';
import { authorizationBlock, planNatsUsers } from '../../src/nats/config.js';
import { cliMain } from '../../src/testing/replica-process.js';
import { freePort, type RunningServer, startNats } from '../../src/testing/servers.js';
import { nodeCommandSubject, workerCommandCodec, workerReplyCodec } from '../../src/worker/nats-binding.js';
import { alive } from '../helpers/processes.js';
import { until as poll, type UntilCondition } from '../helpers/until.js';
import { errorLine, runCli, stackFrame } from './run-cli.js';

const cluster = 'wk';
/** Spawned node processes on a loaded 2-core machine take seconds each. */
const testTimeoutMs = 120_000;
const waitMsMax = 30_000;

interface Spawned {
  readonly child: ChildProcess;
  readonly stderr: () => string;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function spawnWorker(args: readonly string[], natsUrl: string): Spawned {
  const child = spawn(
    process.execPath,
    [cliMain, 'worker', ...args, '--nats', natsUrl, '--cluster', cluster],
    {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, TRELLIS_LOG_LEVEL: 'warn', TRELLIS_DEBUG: '' },
    },
  );
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString('utf8');
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  return { child, stderr: () => stderr, exited };
}

const until = (cond: UntilCondition<boolean>, what: string, why = () => ''): Promise<boolean> =>
  poll(cond, what, { timeoutMs: waitMsMax, pollMs: 50, why });

/** The worker's own readiness: registered, reconciled and serving (src/cli/worker.ts). */
async function workerReady(metricsPort: number): Promise<boolean> {
  try {
    return (await fetch(`http://127.0.0.1:${metricsPort}/readyz`)).status === 200;
  } catch {
    return false;
  }
}

describe('trellis worker - against a real nats-server and the scheduler served over NATS', () => {
  let nats: RunningServer;
  let serverConn: NatsConnection;
  let client: NatsConnection;
  let scheduler: Scheduler;
  let server: ApiServer;
  let dir: string;
  const heartbeats = new Map<string, number>();
  const started: Spawned[] = [];

  beforeAll(async () => {
    expect(existsSync(cliMain), `${cliMain} missing: run npm run build first`).toBe(true);
    nats = await startNats();
    dir = await mkdtemp(join(tmpdir(), 'trellis-worker-cli-'));
    serverConn = await natsConnect({ servers: nats.url });
    client = await natsConnect({ servers: nats.url });
    scheduler = createScheduler();
    // The real scheduler, with heartbeats counted on their way in (the API adapter calls `heartbeat`).
    const api = new Proxy(scheduler, {
      get(target, key) {
        if (key === 'heartbeat') {
          return (ids: readonly string[]) => {
            for (const id of ids) heartbeats.set(id, (heartbeats.get(id) ?? 0) + 1);
            target.heartbeat(ids);
          };
        }
        const v = Reflect.get(target, key) as unknown;
        return typeof v === 'function' ? v.bind(target) : v;
      },
    });
    server = await serveApi({ api, connection: serverConn, cluster, replica: 'r1' });
  });
  afterAll(async () => {
    for (const s of started) if (s.child.exitCode === null) s.child.kill('SIGKILL');
    await server?.close();
    await scheduler?.close();
    await Promise.all([serverConn?.close(), client?.close()]);
    await nats?.stop();
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  const worker = (args: readonly string[]): Spawned => {
    const s = spawnWorker(args, nats.url);
    started.push(s);
    return s;
  };
  const send = async (nodeId: string, command: unknown) => {
    const frame = workerCommandCodec.encode({ nodeId, command } as never);
    const msg = await client.request(nodeCommandSubject(cluster, nodeId), frame, { timeout: 10_000 });
    return workerReplyCodec.decode(msg.data);
  };
  const nodeState = async (id: string) => (await scheduler.nodes()).find((n) => n.id === id)?.state;
  /** Starts a machine on the node and returns the pid of its process once it runs. */
  const startMachine = async (nodeId: string, sandboxId: string): Promise<number> => {
    const create = { type: 'create', sandboxId, resources: { cpu: 100, memory: 64, disk: 10 } };
    let last: unknown;
    await until(
      async () => {
        const r = await send(nodeId, create);
        last = r;
        return r.ok && (r.reply as { state?: string }).state === 'running';
      },
      `${sandboxId} running`,
      () => `last reply ${JSON.stringify(last)}`,
    );
    const pidFile = join(dir, 'data', nodeId, 'sandboxes', sandboxId, 'vm.pid');
    const pid = Number((await readFile(pidFile, 'utf8')).trim());
    expect(alive(pid), `machine ${sandboxId} pid ${pid} alive`).toBe(true);
    return pid;
  };

  it(
    'trellis worker - registers a ready node, heartbeats, serves metrics, reconciles after kill -9, and SIGTERM leaves no machine',
    async () => {
      const metricsPort = await freePort();
      const args = [
        '--node-id',
        'w1',
        '--driver',
        'process',
        '--data',
        join(dir, 'data'),
        '--cpu',
        '4000',
        '--memory',
        '8192',
        '--disk',
        '10240',
        '--label',
        'zone=a',
        '--heartbeat-interval',
        '100',
        '--metrics-port',
        String(metricsPort),
      ];
      const first = worker(args);
      await until(async () => (await nodeState('w1')) === 'ready', 'w1 ready', first.stderr);
      const node = (await scheduler.nodes()).find((n) => n.id === 'w1');
      expect(node?.spec).toMatchObject({
        capacity: { cpu: 4000, memory: 8192, disk: 10240 },
        labels: { zone: 'a' },
      });
      await until(() => (heartbeats.get('w1') ?? 0) >= 3, 'three heartbeats from w1', first.stderr);

      // A machine started, then the worker killed without a chance to clean up: the machine survives.
      const orphanPid = await startMachine('w1', 'sb-orphan');
      // Garbage on the command subject is dropped and counted, never fatal.
      client.publish(nodeCommandSubject(cluster, 'w1'), new TextEncoder().encode('not a frame'));
      await until(async () => {
        const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
        return /trellis_invalid_messages_total\{[^}]*source="worker"[^}]*\} [1-9]/.test(text);
      }, 'the garbage frame counted');
      const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
      expect(text).toMatch(
        /trellis_driver_duration_seconds_count\{[^}]*driver="process",op="boot",outcome="ok"/,
      );
      expect((await fetch(`http://127.0.0.1:${metricsPort}/readyz`)).status).toBe(200);
      expect((await fetch(`http://127.0.0.1:${metricsPort}/healthz`)).status).toBe(200);
      first.child.kill('SIGKILL');
      await first.exited;
      expect(alive(orphanPid), 'a kill -9 leaves the machine running').toBe(true);

      // Restarted: the registration is repeated harmlessly, reconcile names the machine an orphan, it stops.
      const second = worker(args);
      await until(() => !alive(orphanPid), 'the orphan machine stopped after the restart', second.stderr);
      expect(await nodeState('w1')).toBe('ready');
      // Marked down (as missed heartbeats would): the running worker reconciles and the node is ready again.
      await scheduler.setNodeState('w1', 'down');
      await until(async () => (await nodeState('w1')) === 'ready', 'w1 ready again', second.stderr);
      const pid = await startMachine('w1', 'sb-1');

      second.child.kill('SIGTERM');
      expect(await second.exited, second.stderr()).toEqual({ code: 0, signal: null });
      expect(alive(pid), 'SIGTERM stopped the machine the worker started').toBe(false);
      expect(second.stderr()).not.toMatch(stackFrame);
    },
    testTimeoutMs,
  );

  it(
    'trellis worker - --sim-nodes 50 registers 50 ready nodes and stops on SIGINT',
    async () => {
      const sim = worker(['--node-id', 's', '--sim-nodes', '50', '--data', join(dir, 'sim')]);
      const simNodes = async () => (await scheduler.nodes()).filter((n) => /^s-\d+$/.test(n.id));
      // A new node registers `down` and its first reconcile makes it ready: wait for ready, not for registered.
      const ready = async () => (await simNodes()).filter((n) => n.state === 'ready');
      await until(async () => (await ready()).length === 50, '50 ready sim nodes', sim.stderr);
      expect(new Set((await simNodes()).map((n) => n.id))).toEqual(
        new Set(Array.from({ length: 50 }, (_, i) => `s-${i}`)),
      );
      sim.child.kill('SIGINT');
      expect(await sim.exited, sim.stderr()).toEqual({ code: 0, signal: null });
    },
    testTimeoutMs,
  );

  it(
    'trellis worker - bad flags exit non-zero with one error line and change nothing',
    async () => {
      const before = (await scheduler.nodes()).length;
      for (const bad of [
        ['--node-id', 'b1', '--sim-nodes', '0'],
        ['--node-id', 'b1', '--driver', 'nope'],
        ['--node-id', 'b1', '--driver', 'process', '--cpu', 'abc'],
        ['--node-id', 'b1'],
        ['--node-id', 'b.1', '--driver', 'sim'],
        ['--node-id', 'b1', '--driver', 'sim', '--label', 'novalue'],
        ['--node-id', 'b1', '--driver', 'process', '--sim-nodes', '2'],
      ]) {
        const r = await runCli(['worker', ...bad, '--nats', nats.url, '--cluster', cluster]);
        expect(r.code, `${bad.join(' ')}: ${r.stderr}`).toBe(2);
        expect(r.stderr.trimEnd().split('\n'), bad.join(' ')).toHaveLength(1);
        expect(r.stderr.trimEnd()).toMatch(errorLine);
        expect(r.stderr).not.toMatch(stackFrame);
      }
      expect((await scheduler.nodes()).length).toBe(before);
    },
    testTimeoutMs,
  );

  it(
    'trellis worker - with nats-server gone, SIGTERM still stops every machine and exits 0 within the stop timeout',
    async () => {
      // Last in this file: it kills the shared nats-server (and starts it again for the cleanup).
      const metricsPort = await freePort();
      const w = worker([
        '--node-id',
        'w2',
        '--driver',
        'process',
        '--data',
        join(dir, 'data'),
        '--stop-timeout',
        '2s',
        '--metrics-port',
        String(metricsPort),
      ]);
      // Not just the node `ready` (that is the registration): the worker's startup reconcile must be over,
      // since the machine below is unknown to the scheduler — an orphan, which that reconcile rightly stops
      // (and tombstones) when its report is taken after the create. /readyz answers 200 only once it is.
      await until(async () => await workerReady(metricsPort), 'w2 reconciled and serving', w.stderr);
      const pid = await startMachine('w2', 'sb-2');
      await nats.kill();
      w.child.kill('SIGTERM');
      // The last statuses cannot be delivered; the stop timeout bounds the wait for them.
      expect(await w.exited, w.stderr()).toEqual({ code: 0, signal: null });
      expect(alive(pid), 'the machine was stopped although NATS was gone').toBe(false);
      expect(w.stderr()).not.toMatch(stackFrame);
      await nats.restart();
    },
    testTimeoutMs,
  );
});

describe('trellis worker - against a nats-server secured by trellis nats-config', () => {
  let nats: RunningServer;
  let dir: string;
  beforeAll(async () => {
    const plan = planNatsUsers(cluster, ['r1'], ['n1'], ['cli']);
    nats = await startNats({ extraConfig: authorizationBlock(plan) });
    dir = await mkdtemp(join(tmpdir(), 'trellis-worker-sec-'));
    await writeFile(join(dir, 'credentials.json'), JSON.stringify(plan), { mode: 0o600 });
  });
  afterAll(async () => {
    await nats?.stop();
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  it('trellis worker - a node user running --sim-nodes (it would speak for other nodes) ends at once with one NATS_AUTH line', async () => {
    // A node user may call only its own node-side API subject (test/e2e/credentials.test.ts); --sim-nodes
    // calls the client API for many nodes. The call's own deadline is 10 s; the refusal must end the
    // worker well before a timeout would.
    const r = await runCli([
      'worker',
      '--node-id',
      'n1',
      '--sim-nodes',
      '2',
      '--data',
      dir,
      '--nats',
      nats.url,
      '--cluster',
      cluster,
      '--creds',
      join(dir, 'credentials.json'),
      '--user',
      'node-n1',
    ]);
    expect(r.code, r.stderr).toBe(2);
    const lines = r.stderr.trimEnd().split('\n');
    expect(lines.filter((l) => !l.startsWith('{'))).toHaveLength(1);
    expect(lines.at(-1)).toMatch(/^error: .*publish to trellis\.wk\.api.* \(NATS_AUTH\)$/);
    expect(r.stderr).not.toMatch(stackFrame);
  });
});
