/**
 * The scheduler's replicas as a real Raft group in one process: N replica logs (replica.ts
 * `RaftReplicaLog`), each one `RaftNode` with its own `SchedulerStateMachine` and storage (memory, or a
 * write-ahead log with fsync under a directory), on the in-process loopback transport. Elections,
 * replication, snapshots and ReadIndex are Raft's; nothing is shared between replicas but messages (and, as
 * an optimisation, the decoding of a committed entry). This is the embedded default behind
 * `createScheduler()`, and what `src/testing` and the benchmarks run; the `Scheduler` puts one
 * `SchedulerReplica` on each replica log.
 *
 * It adds what a test or a demo needs on top: stop a replica as a crash would, restart it from its
 * storage, move leadership.
 */
import { join } from 'node:path';
import type { Message } from '../raft/core/messages.js';
import type { RaftNode } from '../raft/node.js';
import { FileStorage } from '../raft/storage/file.js';
import { MemoryStorage } from '../raft/storage/memory.js';
import type { Storage } from '../raft/storage/storage.js';
import { LoopbackNetwork } from '../raft/transport/loopback.js';
import { assert } from '../src/lib/assert.js';
import { createRng } from '../src/lib/prng.js';
import { NotLeaderError } from './errors.js';
import { newestLeader, type ReplicaGroup, type ReplicaLog } from './log.js';
import { RaftReplicaLog } from './replica.js';
import type { CommandResult } from './state.js';
import { SchedulerStateMachine, sharedEntryDecoder } from './state-machine.js';

export interface RaftGroupOptions {
  /** Replicas. Default 3. */
  readonly replicas?: number;
  /** A directory for each replica's write-ahead log and snapshots (`<dir>/r<i>`); memory when absent. */
  readonly dir?: string;
  /** fsync the write-ahead log before acknowledging (file storage only). Default true. */
  readonly fsync?: boolean;
  /** Milliseconds per Raft tick: heartbeats every tick, elections after 10–20. Default 10. */
  readonly tickMs?: number;
  /** Applied entries between snapshots. Default 100,000. */
  readonly snapshotEntries?: number;
  /** Seed for the election timers. Default 1. */
  readonly seed?: number;
}

/** The options every embedded group takes, with their defaults (threads/group.ts adds its own). */
export function groupOptions(
  options: RaftGroupOptions,
): Required<Omit<RaftGroupOptions, 'dir'>> & { dir: string | undefined } {
  const replicas = options.replicas ?? 3;
  assert(replicas >= 1 && replicas <= 9, 'replica count out of range', { replicas });
  return {
    replicas,
    dir: options.dir,
    fsync: options.fsync ?? true,
    tickMs: options.tickMs ?? 10,
    snapshotEntries: options.snapshotEntries ?? 100_000,
    seed: options.seed ?? 1,
  };
}

/** Replica `i`'s storage: its write-ahead log under `<dir>/r<i>`, or memory without a directory. */
export async function replicaStorage(
  o: { readonly dir: string | undefined; readonly fsync: boolean },
  i: number,
): Promise<Storage> {
  return o.dir === undefined
    ? new MemoryStorage()
    : FileStorage.open(join(o.dir, `r${i}`), { fsync: o.fsync });
}

/**
 * One replica's log for the life of the group: the same object across a stop and restart (its state
 * machine too, so listeners stay attached), delegating to the Raft replica currently running. Also the
 * main thread's replica of a threaded group (threads/group.ts).
 */
export class Member implements ReplicaLog {
  readonly id: string;
  readonly machine: SchedulerStateMachine;
  current: RaftReplicaLog | undefined;
  storage: Storage | undefined;
  readonly #listeners = new Set<() => void>();

  constructor(id: string, machine: SchedulerStateMachine) {
    this.id = id;
    this.machine = machine;
  }

  get up(): boolean {
    return this.current !== undefined;
  }

  leaderId(): string | undefined {
    return this.current?.leaderId();
  }
  leaderTerm(): number | undefined {
    return this.current?.leaderTerm();
  }
  propose(data: Uint8Array): Promise<CommandResult> {
    if (this.current === undefined)
      return Promise.reject(new NotLeaderError(`replica ${this.id} is stopped`));
    return this.current.propose(data);
  }
  readIndex(): Promise<void> {
    if (this.current === undefined)
      return Promise.reject(new NotLeaderError(`replica ${this.id} is stopped`));
    return this.current.readIndex();
  }
  onLeaderChange(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }
  changed(): void {
    for (const l of [...this.#listeners]) l();
  }
}

export class RaftGroupLog implements ReplicaGroup {
  readonly size: number;
  readonly #o: Required<Omit<RaftGroupOptions, 'dir'>> & { dir: string | undefined };
  readonly #net = new LoopbackNetwork<Message>();
  readonly #members: Member[] = [];
  readonly #listeners = new Set<(leader: number | undefined) => void>();
  #leader: number | undefined;
  #leaderTerm = 0;
  #closed = false;

  private constructor(options: RaftGroupOptions) {
    this.#o = groupOptions(options);
    this.size = this.#o.replicas;
    // The replicas share one process, so each committed entry is decoded and validated once for all.
    const decode = sharedEntryDecoder();
    for (let i = 0; i < this.size; i++) {
      const m = new Member(`r${i}`, new SchedulerStateMachine(decode));
      m.onLeaderChange(() => this.#updateLeader());
      this.#members.push(m);
    }
  }

  /** A group on memory storage, usable at once (it elects replica 0 straight away). */
  static inMemory(options: Omit<RaftGroupOptions, 'dir' | 'fsync'> = {}): RaftGroupLog {
    const g = new RaftGroupLog(options);
    for (let i = 0; i < g.size; i++) g.#start(i, new MemoryStorage());
    g.node(0).campaign();
    return g;
  }

  /** A group on file storage under `options.dir` (or memory without it); reopens what is there. */
  static async open(options: RaftGroupOptions = {}): Promise<RaftGroupLog> {
    const g = new RaftGroupLog(options);
    for (let i = 0; i < g.size; i++) g.#start(i, await g.#openStorage(i));
    g.node(0).campaign();
    return g;
  }

  #openStorage(i: number): Promise<Storage> {
    return replicaStorage(this.#o, i);
  }

  #start(i: number, storage: Storage): void {
    const m = this.#member(i);
    m.storage = storage;
    m.current = new RaftReplicaLog({
      id: m.id,
      voters: this.#members.map((x) => x.id),
      storage,
      transport: this.#net.endpoint(m.id),
      machine: m.machine,
      rng: createRng(this.#o.seed * 1000 + i),
      tickMs: this.#o.tickMs,
      snapshotEntries: this.#o.snapshotEntries,
    });
    m.current.onLeaderChange(() => m.changed());
    m.changed();
  }

  #member(i: number): Member {
    const m = this.#members[i];
    assert(m !== undefined, 'unknown replica', { replica: i });
    return m;
  }

  replica(i: number): ReplicaLog {
    return this.#member(i);
  }

  leader(): number | undefined {
    return this.#leader;
  }

  machine(replica: number): SchedulerStateMachine {
    return this.#member(replica).machine;
  }

  /** The Raft node of a running replica (status, membership, transfer). */
  node(replica: number): RaftNode<CommandResult> {
    const current = this.#member(replica).current;
    assert(current !== undefined, 'the replica is running', { replica });
    return current.node;
  }

  onLeaderChange(listener: (leader: number | undefined) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  propose(replica: number, data: Uint8Array): Promise<CommandResult> {
    return this.#member(replica).propose(data);
  }

  readIndex(replica: number): Promise<void> {
    return this.#member(replica).readIndex();
  }

  /**
   * Stops a replica as a crash would, from the others' point of view (its transport goes quiet, its node
   * closes); `restart` brings it back from its storage.
   */
  async stop(replica: number): Promise<void> {
    const m = this.#member(replica);
    const current = m.current;
    if (current === undefined) return;
    m.current = undefined;
    this.#net.down.add(m.id);
    m.changed();
    await current.close();
  }

  async restart(replica: number): Promise<void> {
    const m = this.#member(replica);
    if (m.up || this.#closed) return;
    this.#net.down.delete(m.id);
    // The same state machine object, emptied: watchers and other listeners on it stay attached, and the
    // replica rebuilds its state into it from its snapshot and log.
    m.machine.reset();
    this.#start(replica, await this.#openStorage(replica));
  }

  /** Moves leadership to `replica` (Raft leadership transfer); resolves once it leads. */
  async transferLeadership(replica: number): Promise<void> {
    const l = this.#leader;
    if (l === undefined || l === replica) return;
    await this.node(l).transferLeadership(`r${replica}`);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await Promise.all(
      this.#members.map(async (m) => {
        const current = m.current;
        m.current = undefined;
        await current?.close();
      }),
    );
  }

  #updateLeader(): void {
    const { index: best, term: bestTerm } = newestLeader(this.#members);
    if (best === this.#leader && (best === undefined || bestTerm === this.#leaderTerm)) return;
    this.#leader = best;
    this.#leaderTerm = bestTerm;
    for (const l of this.#listeners) l(best);
  }
}
