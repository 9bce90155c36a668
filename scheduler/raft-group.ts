/**
 * The scheduler's replicas as a real Raft group in one process: one `RaftNode` per replica, each with its own
 * `SchedulerStateMachine`, storage (memory, or a write-ahead log with fsync under a directory) and an
 * endpoint of the in-process loopback transport. Elections, replication, snapshots and ReadIndex are
 * Raft's; nothing is shared between replicas but messages. This is the embedded default behind
 * `createScheduler()`, and what `src/testing` and the benchmarks run.
 *
 * It implements `ReplicatedLog`: every Raft refusal or lost outcome becomes the scheduler's NotLeaderError,
 * which the scheduler answers by retrying with the same request id (the dedup table makes that safe).
 */
import { join } from 'node:path';
import type { Message } from '../raft/core/messages.js';
import { RaftNode } from '../raft/node.js';
import { FileStorage } from '../raft/storage/file.js';
import { MemoryStorage } from '../raft/storage/memory.js';
import type { Storage } from '../raft/storage/storage.js';
import { LoopbackNetwork } from '../raft/transport/loopback.js';
import { assert } from '../src/lib/assert.js';
import { TrellisError } from '../src/lib/errors.js';
import { createRng } from '../src/lib/prng.js';
import { NotLeaderError } from './errors.js';
import type { ReplicatedLog } from './log.js';
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

interface Member {
  node: RaftNode<CommandResult>;
  machine: SchedulerStateMachine;
  storage: Storage;
  up: boolean;
}

function toSchedulerError(err: unknown): unknown {
  // Every Raft failure of a proposal or read leaves its outcome unknown to the caller: retry elsewhere.
  if (err instanceof TrellisError && err.code.startsWith('RAFT_')) return new NotLeaderError(err.message);
  return err;
}

export class RaftGroupLog implements ReplicatedLog {
  readonly size: number;
  readonly #o: Required<Omit<RaftGroupOptions, 'dir'>> & { dir: string | undefined };
  readonly #net = new LoopbackNetwork<Message>();
  readonly #members: Member[] = [];
  readonly #listeners = new Set<(leader: number | undefined) => void>();
  #leader: number | undefined;
  #leaderTerm = 0;
  #closed = false;

  private constructor(options: RaftGroupOptions) {
    this.size = options.replicas ?? 3;
    assert(this.size >= 1 && this.size <= 9, 'replica count out of range', { replicas: this.size });
    this.#o = {
      replicas: this.size,
      dir: options.dir,
      fsync: options.fsync ?? true,
      tickMs: options.tickMs ?? 10,
      snapshotEntries: options.snapshotEntries ?? 100_000,
      seed: options.seed ?? 1,
    };
  }

  /** A group on memory storage, usable at once (it elects replica 0 straight away). */
  static inMemory(options: Omit<RaftGroupOptions, 'dir' | 'fsync'> = {}): RaftGroupLog {
    const g = new RaftGroupLog(options);
    for (let i = 0; i < g.size; i++) g.#start(i, new MemoryStorage());
    g.#member(0).node.campaign();
    return g;
  }

  /** A group on file storage under `options.dir` (or memory without it); reopens what is there. */
  static async open(options: RaftGroupOptions = {}): Promise<RaftGroupLog> {
    const g = new RaftGroupLog(options);
    for (let i = 0; i < g.size; i++) g.#start(i, await g.#openStorage(i));
    g.#member(0).node.campaign();
    return g;
  }

  async #openStorage(i: number): Promise<Storage> {
    const dir = this.#o.dir;
    return dir === undefined
      ? new MemoryStorage()
      : FileStorage.open(join(dir, `r${i}`), { fsync: this.#o.fsync });
  }

  #ids(): string[] {
    return Array.from({ length: this.size }, (_, i) => `r${i}`);
  }

  /** The replicas share one process, so each committed entry is decoded and validated once for all. */
  readonly #decode = sharedEntryDecoder();

  #start(i: number, storage: Storage, machine = new SchedulerStateMachine(this.#decode)): void {
    const node = new RaftNode<CommandResult>({
      id: `r${i}`,
      voters: this.#ids(),
      storage,
      transport: this.#net.endpoint(`r${i}`),
      stateMachine: machine,
      rng: createRng(this.#o.seed * 1000 + i),
      tickMs: this.#o.tickMs,
      snapshotEntries: this.#o.snapshotEntries,
    });
    this.#members[i] = { node, machine, storage, up: true };
    node.onRoleChange(() => this.#updateLeader());
  }

  #member(i: number): Member {
    const m = this.#members[i];
    assert(m !== undefined, 'unknown replica', { replica: i });
    return m;
  }

  leader(): number | undefined {
    return this.#leader;
  }

  machine(replica: number): SchedulerStateMachine {
    return this.#member(replica).machine;
  }

  /** The Raft node of a replica (status, membership, transfer). */
  node(replica: number): RaftNode<CommandResult> {
    return this.#member(replica).node;
  }

  onLeaderChange(listener: (leader: number | undefined) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  async propose(replica: number, data: Uint8Array): Promise<CommandResult> {
    const m = this.#member(replica);
    if (!m.up) throw new NotLeaderError(`replica ${replica} is stopped`);
    try {
      return await m.node.propose(data);
    } catch (err) {
      throw toSchedulerError(err);
    }
  }

  async readIndex(replica: number): Promise<void> {
    const m = this.#member(replica);
    if (!m.up) throw new NotLeaderError(`replica ${replica} is stopped`);
    try {
      await m.node.read();
    } catch (err) {
      throw toSchedulerError(err);
    }
  }

  /**
   * Stops a replica as a crash would, from the others' point of view (its transport goes quiet, its node
   * closes); `restart` brings it back from its storage. For leader-change tests and demos.
   */
  async stop(replica: number): Promise<void> {
    const m = this.#member(replica);
    if (!m.up) return;
    m.up = false;
    this.#net.down.add(`r${replica}`);
    this.#updateLeader();
    await m.node.close();
  }

  async restart(replica: number): Promise<void> {
    const m = this.#member(replica);
    if (m.up || this.#closed) return;
    this.#net.down.delete(`r${replica}`);
    // The same state machine object, emptied: watchers and other listeners on it stay attached, and the
    // replica rebuilds its state into it from its snapshot and log.
    m.machine.reset();
    this.#start(replica, await this.#openStorage(replica), m.machine);
  }

  /** Moves leadership to `replica` (Raft leadership transfer); resolves once it leads. */
  async transferLeadership(replica: number): Promise<void> {
    const l = this.#leader;
    if (l === undefined || l === replica) return;
    await this.#member(l).node.transferLeadership(`r${replica}`);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await Promise.all(this.#members.filter((m) => m.up).map((m) => m.node.close()));
  }

  #updateLeader(): void {
    let best: number | undefined;
    let bestTerm = -1;
    this.#members.forEach((m, i) => {
      if (!m.up) return;
      const st = m.node.status();
      if (st.role === 'leader' && st.term > bestTerm) {
        best = i;
        bestTerm = st.term;
      }
    });
    // A new term is a new leadership even on the same replica: the scheduler restarts its pipeline.
    if (best === this.#leader && (best === undefined || bestTerm === this.#leaderTerm)) return;
    this.#leader = best;
    this.#leaderTerm = bestTerm;
    for (const l of this.#listeners) l(best);
  }
}
