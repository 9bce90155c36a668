import { type ChildProcess, execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type NatsConnection } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  apiSubject,
  type KvReply,
  type KvRoute,
  kvCall,
  kvOutcomeUnknownExitCode,
  kvReplyCodec,
  kvRequestCodec,
  type ReplicaStatus,
  replicaStatus,
} from '../../src/cli/server.js';
import { Deadline } from '../../src/lib/deadline.js';
import { cliMain as main, pauseProcess, spawnReplica } from '../../src/testing/replica-process.js';
import { type RunningServer, startNats } from '../../src/testing/servers.js';

const ids = ['a', 'b', 'c'];
const cluster = 'stall';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('trellis kv - a stalled replica does not replay a request its client gave up on', () => {
  let nats: RunningServer;
  let nc: NatsConnection;
  let root: string;
  const procs = new Map<string, ChildProcess>();

  const status = async (id: string): Promise<ReplicaStatus> => {
    for (let i = 0; i < 200; i++) {
      const s = await replicaStatus(nc, cluster, id);
      if (s !== undefined) return s;
      await sleep(50);
    }
    throw new Error(`${id} does not answer status`);
  };
  const put = async (key: string, value: string): Promise<KvReply> => {
    const r = await kvCall(nc, cluster, { op: 'put', key, value }, 15_000);
    expect(r.ok, JSON.stringify(r)).toBe(true);
    return r;
  };
  const get = async (key: string): Promise<string | null | undefined> => {
    const r = await kvCall(nc, cluster, { op: 'get', key }, 15_000);
    expect(r.ok, JSON.stringify(r)).toBe(true);
    return r.ok ? r.value : undefined;
  };
  const cli = (...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> =>
    new Promise((resolve) => {
      execFile(
        process.execPath,
        [main, ...args],
        { env: { ...process.env, TRELLIS_LOG_LEVEL: 'warn' }, timeout: 60_000 },
        (err, stdout, stderr) => {
          const code = err === null ? 0 : typeof err.code === 'number' ? err.code : -1;
          resolve({ code, stdout, stderr });
        },
      );
    });

  beforeAll(async () => {
    expect(existsSync(main), `${main} missing: run npm run build first`).toBe(true);
    nats = await startNats();
    root = await mkdtemp(join(tmpdir(), 'trellis-stall-'));
    for (const id of ids) procs.set(id, spawnReplica({ id, peers: ids, natsUrl: nats.url, root, cluster }));
    nc = await connect({ servers: nats.url });
    await put('ready', 'x');
  });
  afterAll(async () => {
    for (const p of procs.values()) {
      p.kill('SIGCONT');
      p.kill('SIGKILL');
    }
    await nc.close();
    await nats.stop();
    await rm(root, { recursive: true, force: true });
  });

  it('trellis kv - a request queued to a SIGSTOPped follower is dropped on SIGCONT and overwrites nothing', async () => {
    // Client A sends put k=old straight to follower F's subject while F is stopped: the request waits in F's
    // socket. A's attempt times out, A retries through the queue group and is acknowledged; client B then
    // writes k=new and is acknowledged. After every deadline of A's attempts has passed, F is continued. It
    // must drop A's queued attempt (its deadline is past) rather than forward it to the leader, so k stays
    // "new". Before the fix F forwarded it seconds late and the read returned "old".
    let seen = '';
    const w = await put('who', 'x');
    const leader = w.ok ? w.by : '';
    const follower = ids.find((id) => id !== leader) ?? '';
    const f = procs.get(follower);
    try {
      if (f !== undefined) await pauseProcess(f);
      const route: KvRoute = { leader: follower };
      const t0 = Date.now();
      const a = await kvCall(nc, cluster, { op: 'put', key: 'k', value: 'old' }, 10_000, 300, route);
      expect(a.ok, JSON.stringify(a)).toBe(true);
      seen = `follower ${follower}; A answered ${JSON.stringify(a)} after ${Date.now() - t0} ms`;
      await put('k', 'new');
      // Each attempt of A that went unanswered had passed its deadline when A stopped waiting for it (the
      // deadline is the attempt's timeout); A has returned. The sleep is margin.
      await sleep(600);
    } finally {
      f?.kill('SIGCONT');
    }
    // F answers status only after it has read what waited in its socket before (one connection, in order).
    const after = await status(follower);
    await sleep(500);
    expect(await get('k')).toBe('new');
    expect(
      after.requestsExpired ?? 0,
      `the queued attempt was dropped as expired (${seen}; then ${JSON.stringify(after)})`,
    ).toBeGreaterThanOrEqual(1);
    // The stall did not cost the group its leader (no write was lost either way).
    expect(await get('who')).toBe('x');
  });

  it('trellis kv - a duplicate of an acknowledged write with a fresh deadline returns the first outcome', async () => {
    // The session layer alone: the same (client, seq) sent again, with a new deadline, after another client
    // overwrote the key. The group answers the first outcome (previous: null) and the newer value stays.
    const send = async (value: string, client: string): Promise<KvReply> => {
      const deadline = Deadline.after(5_000);
      const req = kvRequestCodec.encode({
        op: 'put',
        key: 'dup',
        value,
        session: { client, seq: 1, issuedMs: Date.now() - 1 },
        deadline: deadline.toWire(),
      });
      for (;;) {
        const m = await nc.request(apiSubject(cluster), req, { timeout: 2_000 });
        const reply = kvReplyCodec.decode(m.data);
        if (reply.ok || deadline.expired()) return reply;
        await sleep(50);
      }
    };
    expect(await send('first', 'dup-client')).toMatchObject({ ok: true, previous: null });
    expect(await send('second', 'other-client')).toMatchObject({ ok: true, previous: 'first' });
    expect(await send('first', 'dup-client')).toMatchObject({ ok: true, previous: null });
    expect(await get('dup')).toBe('second');
  });

  it('trellis kv - put reports an unknown outcome (exit 5, one line) when every replica is stalled, and a plain failure when none listens', async () => {
    // All replicas stopped: the request reaches a replica's socket and no answer comes. The CLI must not
    // say "failed": one line, OUTCOME_UNKNOWN, its own exit code. With no replica subscribed at all (another
    // cluster name) nothing can have been applied: a plain failure (NO_RESPONDERS), not OUTCOME_UNKNOWN.
    let stalled: { code: number; stdout: string; stderr: string };
    try {
      for (const p of procs.values()) await pauseProcess(p);
      stalled = await cli('kv', 'put', 'u', 'v', '--nats', nats.url, '--cluster', cluster);
    } finally {
      for (const p of procs.values()) p.kill('SIGCONT');
    }
    expect(stalled, JSON.stringify(stalled)).toMatchObject({
      code: kvOutcomeUnknownExitCode,
      stderr: expect.stringMatching(/^error: [^\n]*\(OUTCOME_UNKNOWN\)\n$/),
      stdout: '',
    });
    // Through the API with long attempts: a loaded machine could otherwise time an attempt out before the
    // server's "no responders" arrives, and a timeout is rightly "maybe".
    const nobody = await kvCall(nc, 'nobody-here', { op: 'put', key: 'u', value: 'v' }, 2_000, 2_000);
    expect(nobody).toMatchObject({ ok: false, code: 'NO_RESPONDERS', unapplied: true });
    // The group recovers from the stall.
    await put('after-stall', 'y');
  });
});
