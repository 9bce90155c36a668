/**
 * The embedded Raft group with its followers on worker threads (`threads: true`). Replica 0 runs on this
 * thread exactly as in `RaftGroupLog` (its Raft node, storage, state machine, and the pipeline while it
 * leads); replicas 1..N-1 each run their whole stack — Raft node, write-ahead log with fsync, state machine
 * and pipeline — on their own worker thread (replica-worker.ts), so their apply, WAL writes and garbage no
 * longer share the leader's thread. Raft messages cross as transferred wire frames (raft/transport/ports.ts).
 *
 * What the `Scheduler` sees of a worker replica is a `ReplicaLog` with `remote` set: its leadership, mirrored
 * from the worker's status posts, and `remote.handle`, which takes the forward codec's bytes. The Scheduler
 * runs no pipeline for it and never reads its state: while a worker leads (after the main thread's replica
 * failed), creates and commands go to it as forwarded requests, answered by the worker's own pipeline;
 * reads and `watch` stay on replica 0, which follows that leader. A worker that throws, exits or is
 * terminated is a down replica: its calls in flight reject with NotLeaderError (outcome unknown; the
 * Scheduler retries them by request id, which the dedup table makes safe), and the main thread goes on.
 *
 * Replicas wait `electionTicks` (default 300, 3–6 s) before campaigning on their own, and a leader steps
 * down only after as long without a majority: the main thread may be busy for a second at a time (100,000
 * creates submitted in one turn) and a follower's apply may lag as long, without either being gone. A
 * replica that really stopped is marked absent where the leader probe (`Transport.probe`) reads it — a
 * shared array for the workers, the port network for replica 0 — so failover still takes a few ticks.
 */
import { createHash } from 'node:crypto';
import { unlink } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import type { RaftNode } from '../../raft/node.js';
import { lockFileName, readDirLock } from '../../raft/storage/dir-lock.js';
import { MemoryStorage } from '../../raft/storage/memory.js';
import type { Storage } from '../../raft/storage/storage.js';
import { PortNetwork } from '../../raft/transport/ports.js';
import { assert } from '../../src/lib/assert.js';
import { createRng } from '../../src/lib/prng.js';
import { NotLeaderError } from '../errors.js';
import { newestLeader, type RemoteReplica, type ReplicaGroup, type ReplicaLog } from '../log.js';
import { groupOptions, Member, type RaftGroupOptions, replicaStorage } from '../raft-group.js';
import { RaftReplicaLog } from '../replica.js';
import type { CommandResult } from '../state.js';
import { SchedulerStateMachine, stateDigest } from '../state-machine.js';
import {
  callIdMax,
  fromWorkerOf,
  type ReplicaWorkerData,
  type WorkerCall,
  type WorkerFault,
  type WorkerPipelineOptions,
} from './protocol.js';

/**
 * `RaftGroupOptions` (replicas: the first on this thread and the others on worker threads; elections after
 * `electionTicks` here, not 10–20), and what a threaded group adds.
 */
export interface ThreadedGroupOptions extends RaftGroupOptions {
  /**
   * Election timeout of every replica, in ticks (random in [this, 2 × this)); also the leader's check-quorum
   * window. Default 300 (3–6 s at 10 ms ticks).
   */
  readonly electionTicks?: number;
  /**
   * Nice added to each worker thread's priority (Linux, per thread; best effort). The leader's thread bounds
   * throughput and a follower only has to persist and acknowledge in time, so lowering the workers can keep
   * the leader's core; but on a loaded machine it also starves their acknowledgements. Default 0.
   */
  readonly workerNice?: number;
  /** The pipeline settings of a worker replica while it leads (the Scheduler's own apply to replica 0). */
  readonly pipeline?: WorkerPipelineOptions;
}

/**
 * Default of `electionTicks`. On one thread no replica can fall behind the others' clocks; across threads
 * the main thread may be busy for a second (100,000 creates submitted in one turn) and a follower's apply
 * may lag its leader by as long on a loaded machine. With etcd's 10 ticks, the leader's check-quorum (it must
 * hear from a majority every election timeout) stepped it down twice in a 20,000-create run, and a follower
 * would campaign against a leader that is only busy. A replica that really stopped is known at once through
 * the leader probe, so this long timeout does not slow failover.
 */
export const electionTicksDefault = 300;
/** How long `close()` waits for a worker to close its node and storage before terminating it. */
export const workerCloseMsMax = 5_000;

interface Call {
  readonly resolve: (v: unknown) => void;
  readonly reject: (e: Error) => void;
}

/** A replica on a worker thread, as this thread sees it. */
class WorkerMember implements ReplicaLog, RemoteReplica {
  readonly id: string;
  readonly remote: RemoteReplica = this;
  worker: Worker | undefined;
  /** Resolves when the current worker has exited (undefined while none runs). */
  exited: Promise<void> | undefined;
  #leaderId: string | undefined;
  #leaderTerm: number | undefined;
  readonly #calls = new Map<number, Call>();
  #nextCall = 0;
  readonly #listeners = new Set<() => void>();
  /** Values the worker posted that were not a known message. */
  dropped = 0;
  /** Why the last worker ended, when it failed. */
  failure: string | undefined;

  constructor(id: string) {
    this.id = id;
  }

  get machine(): SchedulerStateMachine {
    throw new Error(`replica ${this.id} keeps its state machine on its worker thread: use digest()`);
  }
  leaderId(): string | undefined {
    return this.worker === undefined ? undefined : this.#leaderId;
  }
  leaderTerm(): number | undefined {
    return this.worker === undefined ? undefined : this.#leaderTerm;
  }
  propose(_data: Uint8Array): Promise<CommandResult> {
    return Promise.reject(new NotLeaderError(`replica ${this.id} runs on a worker thread: forward to it`));
  }
  readIndex(): Promise<void> {
    return Promise.reject(
      new NotLeaderError(`replica ${this.id} runs on a worker thread: its state is read there`),
    );
  }
  onLeaderChange(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }
  changed(): void {
    for (const l of [...this.#listeners]) l();
  }

  /** A forwarded request (forward.ts bytes) served by the worker's replica; NotLeaderError if it goes down. */
  async handle(request: Uint8Array): Promise<Uint8Array> {
    const v = await this.call({ op: 'handle', bytes: request });
    assert(v instanceof Uint8Array, 'a worker answers a forwarded request with bytes', { replica: this.id });
    return v;
  }

  call(call: WorkerCall): Promise<unknown> {
    const w = this.worker;
    if (w === undefined) return Promise.reject(new NotLeaderError(`replica ${this.id} is down`));
    const id = this.#nextCall;
    this.#nextCall = id >= callIdMax ? 0 : id + 1;
    return new Promise((resolve, reject) => {
      this.#calls.set(id, { resolve, reject });
      w.postMessage({ type: 'call', id, call });
    });
  }

  /** A status or reply the worker posted. */
  onStatus(leaderId: string | null, leaderTerm: number | null): void {
    const id = leaderId ?? undefined;
    const term = leaderTerm ?? undefined;
    if (id === this.#leaderId && term === this.#leaderTerm) return;
    this.#leaderId = id;
    this.#leaderTerm = term;
    this.changed();
  }
  onReply(id: number, ok: boolean, value: unknown, message: string | undefined): void {
    const c = this.#calls.get(id);
    if (c === undefined) return;
    this.#calls.delete(id);
    if (ok) c.resolve(value);
    else c.reject(new NotLeaderError(`replica ${this.id}: ${message ?? 'failed'}`));
  }

  /** The worker is gone: every call in flight is unanswered (outcome unknown: the caller retries). */
  gone(why: string): void {
    this.worker = undefined;
    this.#leaderId = undefined;
    this.#leaderTerm = undefined;
    const calls = [...this.#calls.values()];
    this.#calls.clear();
    for (const c of calls) c.reject(new NotLeaderError(`replica ${this.id} went down (${why})`));
    this.changed();
  }
}

/** The worker entry, built (dist) or from source (tests run TypeScript through tsx in the worker too). */
function workerOf(data: ReplicaWorkerData): Worker {
  const fromSource = import.meta.url.endsWith('.ts');
  const entry = new URL(`./replica-worker.${fromSource ? 'ts' : 'js'}`, import.meta.url);
  if (!fromSource) return new Worker(entry, { workerData: data });
  const code = `import('tsx/esm/api').then((api) => { api.register(); return import(${JSON.stringify(entry.href)}); })`;
  return new Worker(code, { eval: true, workerData: data });
}

export class ThreadedRaftGroup implements ReplicaGroup {
  readonly size: number;
  readonly #o: Required<Omit<ThreadedGroupOptions, 'dir'>> & { dir: string | undefined };
  readonly #net = new PortNetwork();
  /** Replica 0: on this thread, the same object across a stop and restart (its state machine too). */
  readonly #local: Member;
  readonly #workers: WorkerMember[] = [];
  readonly #liveness: SharedArrayBuffer;
  readonly #listeners = new Set<(leader: number | undefined) => void>();
  #leader: number | undefined;
  #leaderTerm = 0;
  #closed = false;

  private constructor(options: ThreadedGroupOptions) {
    this.#o = {
      ...groupOptions(options),
      electionTicks: options.electionTicks ?? electionTicksDefault,
      pipeline: options.pipeline ?? {},
      workerNice: options.workerNice ?? 0,
    };
    this.size = this.#o.replicas;
    assert(
      Number.isInteger(this.#o.workerNice) && this.#o.workerNice >= 0 && this.#o.workerNice <= 19,
      'worker nice out of range',
      { workerNice: this.#o.workerNice },
    );
    this.#liveness = new SharedArrayBuffer(4 * this.size);
    this.#local = new Member('r0', new SchedulerStateMachine());
    this.#local.onLeaderChange(() => this.#updateLeader());
    for (let i = 1; i < this.size; i++) {
      const w = new WorkerMember(`r${i}`);
      w.onLeaderChange(() => this.#updateLeader());
      this.#workers.push(w);
    }
  }

  /**
   * A group on file storage under `options.dir` (or memory without it); reopens what is there. Resolves once
   * every worker has started, with replica 0 campaigning.
   */
  static async open(options: ThreadedGroupOptions = {}): Promise<ThreadedRaftGroup> {
    const g = new ThreadedRaftGroup(options);
    const ready = g.#workers.map((_, k) => g.#spawn(k + 1));
    g.#startLocal(await g.#openStorage(0));
    await Promise.all(ready);
    g.#localNode().campaign();
    return g;
  }

  /** A group on memory storage, usable at once; replica 0 campaigns once the workers have started. */
  static inMemory(options: Omit<ThreadedGroupOptions, 'dir' | 'fsync'> = {}): ThreadedRaftGroup {
    const g = new ThreadedRaftGroup(options);
    const ready = g.#workers.map((_, k) => g.#spawn(k + 1));
    g.#startLocal(new MemoryStorage());
    void Promise.allSettled(ready).then(() => {
      if (!g.#closed) g.#local.current?.node.campaign();
    });
    return g;
  }

  #openStorage(i: number): Promise<Storage> {
    return replicaStorage(this.#o, i);
  }

  #voters(): string[] {
    return Array.from({ length: this.size }, (_, i) => `r${i}`);
  }

  #startLocal(storage: Storage): void {
    const m = this.#local;
    m.current = new RaftReplicaLog({
      id: m.id,
      voters: this.#voters(),
      storage,
      transport: this.#net.endpoint(m.id),
      machine: m.machine,
      rng: createRng(this.#o.seed * 1000),
      tickMs: this.#o.tickMs,
      snapshotEntries: this.#o.snapshotEntries,
      core: { electionTicks: this.#o.electionTicks },
    });
    this.#net.down.delete(m.id);
    Atomics.store(new Int32Array(this.#liveness), 0, 1);
    m.current.onLeaderChange(() => m.changed());
    m.changed();
  }

  #localNode(): RaftNode<CommandResult> {
    const current = this.#local.current;
    assert(current !== undefined, 'replica 0 is running');
    return current.node;
  }

  #worker(i: number): WorkerMember {
    const w = this.#workers[i - 1];
    assert(w !== undefined, 'unknown worker replica', { replica: i });
    return w;
  }

  /** Starts replica `i`'s worker; resolves once it has opened its storage and listens, rejects if it fails first. */
  #spawn(i: number): Promise<void> {
    const m = this.#worker(i);
    const data: ReplicaWorkerData = {
      index: i,
      voters: this.#voters(),
      ...(this.#o.dir === undefined ? {} : { dir: join(this.#o.dir, `r${i}`) }),
      fsync: this.#o.fsync,
      tickMs: this.#o.tickMs,
      snapshotEntries: this.#o.snapshotEntries,
      seed: this.#o.seed,
      electionTicks: this.#o.electionTicks,
      niceDelta: this.#o.workerNice,
      pipeline: this.#o.pipeline,
      liveness: this.#liveness,
    };
    const w = workerOf(data);
    m.worker = w;
    m.failure = undefined;
    this.#net.down.delete(m.id);
    Atomics.store(new Int32Array(this.#liveness), i, 1);
    this.#net.attach(m.id, (frames, transfer) => {
      if (m.worker === w) w.postMessage({ type: 'raft', frames }, transfer);
    });
    let started: (() => void) | undefined;
    let failed: ((e: Error) => void) | undefined;
    const ready = new Promise<void>((resolve, reject) => {
      started = resolve;
      failed = reject;
    });
    w.on('message', (value: unknown) => {
      if (m.worker !== w) return;
      const msg = fromWorkerOf(value);
      if (msg === undefined) {
        m.dropped++;
        return;
      }
      switch (msg.type) {
        case 'raft':
          this.#net.fromRemote(m.id, msg.frames);
          return;
        case 'ready':
          started?.();
          return;
        case 'status':
          m.onStatus(msg.leaderId, msg.leaderTerm);
          return;
        case 'reply':
          m.onReply(msg.id, msg.ok, msg.ok ? msg.value : undefined, msg.ok ? undefined : msg.message);
      }
    });
    w.on('messageerror', () => {
      m.dropped++;
    });
    // A worker that throws is a failed replica, not a failure of this thread: it is marked down, and its
    // exit (which follows) settles what waited on it.
    w.on('error', (err: Error) => {
      m.failure = err.message;
      failed?.(err);
    });
    m.exited = new Promise<void>((resolve) => {
      w.once('exit', (code) => {
        if (m.worker === w) {
          m.failure ??= `its thread exited with code ${code}`;
          this.#markDown(i, m.failure);
        }
        failed?.(new NotLeaderError(`replica ${m.id}'s thread exited (${code}) before it started`));
        resolve();
      });
    });
    return ready;
  }

  #markDown(i: number, why: string): void {
    const m = this.#worker(i);
    this.#net.down.add(m.id);
    this.#net.detach(m.id);
    Atomics.store(new Int32Array(this.#liveness), i, 0);
    m.gone(why);
  }

  replica(i: number): ReplicaLog {
    return i === 0 ? this.#local : this.#worker(i);
  }

  /** True while replica `i` runs (its thread is alive, for a worker). */
  up(i: number): boolean {
    return i === 0 ? this.#local.current !== undefined : this.#worker(i).worker !== undefined;
  }

  /** Why replica `i`'s worker last ended with a failure (undefined when it did not). */
  failure(i: number): string | undefined {
    return i === 0 ? undefined : this.#worker(i).failure;
  }

  leader(): number | undefined {
    return this.#leader;
  }

  /** Replica 0's state machine; the workers' machines live on their threads (use `digest`). */
  machine(replica: number): SchedulerStateMachine {
    return this.replica(replica).machine;
  }

  /** Replica 0's Raft node (status, transfer). */
  node(replica: number): RaftNode<CommandResult> {
    assert(replica === 0, 'only replica 0 runs its Raft node on this thread', { replica });
    return this.#localNode();
  }

  /** A digest of replica `i`'s applied state (sha-256 of `stateDigest`), the same for equal states. */
  async digest(i: number): Promise<string> {
    if (i !== 0) {
      const v = await this.#worker(i).call({ op: 'digest' });
      assert(typeof v === 'string', 'a worker answers digest with a string', { replica: i });
      return v;
    }
    return createHash('sha256').update(stateDigest(this.#local.machine.state)).digest('hex');
  }

  /** Fault injection for tests: worker replica `i` throws on its loop, exits its thread, or posts garbage. */
  async injectFault(i: number, kind: WorkerFault): Promise<void> {
    await this.#worker(i).call({ op: 'fault', kind });
  }

  /** Posts `value` to worker replica `i` as is (tests: hostile input to a port). */
  postRaw(i: number, value: unknown): void {
    this.#worker(i).worker?.postMessage(value);
  }

  /** Values refused so far: those worker `i` posted here, and those posted to it (asked of the worker). */
  async dropped(i: number): Promise<{ here: number; there: number }> {
    const m = this.#worker(i);
    const there = await m.call({ op: 'dropped' });
    assert(typeof there === 'number', 'a worker answers dropped with a count', { replica: i });
    return { here: m.dropped + this.#net.dropped, there };
  }

  /** Worker replica `i`'s thread: ms on a core and waiting for one so far (Linux; zeros elsewhere). */
  async threadCpuMs(i: number): Promise<{ onCpuMs: number; waitMs: number }> {
    const v = await this.#worker(i).call({ op: 'cpu' });
    assert(Array.isArray(v) && v.length === 2, 'a worker answers cpu with two numbers', { replica: i });
    return { onCpuMs: Number(v[0]), waitMs: Number(v[1]) };
  }

  onLeaderChange(listener: (leader: number | undefined) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  propose(replica: number, data: Uint8Array): Promise<CommandResult> {
    return this.replica(replica).propose(data);
  }

  readIndex(replica: number): Promise<void> {
    return this.replica(replica).readIndex();
  }

  /**
   * Stops a replica as a crash would: replica 0's node closes and its transport goes quiet; a worker is
   * terminated (its thread ends wherever it is). `restart` brings it back from its storage.
   */
  async stop(replica: number): Promise<void> {
    if (replica === 0) {
      const m = this.#local;
      const current = m.current;
      if (current === undefined) return;
      m.current = undefined;
      this.#net.down.add(m.id);
      Atomics.store(new Int32Array(this.#liveness), 0, 0);
      m.changed();
      await current.close();
      return;
    }
    const m = this.#worker(replica);
    const w = m.worker;
    if (w === undefined) return;
    this.#markDown(replica, 'stopped');
    await w.terminate();
    await m.exited;
  }

  async restart(replica: number): Promise<void> {
    if (this.#closed || this.up(replica)) return;
    if (replica === 0) {
      this.#local.machine.reset();
      this.#startLocal(await this.#openStorage(0));
      return;
    }
    await this.#releaseDeadLock(replica);
    await this.#spawn(replica);
  }

  /**
   * A worker that was terminated or died never closed its storage, so its data directory's lock still names
   * this process, which is alive: the directory would stay locked. Its thread is gone (this is only called
   * while the replica is down), so nothing in this process writes there: the lock is removed.
   */
  async #releaseDeadLock(replica: number): Promise<void> {
    if (this.#o.dir === undefined) return;
    const dir = join(this.#o.dir, `r${replica}`);
    const lock = await readDirLock(dir);
    if (lock.state === 'held' && lock.owner.pid === process.pid && lock.owner.host === hostname())
      await unlink(join(dir, lockFileName)).catch(() => undefined);
  }

  /** Moves leadership to `replica` (Raft leadership transfer); resolves once the transfer is done. */
  async transferLeadership(replica: number): Promise<void> {
    const l = this.#leader;
    if (l === undefined || l === replica) return;
    if (l === 0) await this.#localNode().transferLeadership(`r${replica}`);
    else await this.#worker(l).call({ op: 'transfer', to: `r${replica}` });
  }

  /** Closes replica 0 and every worker (each closes its node and storage, or is terminated after a while). */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const local = this.#local.current;
    this.#local.current = undefined;
    await Promise.all([
      local?.close(),
      ...this.#workers.map(async (m) => {
        const w = m.worker;
        if (w === undefined) return;
        let timer: NodeJS.Timeout | undefined;
        const late = new Promise<void>((resolve) => {
          timer = setTimeout(resolve, workerCloseMsMax);
        });
        await Promise.race([m.call({ op: 'close' }).catch(() => {}), late]);
        clearTimeout(timer);
        m.worker = undefined;
        await w.terminate();
        await m.exited;
      }),
    ]);
  }

  #updateLeader(): void {
    const members: ReplicaLog[] = [this.#local, ...this.#workers];
    const { index: best, term: bestTerm } = newestLeader(members);
    if (best === this.#leader && (best === undefined || bestTerm === this.#leaderTerm)) return;
    this.#leader = best;
    this.#leaderTerm = bestTerm;
    for (const l of this.#listeners) l(best);
  }
}
