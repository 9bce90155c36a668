/**
 * The whole path with real processes: a nats-server, three `trellis server` replicas (Raft over NATS, file
 * storage, the leader's dispatcher on the nodes' command subjects) and three `trellis worker --driver
 * process` (a real child process stands in for each VM, a real sparse file for its disk). The test talks to
 * the cluster only through the remote client and the CLI, and looks at the machines only from outside (pid
 * files, /proc, the sandbox directories).
 */
import type { ChildProcess } from 'node:child_process';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type NatsConnection, connect as natsConnect } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SandboxSpec } from '../../scheduler/commands.js';
import { connect, type RemoteScheduler } from '../../src/api/client.js';
import { cliMain, spawnReplica } from '../../src/testing/replica-process.js';
import { type RunningServer, startNats } from '../../src/testing/servers.js';
import { nodeCommandSubject, workerCommandCodec, workerReplyCodec } from '../../src/worker/nats-binding.js';
import { runCli } from '../cli/run-cli.js';
import { alive, procState } from '../helpers/processes.js';
import { until as poll, type UntilCondition } from '../helpers/until.js';

const cluster = 'e2e';
const replicaIds = ['r1', 'r2', 'r3'];
const nodeIds = ['w1', 'w2', 'w3'];
/** Node silence after which the leader marks it down: short, so the lost case takes seconds. */
const nodeDownAfterMs = 3_000;
const waitMsMax = 60_000;
const testTimeoutMs = 180_000;

let nats: RunningServer;
let root: string;
let client: RemoteScheduler;
let raw: NatsConnection;
const replicas = new Map<string, ChildProcess>();
const workers = new Map<string, ChildProcess>();
/** Every machine pid seen, killed at the end whatever happened (a SIGKILLed worker leaves them running). */
const machinePids = new Set<number>();

function startWorker(nodeId: string): ChildProcess {
  const child = spawn(
    process.execPath,
    [
      cliMain,
      'worker',
      '--node-id',
      nodeId,
      '--driver',
      'process',
      '--data',
      join(root, 'workers', nodeId),
      '--cpu',
      '8000',
      '--memory',
      '8192',
      '--disk',
      '100000',
      '--label',
      `node=${nodeId}`,
      '--heartbeat-interval',
      '300',
      '--nats',
      nats.url,
      '--cluster',
      cluster,
    ],
    { stdio: ['ignore', 'ignore', 'ignore'], env: { ...process.env, TRELLIS_LOG_LEVEL: 'warn' } },
  );
  workers.set(nodeId, child);
  return child;
}

/** Polls through leader changes: a call that fails is retried until the deadline. */
const until = <T>(f: UntilCondition<T>, what: string): Promise<T> =>
  poll(f, what, { timeoutMs: waitMsMax, pollMs: 100, retryErrors: true });

function sandboxDir(nodeId: string, sandboxId: string): string {
  return join(root, 'workers', nodeId, nodeId, 'sandboxes', sandboxId);
}

async function machinePid(nodeId: string, sandboxId: string): Promise<number> {
  const pid = Number((await readFile(join(sandboxDir(nodeId, sandboxId), 'vm.pid'), 'utf8')).trim());
  machinePids.add(pid);
  return pid;
}

const small = (extra: Partial<SandboxSpec> = {}): SandboxSpec => ({
  tenant: 'e2e',
  resources: { cpu: 100, memory: 64, disk: 16 },
  ...extra,
});
const on = (nodeId: string): Partial<SandboxSpec> => ({
  constraints: [{ label: 'node', op: 'eq', value: nodeId }],
});

async function stateOf(id: string): Promise<string> {
  return (await client.get(id))?.state ?? 'gone';
}

const text = (b: Uint8Array): string => Buffer.from(b).toString('utf8');
const cliFlags = (): string[] => ['--nats', nats.url, '--cluster', cluster];

beforeAll(async () => {
  expect(existsSync(cliMain), `${cliMain} missing: run npm run build first`).toBe(true);
  nats = await startNats();
  root = await mkdtemp(join(tmpdir(), 'trellis-e2e-'));
  for (const id of replicaIds) {
    replicas.set(
      id,
      spawnReplica({
        id,
        peers: replicaIds,
        natsUrl: nats.url,
        root,
        cluster,
        state: 'scheduler',
        extraArgs: ['--node-down-after', String(nodeDownAfterMs)],
      }),
    );
  }
  client = await connect({ servers: nats.url, cluster, timeoutMs: 30_000 });
  raw = await natsConnect({ servers: nats.url });
  await client.stats();
  for (const id of nodeIds) startWorker(id);
  await until(async () => {
    const ready = (await client.nodes()).filter((n) => n.state === 'ready').map((n) => n.id);
    return nodeIds.every((id) => ready.includes(id));
  }, 'three ready nodes');
}, testTimeoutMs);

afterAll(async () => {
  for (const w of workers.values()) w.kill('SIGKILL');
  for (const r of replicas.values()) r.kill('SIGKILL');
  for (const pid of machinePids) {
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {}
    try {
      process.kill(pid, 'SIGKILL');
    } catch {}
  }
  await client?.close();
  await raw?.close();
  await nats?.stop();
  if (root !== undefined) await rm(root, { recursive: true, force: true });
});

describe('e2e lifecycle - 3 replicas, 3 process workers', () => {
  it(
    'e2e lifecycle - create --wait running, exec, suspend, resume (same process, same files), terminate',
    async () => {
      const sb = await client.create(small(on('w1')), { wait: 'running' });
      expect(sb.state).toBe('running');
      expect(sb.nodeId).toBe('w1');
      const pid = await machinePid('w1', sb.id);
      expect(procState(pid)).toMatch(/[RS]/);
      const disk = join(sandboxDir('w1', sb.id), 'disk.img');
      expect(existsSync(disk)).toBe(true);

      const out = await client.exec(sb.id, [
        'sh',
        '-c',
        'echo hello; echo oops >&2; echo kept > f.txt; exit 3',
      ]);
      expect({ code: out.exitCode, stdout: text(out.stdout), stderr: text(out.stderr) }).toEqual({
        code: 3,
        stdout: 'hello\n',
        stderr: 'oops\n',
      });

      await client.suspend(sb.id);
      await until(async () => (await stateOf(sb.id)) === 'suspended', 'suspended');
      expect(procState(pid)).toBe('T');
      await expect(client.exec(sb.id, ['true'])).rejects.toMatchObject({ code: 'SCHED_NOT_RUNNING' });

      await client.resume(sb.id);
      await until(async () => (await stateOf(sb.id)) === 'running', 'running again');
      expect(await machinePid('w1', sb.id)).toBe(pid);
      expect(procState(pid)).toMatch(/[RS]/);
      const cat = await client.exec(sb.id, ['cat', 'f.txt']);
      expect(text(cat.stdout)).toBe('kept\n');
      expect(existsSync(disk)).toBe(true);

      await client.terminate(sb.id);
      await until(async () => (await stateOf(sb.id)) === 'gone', 'terminated');
      await until(async () => !alive(pid), 'machine process gone');
      expect(existsSync(sandboxDir('w1', sb.id))).toBe(false);
    },
    testTimeoutMs,
  );

  it(
    'e2e lifecycle - the CLI: create --wait running, exec prints the output and exits with its code',
    async () => {
      const created = await runCli([
        'create',
        ...cliFlags(),
        '--tenant',
        'e2e',
        '--cpu',
        '100',
        '--memory',
        '64',
        '--disk',
        '16',
        '--wait',
        'running',
        '--json',
      ]);
      expect(created.code, created.stderr).toBe(0);
      const sb = JSON.parse(created.stdout) as { id: string; state: string; node: string };
      expect(sb.state).toBe('running');
      await machinePid(sb.node, sb.id);
      const run = await runCli([
        'exec',
        ...cliFlags(),
        sb.id,
        '--',
        'sh',
        '-c',
        'echo out; echo err >&2; exit 7',
      ]);
      expect({ code: run.code, stdout: run.stdout, stderr: run.stderr }).toEqual({
        code: 7,
        stdout: 'out\n',
        stderr: 'err\n',
      });
      const json = await runCli(['exec', ...cliFlags(), '--json', sb.id, '--', 'echo', 'x']);
      expect(json.code, json.stderr).toBe(0);
      expect(JSON.parse(json.stdout)).toMatchObject({ exitCode: 0, stdout: 'x\n', timedOut: false });
      const missing = await runCli(['exec', ...cliFlags(), 'no-such-sandbox', '--', 'true']);
      expect(missing.code).not.toBe(0);
      expect(missing.stderr.trim()).toMatch(/^error: .+ \(SCHED_UNKNOWN_SANDBOX\)$/);
      await client.terminate(sb.id);
    },
    testTimeoutMs,
  );

  it(
    'e2e lifecycle - bad commands on a worker subject change nothing and crash nothing',
    async () => {
      const sb = await client.create(small(on('w2')), { wait: 'running' });
      const pid = await machinePid('w2', sb.id);
      const ask = async (nodeId: string, subjectNode: string, command: unknown, timeout = 10_000) => {
        const frame = workerCommandCodec.encode({ nodeId, command } as never);
        const m = await raw.request(nodeCommandSubject(cluster, subjectNode), frame, { timeout });
        return workerReplyCodec.decode(m.data);
      };
      // Garbage gets no answer (dropped and counted), and the worker keeps serving.
      raw.publish(nodeCommandSubject(cluster, 'w2'), new Uint8Array([0xc1, 1, 2, 3]));
      await expect(
        raw.request(nodeCommandSubject(cluster, 'w2'), new TextEncoder().encode('{"type":"create"}'), {
          timeout: 1_000,
        }),
      ).rejects.toThrow();
      // A command naming another node is refused by the node it reached.
      const wrongNode = await ask('w1', 'w2', { type: 'terminate', sandboxId: sb.id });
      expect(wrongNode).toMatchObject({ ok: false, error: { code: 'VALIDATION' } });
      // Unknown ids and malformed commands are refused with their codes.
      expect(await ask('w2', 'w2', { type: 'suspend', sandboxId: 'nope' })).toMatchObject({
        ok: false,
        error: { code: 'SANDBOX_NOT_FOUND' },
      });
      // A frame that does not validate (a bad id) is dropped like garbage: no answer, nothing created.
      expect(
        await ask('w2', 'w2', { type: 'create', sandboxId: 'bad id!' }, 1_000).catch((e: Error) => e),
      ).toBeInstanceOf(Error);
      // The sandbox is untouched and the worker still answers the scheduler.
      expect(procState(pid)).toMatch(/[RS]/);
      expect(await stateOf(sb.id)).toBe('running');
      const out = await client.exec(sb.id, ['echo', 'alive']);
      expect(text(out.stdout)).toBe('alive\n');
      await client.terminate(sb.id);
    },
    testTimeoutMs,
  );

  it(
    'e2e lifecycle - a worker killed -9 and restarted is reconciled: its machine runs on and answers exec',
    async () => {
      const sb = await client.create(small(on('w2')), { wait: 'running' });
      const pid = await machinePid('w2', sb.id);
      const old = workers.get('w2') as ChildProcess;
      const gone = new Promise((r) => old.once('exit', r));
      old.kill('SIGKILL');
      await gone;
      expect(procState(pid)).toMatch(/[RS]/);
      startWorker('w2');
      // The restarted worker finds the machine from its pid file and reports it; exec reaches it again.
      const out = await until(
        async () => client.exec(sb.id, ['echo', 'back']).catch(() => undefined),
        'exec after the worker restart',
      );
      expect(text(out.stdout)).toBe('back\n');
      expect(await stateOf(sb.id)).toBe('running');
      expect(await machinePid('w2', sb.id)).toBe(pid);
      await client.terminate(sb.id);
      await until(async () => !alive(pid), 'machine gone after terminate');
    },
    testTimeoutMs,
  );

  it(
    'e2e lifecycle - under a leader kill -9 every committed placement reaches its worker exactly once in effect',
    async () => {
      const count = 12;
      const made = await Promise.all(
        Array.from({ length: count }, (_, i) => client.create(small(on(nodeIds[i % 2] as string)))),
      );
      const leader = (await client.status()).leader as string;
      replicas.get(leader)?.kill('SIGKILL');
      replicas.delete(leader);
      for (const sb of made)
        await until(async () => (await stateOf(sb.id)) === 'running', `${sb.id} running`);
      // Each sandbox has one machine directory, on its own node only, and one live machine process.
      for (const sb of made) {
        const holders: string[] = [];
        for (const n of nodeIds) {
          const dir = join(root, 'workers', n, n, 'sandboxes');
          const names = existsSync(dir) ? await readdir(dir) : [];
          if (names.includes(sb.id)) holders.push(n);
        }
        expect(holders, sb.id).toEqual([sb.nodeId]);
        const pid = await machinePid(sb.nodeId as string, sb.id);
        expect(procState(pid)).toMatch(/[RS]/);
      }
      for (const sb of made) await client.terminate(sb.id);
    },
    testTimeoutMs,
  );

  it(
    'e2e lifecycle - a worker that never returns: its node goes down, a stateless sandbox runs again elsewhere',
    async () => {
      // Cordoning w1 and w2 puts the stateless sandbox on w3 without tying it there.
      await client.setNodeState('w1', 'cordoned');
      await client.setNodeState('w2', 'cordoned');
      const sb = await client.create(small({ stateless: true }), { wait: 'running' });
      const keeper = await client.create(small(), { wait: 'running' });
      expect([sb.nodeId, keeper.nodeId]).toEqual(['w3', 'w3']);
      await machinePid('w3', sb.id);
      await machinePid('w3', keeper.id);
      await client.setNodeState('w1', 'ready');
      await client.setNodeState('w2', 'ready');
      workers.get('w3')?.kill('SIGKILL');
      await until(async () => (await client.nodes()).find((n) => n.id === 'w3')?.state === 'down', 'w3 down');
      // The stateful one is lost with its node; the stateless one is placed again and runs on another node.
      await until(async () => (await stateOf(keeper.id)) === 'lost', 'the stateful sandbox lost');
      const moved = await until(async () => {
        const now = await client.get(sb.id);
        return now?.state === 'running' && now.nodeId !== 'w3' ? now : undefined;
      }, 'the stateless sandbox running elsewhere');
      const pid = await machinePid(moved.nodeId as string, sb.id);
      expect(procState(pid)).toMatch(/[RS]/);
      const out = await client.exec(sb.id, ['echo', 'moved']);
      expect(text(out.stdout)).toBe('moved\n');
    },
    testTimeoutMs,
  );
});
