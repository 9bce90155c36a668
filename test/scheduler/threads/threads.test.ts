import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { NotLeaderError } from '../../../scheduler/errors.js';
import { RaftGroupLog } from '../../../scheduler/raft-group.js';
import { createScheduler, type Scheduler } from '../../../scheduler/scheduler.js';
import { stateDigest } from '../../../scheduler/state-machine.js';
import { ThreadedRaftGroup } from '../../../scheduler/threads/group.js';
import type { Sandbox } from '../../../scheduler/types.js';
import { DeadlineExceededError, OutcomeUnknownError } from '../../../src/lib/errors.js';
import { until } from '../../helpers/until.js';
import { node, spec } from '../fixtures.js';

// Real worker threads (the worker loads the TypeScript sources through tsx), real file storage with fsync.
const cleanup: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

async function tempDir(name: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), `trellis-threads-${name}-`));
  cleanup.push(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

async function threaded(
  dir: string,
  extra: { leaderWaitMs?: number; pipeline?: { batchSizeMax: number } } = {},
) {
  const log = await ThreadedRaftGroup.open({
    dir,
    replicas: 3,
    ...(extra.pipeline === undefined ? {} : { pipeline: extra.pipeline }),
  });
  const s = createScheduler({ log, ...extra });
  cleanup.push(async () => {
    await s.close();
    await log.close();
  });
  return { log, s };
}

const sha = (state: Parameters<typeof stateDigest>[0]) =>
  createHash('sha256').update(stateDigest(state)).digest('hex');

async function digests(log: ThreadedRaftGroup, replicas: readonly number[]): Promise<string[]> {
  return Promise.all(replicas.map((r) => log.digest(r)));
}

/** The same calls, one at a time (each its own batch, so both groups plan identical batches). */
async function feed(s: Scheduler): Promise<void> {
  for (let i = 0; i < 8; i++) await s.registerNode(node(`n${i}`, 2000, 4096), { requestId: `reg-${i}` });
  for (let i = 0; i < 40; i++)
    await s.create(spec(`t${i % 3}`, 100 + (i % 5) * 50, 128), { requestId: `c-${i}` });
  const all = await s.list();
  for (const sb of all.filter((_, k) => k % 3 === 0)) await s.terminate(sb.id, { requestId: `t-${sb.id}` });
  await s.setNodeState('n3', 'draining', { requestId: 'drain-3' });
  for (let i = 40; i < 60; i++) await s.create(spec('t9', 200, 256), { requestId: `c-${i}` });
}

describe('threaded Raft group (followers on worker threads)', () => {
  it('threads - a threaded group and an in-process group fed the same calls reach the same state digest on every replica', async () => {
    // Both groups run on fsynced file storage with the same seed, the same clock and the same request ids;
    // the calls go one at a time, so each group plans the same batches. Every replica of both groups,
    // the threaded group's workers included (asked for a digest over their port), ends with one digest.
    // One constant clock: the stamps in the commands must not depend on how often each run read the clock.
    const now = () => 1_000_000;
    const plain = await RaftGroupLog.open({ dir: await tempDir('plain'), seed: 3 });
    const ps = createScheduler({ log: plain, now });
    cleanup.push(async () => {
      await ps.close();
      await plain.close();
    });
    await feed(ps);
    const log = await ThreadedRaftGroup.open({ dir: await tempDir('thr'), seed: 3 });
    const ts = createScheduler({ log, now });
    cleanup.push(async () => {
      await ts.close();
      await log.close();
    });
    await feed(ts);
    await until(
      async () =>
        new Set([sha(plain.machine(0).state), sha(plain.machine(1).state), sha(plain.machine(2).state)])
          .size === 1,
      'the in-process replicas converge',
    );
    const expected = sha(plain.machine(0).state);
    expect((await ps.list()).length).toBeGreaterThan(40);
    await until(
      async () => (await digests(log, [0, 1, 2])).every((d) => d === expected),
      'every threaded replica has the in-process digest',
    );
    expect(await digests(log, [0, 1, 2])).toEqual([expected, expected, expected]);
  });

  it('threads - the leader on the main thread crashes with creates in flight: nothing acknowledged lost, nothing applied twice', async () => {
    // 300 creates in flight; when the 40th is acknowledged replica 0 (the leader, on this thread) stops as a
    // crash would. The workers learn it is gone through the leader probe and elect one of themselves; the
    // scheduler sends every unanswered create there (forwarded bytes over the port, the worker's pipeline)
    // with its request id. A create the scheduler could not finish is told so (NotLeaderError or
    // OutcomeUnknownError) and its retry with the same id is applied once. Replica 0 then restarts from its
    // WAL and catches up, and reads through it see exactly the 300 request ids, each once.
    const dir = await tempDir('failover');
    // Batches of 16, so most creates are still in flight when the leader stops.
    const { log, s } = await threaded(dir, { leaderWaitMs: 30_000, pipeline: { batchSizeMax: 16 } });
    for (let i = 0; i < 10; i++) await s.registerNode(node(`n${i}`));
    expect(log.leader()).toBe(0);
    const acked = new Map<string, Sandbox>();
    let ackedAtStop: Map<string, Sandbox> | undefined;
    let stopped: Promise<void> | undefined;
    const outcomes = await Promise.allSettled(
      Array.from({ length: 300 }, (_, i) =>
        s.create(spec('t1', 100, 100), { requestId: `r${i}` }).then((sb) => {
          acked.set(`r${i}`, sb);
          if (acked.size === 40) {
            ackedAtStop = new Map(acked);
            stopped = log.stop(0);
          }
          return sb;
        }),
      ),
    );
    await stopped;
    expect(ackedAtStop?.size).toBe(40);
    const retried = outcomes.filter((o) => o.status === 'fulfilled').length - 40;
    const unknown = outcomes.flatMap((o, i) => (o.status === 'rejected' ? [i] : []));
    for (const i of unknown) {
      const err = (outcomes[i] as PromiseRejectedResult).reason;
      expect(err instanceof NotLeaderError || err instanceof OutcomeUnknownError, String(err)).toBe(true);
      acked.set(`r${i}`, await s.create(spec('t1', 100, 100), { requestId: `r${i}` }));
    }
    expect(acked.size).toBe(300);
    // Most creates were answered by the new leader's pipeline on its worker thread.
    expect(retried + unknown.length).toBeGreaterThan(200);
    const leader = log.leader();
    expect(leader === 1 || leader === 2, `leader ${leader}`).toBe(true);
    await log.restart(0);
    const listed = await s.list();
    expect(listed.length).toBe(300);
    expect(new Set(listed.map((sb) => sb.requestId)).size).toBe(300);
    for (const [requestId, sb] of ackedAtStop ?? []) {
      const now = listed.find((x) => x.id === sb.id);
      expect(now?.requestId).toBe(requestId);
      expect(now?.nodeId).toBe(sb.nodeId);
    }
    for (const v of await s.nodes()) {
      const onNode = listed.filter((sb) => sb.nodeId === v.spec.id).length;
      expect(v.allocated.cpu).toBe(onNode * 100);
    }
    await until(async () => new Set(await digests(log, [0, 1, 2])).size === 1, 'all three replicas converge');
  });

  it('threads - createScheduler({ threads: true }) runs on a threaded group in memory and closes it', async () => {
    // The embedded option: no log given, so the scheduler makes a threaded group on memory storage (workers
    // campaign-ready in the background) and closes it with itself. Creates commit through it, and the two
    // worker replicas hold replica 0's state.
    const s = createScheduler({ threads: true });
    cleanup.push(() => s.close());
    expect(s.log).toBeInstanceOf(ThreadedRaftGroup);
    const log = s.log as ThreadedRaftGroup;
    await s.registerNode(node('n1'));
    const made = await Promise.all(
      Array.from({ length: 30 }, (_, i) => s.create(spec('t1', 100, 100), { requestId: `m${i}` })),
    );
    expect(new Set(made.map((sb) => sb.id)).size).toBe(30);
    await until(async () => new Set(await digests(log, [0, 1, 2])).size === 1, 'the replicas converge');
    await s.close();
    expect([log.up(0), log.up(1), log.up(2)]).toEqual([false, false, false]);
  });

  it('threads - close() ends every worker thread: a process that closes its group exits on its own', async () => {
    // A child process opens a threaded group on file storage, creates, closes and returns from its module
    // without process.exit: it exits only if no worker thread (or its port or timer) outlived close().
    const dir = await tempDir('close');
    const script = fileURLToPath(new URL('./close-exits.ts', import.meta.url));
    const child = spawn(process.execPath, ['--import', 'tsx', script, dir], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (b: Buffer) => {
      out += b.toString();
    });
    child.stderr.on('data', (b: Buffer) => {
      err += b.toString();
    });
    const code = await new Promise<number | null>((resolve) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        resolve(null);
      }, 30_000);
      child.on('exit', (c) => {
        clearTimeout(timer);
        resolve(c);
      });
    });
    expect(code, `the child did not exit on its own; stderr: ${err.slice(-2000)}`).toBe(0);
    expect(JSON.parse(out.trim())).toEqual({ created: 10, up: [false, false, false] });
  });

  it('threads - a worker that throws or exits is a down replica, and the main thread goes on', async () => {
    // Replica 1's worker throws on its loop: it is reported down with the error, nothing is thrown here, and
    // creates still commit (replicas 0 and 2 are a majority). Replica 2's worker then exits its thread: down
    // too, and with no majority a create is refused NotLeaderError once its wait ends. Replica 1 restarts
    // from its WAL, the majority is back, and replicas 0 and 1 converge.
    const dir = await tempDir('fault');
    const { log, s } = await threaded(dir, { leaderWaitMs: 2_000 });
    await s.registerNode(node('n1'));
    await s.create(spec('t1', 100, 100), { requestId: 'before' });
    await log.injectFault(1, 'throw');
    await until(() => !log.up(1), 'replica 1 reported down');
    expect(log.failure(1)).toMatch(/fault injected into replica r1/);
    expect((await s.create(spec('t1', 100, 100), { requestId: 'one-down' })).state).toBe('placed');
    await log.injectFault(2, 'exit');
    await until(() => !log.up(2), 'replica 2 reported down');
    expect(log.failure(2)).toMatch(/exited with code 3/);
    // Without a majority the create cannot commit: its caller is told it did not finish, and the same
    // request id retried once the majority is back is applied once.
    const refused = await s.create(spec('t1', 100, 100), { requestId: 'no-majority' }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(
      refused instanceof NotLeaderError ||
        refused instanceof DeadlineExceededError ||
        refused instanceof OutcomeUnknownError,
      String(refused),
    ).toBe(true);
    await log.restart(1);
    await until(() => log.leader() !== undefined, 'a leader again', 20_000);
    expect((await s.create(spec('t1', 100, 100), { requestId: 'after' })).state).toBe('placed');
    const retried = await s.create(spec('t1', 100, 100), { requestId: 'no-majority' });
    const listed = await s.list();
    expect(listed.filter((sb) => sb.requestId === 'no-majority').map((sb) => sb.id)).toEqual([retried.id]);
    expect(listed.map((sb) => sb.requestId).sort()).toEqual(['after', 'before', 'no-majority', 'one-down']);
    await until(async () => new Set(await digests(log, [0, 1])).size === 1, 'replicas 0 and 1 converge');
  });

  it('threads - hostile values posted to a port, either way, are dropped and counted, never thrown', async () => {
    // To a worker: values of every wrong shape, Raft frames of garbage, frames for another replica, calls
    // with bad ids and unknown ops. From a worker (its 'garbage' fault): the same kinds to the main thread.
    // Both sides count them, neither thread dies, and the group still commits and converges.
    const dir = await tempDir('hostile');
    const { log, s } = await threaded(dir);
    await s.registerNode(node('n1'));
    const junk = new Uint8Array([0x93, 0xc1, 0xff, 0x00, 0xa5]);
    const hostile: unknown[] = [
      null,
      undefined,
      7,
      'call',
      [],
      { type: 'call' },
      { type: 'call', id: -1, call: { op: 'digest' } },
      { type: 'call', id: 1.5, call: { op: 'digest' } },
      { type: 'call', id: 1, call: { op: 'rm -rf' } },
      { type: 'call', id: 1, call: { op: 'handle', bytes: 'not bytes' } },
      { type: 'call', id: 1, call: { op: 'fault', kind: 'explode' } },
      { type: 'raft', frames: null },
      { type: 'raft', frames: Array.from({ length: 5000 }, () => ({ to: 'r1', frame: junk })) },
      {
        type: 'raft',
        frames: [
          { to: 'r1', frame: junk },
          { to: 'r1', frame: 'x' },
          { to: 'r2', frame: junk },
        ],
      },
      { type: 'raft', frames: [{ to: 'r1', frame: new Uint8Array(64).fill(0xff) }] },
    ];
    for (const v of hostile) log.postRaw(1, v);
    await log.injectFault(2, 'garbage');
    const one = await log.dropped(1);
    const two = await log.dropped(2);
    expect(one.there).toBeGreaterThanOrEqual(hostile.length);
    expect(two.here).toBeGreaterThanOrEqual(10);
    expect([log.up(0), log.up(1), log.up(2)]).toEqual([true, true, true]);
    expect((await s.create(spec('t1', 100, 100), { requestId: 'still' })).state).toBe('placed');
    await until(async () => new Set(await digests(log, [0, 1, 2])).size === 1, 'the replicas converge');
  });
});
