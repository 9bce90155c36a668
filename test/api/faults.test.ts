/**
 * The scheduler as a service under faults: three `trellis server --state scheduler` processes (file storage,
 * fsync on) and a nats-server; four remote clients (`connect()`) create and terminate sandboxes with their
 * own request ids and log every outcome, while a fault driver
 *   1. kills the leader with SIGKILL and restarts it on its data directory,
 *   2. pauses a follower with SIGSTOP, queues creates on its own API subject, and continues it (SIGCONT),
 *   3. kills nats-server and restarts it on the same port.
 * At the end every request with an unknown outcome is retried with its request id (which must resolve it),
 * and the test checks: no acknowledged create lost, no request id placed twice, no unacknowledged sandbox,
 * no node over capacity (and each node's allocation is the sum of its sandboxes), and all replicas hold
 * equal state (a hash of each replica's state, asked on its own subject, at the same applied index).
 *
 * The workload and the fault targets come from SEED (default 12); process timing is real, so a failing
 * seed shows the kind of run that failed rather than replaying it exactly. It prints its seed on failure.
 */
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { connect as natsConnect } from 'nats';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import type { NodeSpec } from '../../placement/index.js';
import type { SandboxSpec } from '../../scheduler/commands.js';
import { holdsAllocation } from '../../scheduler/lifecycle.js';
import type { Sandbox } from '../../scheduler/types.js';
import { connect, type RemoteScheduler } from '../../src/api/client.js';
import { apiReplicaSubject, requestCodec } from '../../src/api/protocol.js';
import { Deadline } from '../../src/lib/deadline.js';
import { OutcomeUnknownError, TrellisError } from '../../src/lib/errors.js';
import { createRng, type Rng } from '../../src/lib/prng.js';
import { cliMain, pauseProcess, spawnReplica } from '../../src/testing/replica-process.js';
import { type RunningServer, startNats } from '../../src/testing/servers.js';

const seed = Number(process.env.SEED ?? 12);
const ids = ['a', 'b', 'c'];
const cluster = 'faults';
const clientsCount = 4;
const nodesCount = 6;
/** Creates queued on the paused follower's own subject. */
const queuedCount = 5;

type Outcome = 'ok' | 'unknown' | string;
interface Rec {
  readonly requestId: string;
  readonly op: 'create' | 'terminate';
  readonly spec?: SandboxSpec;
  readonly sandboxId?: string;
  outcome: Outcome;
  /** The outcome of the retry with the same id, for a request whose first outcome was unknown. */
  resolved?: Outcome;
  sandbox?: Sandbox;
}

let nats: RunningServer;
let root: string;
const procs = new Map<string, ChildProcess>();
const log: Rec[] = [];

const start = (id: string): void => {
  procs.set(id, spawnReplica({ id, peers: ids, natsUrl: nats.url, root, cluster, state: 'scheduler' }));
};

beforeAll(async () => {
  expect(existsSync(cliMain), `${cliMain} missing: run npm run build first`).toBe(true);
  nats = await startNats();
  root = await mkdtemp(join(tmpdir(), 'trellis-faults-'));
  for (const id of ids) start(id);
}, 60_000);
afterAll(async () => {
  for (const p of procs.values()) {
    p.kill('SIGCONT');
    p.kill('SIGKILL');
  }
  await nats?.stop();
  if (root !== undefined) await rm(root, { recursive: true, force: true });
});

function node(i: number): NodeSpec {
  return {
    id: `n${i}`,
    // Room for every create the clients can make in the run (~1,000 of at most 0.6 cores and 640 MiB), so
    // each create's one right outcome is `ok`; with 16 cores a node, a fast run filled the cluster and the
    // queued creates waited for room past the retry's deadline.
    capacity: { cpu: 256_000, memory: 1_048_576, disk: 4_000_000 },
    labels: {},
    state: 'ready',
  };
}

function spec(rng: Rng): SandboxSpec {
  return {
    tenant: `t${rng.int(0, 3)}`,
    resources: { cpu: 100 * rng.int(1, 6), memory: 128 * rng.int(1, 5), disk: 1024 },
  };
}

/** Runs `call` and records its outcome: ok, unknown (OutcomeUnknownError), or the typed error's code. */
async function attempt(rec: Rec, call: () => Promise<Sandbox | undefined>): Promise<Outcome> {
  try {
    const sb = await call();
    if (sb !== undefined) rec.sandbox = sb;
    return 'ok';
  } catch (err) {
    if (err instanceof OutcomeUnknownError) return 'unknown';
    if (err instanceof TrellisError) return err.code;
    throw err;
  }
}

/** One client: creates, and terminates some of what it created, until `stop` says so. */
async function runClient(k: number, client: RemoteScheduler, rng: Rng, stop: () => boolean): Promise<void> {
  const live: string[] = [];
  for (let n = 0; !stop(); n++) {
    const requestId = `s${seed}-c${k}-${n}`;
    if (live.length > 0 && rng.chance(0.3)) {
      const sandboxId = live.splice(rng.int(0, live.length), 1)[0] as string;
      const rec: Rec = { requestId, op: 'terminate', sandboxId, outcome: 'pending' };
      log.push(rec);
      rec.outcome = await attempt(rec, async () => {
        await client.terminate(sandboxId, { requestId });
        return undefined;
      });
    } else {
      const rec: Rec = { requestId, op: 'create', spec: spec(rng), outcome: 'pending' };
      log.push(rec);
      rec.outcome = await attempt(rec, () => client.create(rec.spec as SandboxSpec, { requestId }));
      if (rec.outcome === 'ok' && rec.sandbox !== undefined) live.push(rec.sandbox.id);
    }
  }
}

/** Sends creates straight to `replica`'s own subject without waiting for the answers (it is paused). */
async function queueOn(replica: string, rng: Rng): Promise<void> {
  const nc = await natsConnect({ servers: nats.url });
  try {
    const sent: Promise<unknown>[] = [];
    for (let i = 0; i < queuedCount; i++) {
      const rec: Rec = { requestId: `s${seed}-q${i}`, op: 'create', spec: spec(rng), outcome: 'unknown' };
      log.push(rec);
      const frame = requestCodec.encode({
        id: rec.requestId,
        deadline: Deadline.after(20_000).toWire(),
        call: { op: 'create', spec: rec.spec },
      });
      // No answer comes while it is stopped: the outcome stays unknown, as a caller's would.
      sent.push(nc.request(apiReplicaSubject(cluster, replica), frame, { timeout: 500 }).catch(() => {}));
    }
    await nc.flush();
    await Promise.all(sent);
  } finally {
    await nc.close();
  }
}

async function leaderOf(client: RemoteScheduler): Promise<string> {
  for (;;) {
    const st = await client.status();
    if (st.leader !== undefined && st.role === 'leader') return st.leader;
    await sleep(50);
  }
}

/** Kill -9 and restart of the leader, a paused follower with queued requests, a nats-server restart. */
async function faults(client: RemoteScheduler, rng: Rng, note: (s: string) => void): Promise<void> {
  await sleep(1_000 + rng.int(0, 500));
  const leader = await leaderOf(client);
  note(`kill -9 leader ${leader}`);
  procs.get(leader)?.kill('SIGKILL');
  await sleep(1_000 + rng.int(0, 500));
  start(leader);
  note(`restarted ${leader}`);
  await sleep(2_000);
  const now = await leaderOf(client);
  const follower = rng.pick(ids.filter((id) => id !== now));
  note(`SIGSTOP follower ${follower} (leader ${now})`);
  const paused = procs.get(follower) as ChildProcess;
  await pauseProcess(paused);
  await queueOn(follower, rng);
  await sleep(1_500 + rng.int(0, 500));
  paused.kill('SIGCONT');
  note(`SIGCONT ${follower}`);
  await sleep(1_500);
  note('kill -9 nats-server');
  await nats.kill();
  await sleep(500 + rng.int(0, 500));
  await nats.restart();
  note('restarted nats-server');
  await sleep(2_500);
}

/** Asks every replica for its state hash until all answer at one applied index; returns the hashes. */
async function digests(client: RemoteScheduler): Promise<Map<string, string>> {
  let last = '';
  for (let round = 0; round < 100; round++) {
    const all = await Promise.all(ids.map((replica) => client.status({ replica, digest: true })));
    const applied = new Set(all.map((s) => s.digestApplied));
    if (applied.size === 1) return new Map(all.map((s) => [s.replica, s.digest as string]));
    last = all.map((s) => `${s.replica}@${s.digestApplied}`).join(' ');
    await sleep(100);
  }
  throw new Error(`replicas did not reach one applied index: ${last}`);
}

describe('service - three processes under faults', () => {
  it('service - kill -9, SIGSTOP and a nats-server restart lose, duplicate or overfill nothing', async () => {
    const notes: string[] = [];
    const note = (s: string): void => {
      notes.push(`${new Date().toISOString()} ${s}`);
    };
    onTestFailed(() => {
      console.error(`service faults failed with SEED=${seed}; faults:\n${notes.join('\n')}`);
    });
    const rng = createRng(seed);
    const admin = await connect({ servers: nats.url, cluster, timeoutMs: 30_000 });
    const clients: RemoteScheduler[] = [];
    try {
      for (let i = 0; i < nodesCount; i++) await admin.registerNode(node(i), { requestId: `s${seed}-n${i}` });
      for (let k = 0; k < clientsCount; k++) {
        clients.push(
          await connect({ servers: nats.url, cluster, timeoutMs: 6_000, attemptTimeoutMs: 1_000 }),
        );
      }
      let stopped = false;
      const running = clients.map((c, k) => runClient(k, c, rng.fork(), () => stopped));
      await faults(admin, rng.fork(), note).finally(() => {
        stopped = true;
      });
      await Promise.all(running);

      // Every unknown outcome is resolved by a retry with the same request id and arguments.
      for (const rec of log.filter((r) => r.outcome === 'unknown')) {
        rec.resolved = await attempt(rec, async () =>
          rec.op === 'create'
            ? admin.create(rec.spec as SandboxSpec, { requestId: rec.requestId })
            : admin.terminate(rec.sandboxId as string, { requestId: rec.requestId }).then(() => undefined),
        );
        expect(rec.resolved, `retry of ${rec.op} ${rec.requestId}`).not.toBe('unknown');
      }
      const final = (r: Rec): Outcome => r.resolved ?? r.outcome;
      for (const r of log) expect(final(r), `${r.op} ${r.requestId}`).toBe('ok');
      const creates = log.filter((r) => r.op === 'create');
      expect(creates.length).toBeGreaterThan(20);
      expect(log.filter((r) => r.outcome === 'unknown').length).toBeGreaterThanOrEqual(queuedCount);

      const sandboxes = await admin.list();
      const byRequest = new Map<string, Sandbox[]>();
      for (const s of sandboxes) byRequest.set(s.requestId, [...(byRequest.get(s.requestId) ?? []), s]);
      // None placed twice, and none that nobody asked for.
      for (const [rid, list] of byRequest) expect(list.length, `sandboxes of request ${rid}`).toBe(1);
      const asked = new Set(creates.map((r) => r.requestId));
      for (const s of sandboxes) expect(asked.has(s.requestId), `unasked sandbox ${s.id}`).toBe(true);
      // No acknowledged create lost: it is there, with the id it was acknowledged with, unless terminated.
      const terminated = new Set(log.filter((r) => r.op === 'terminate').map((r) => r.sandboxId));
      for (const r of creates) {
        const got = byRequest.get(r.requestId)?.[0];
        const id = r.sandbox?.id;
        if (id !== undefined && terminated.has(id)) {
          expect(got === undefined || got.state === 'terminated' || got.state === 'terminating').toBe(true);
          continue;
        }
        expect(got?.id, `create ${r.requestId}`).toBe(id);
        expect(got?.state, `create ${r.requestId}`).toBe('placed');
      }
      // No node over capacity; each node's allocation is what its sandboxes hold.
      for (const n of await admin.nodes()) {
        const held = sandboxes.filter((s) => s.nodeId === n.id && holdsAllocation(s.state));
        for (const dim of ['cpu', 'memory', 'disk'] as const) {
          expect(n.allocated[dim], `${n.id} ${dim}`).toBeLessThanOrEqual(n.spec.capacity[dim]);
          const sum = held.reduce((a, s) => a + s.spec.resources[dim], 0);
          expect(n.allocated[dim], `${n.id} ${dim}`).toBe(sum);
        }
      }
      // All replicas hold equal state.
      note(`${creates.length} creates, ${log.length} requests, ${sandboxes.length} sandboxes at the end`);
      const hashes = await digests(admin);
      expect(new Set(hashes.values()).size, JSON.stringify([...hashes])).toBe(1);
    } finally {
      for (const c of clients) await c.close();
      await admin.close();
    }
  }, 90_000);
});
