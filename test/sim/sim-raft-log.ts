/**
 * A deterministic Raft-backed `ReplicatedLog` for the scheduler simulation: the scheduler's replicas are
 * RawNodes with MemoryStorage on a SimNetwork, advanced by `tick()` from the simulation (no timers), so a
 * seed replays exactly while the scheduler runs on real Raft under the faults of the Raft simulation:
 * drops, duplicates, delays, partitions, and crashes that lose unsynced writes and restart the replica's
 * state machine from its snapshot and log.
 */

import type { Message } from '../../raft/core/messages.js';
import { RawNode } from '../../raft/core/raw-node.js';
import type { Entry } from '../../raft/core/types.js';
import { MemoryStorage } from '../../raft/storage/memory.js';
import { updateOf } from '../../raft/storage/storage.js';
import { perfectLink, SimNetwork } from '../../raft/transport/memory.js';
import { NotLeaderError } from '../../scheduler/errors.js';
import type { ReplicaGroup, ReplicaLog } from '../../scheduler/log.js';
import type { CommandResult } from '../../scheduler/state.js';
import { SchedulerStateMachine } from '../../scheduler/state-machine.js';
import { createRng, type Rng } from '../../src/lib/prng.js';

interface Replica {
  readonly id: string;
  node: RawNode;
  storage: MemoryStorage;
  machine: SchedulerStateMachine;
  up: boolean;
  /** Proposals made through this replica, by index: resolved with this replica's apply result. */
  pending: Map<number, { term: number; resolve: (r: CommandResult) => void; reject: (e: Error) => void }>;
  /** ReadIndex barriers: their read index once confirmed. */
  reads: Map<string, { index: number | undefined; resolve: () => void; reject: (e: Error) => void }>;
}

export interface SimRaftLogStats {
  crashes: number;
  restarts: number;
  elections: number;
  snapshotsInstalled: number;
}

export class SimRaftLog implements ReplicaGroup {
  readonly size: number;
  readonly net: SimNetwork<Message>;
  readonly #rng: Rng;
  readonly #replicas: Replica[] = [];
  readonly #listeners = new Set<(leader: number | undefined) => void>();
  readonly #viewListeners = new Set<() => void>();
  #leader: number | undefined;
  #leaderTerm = 0;
  #readSeq = 0;
  readonly #snapshotEvery: number;
  readonly stats: SimRaftLogStats = { crashes: 0, restarts: 0, elections: 0, snapshotsInstalled: 0 };

  constructor(replicas: number, seed: number, options: { snapshotEvery?: number } = {}) {
    this.size = replicas;
    this.#rng = createRng(seed);
    this.#snapshotEvery = options.snapshotEvery ?? 50;
    this.net = new SimNetwork<Message>(this.#rng.fork(), (m) => m, perfectLink);
    for (let i = 0; i < replicas; i++) this.#start(i, new MemoryStorage());
  }

  #ids(): string[] {
    return Array.from({ length: this.size }, (_, i) => `r${i}`);
  }

  #start(i: number, storage: MemoryStorage): void {
    const id = `r${i}`;
    const machine = new SchedulerStateMachine();
    const snap = storage.snapshot();
    if (snap.meta.index > 0) machine.restore(snap.data);
    const node = new RawNode({ id, voters: this.#ids(), storage, rng: this.#rng.fork() });
    const r: Replica = { id, node, storage, machine, up: true, pending: new Map(), reads: new Map() };
    this.#replicas[i] = r;
    this.net.endpoint(id).onMessage((m) => {
      if (!r.up) return;
      r.node.step(m);
      this.#drain(r);
    });
  }

  #replica(i: number): Replica {
    const r = this.#replicas[i];
    if (r === undefined) throw new Error(`no replica ${i}`);
    return r;
  }

  leader(): number | undefined {
    return this.#leader;
  }

  /** Replica `i` as a replica log: it leads while the simulation's leader judgement names it. */
  replica(i: number): ReplicaLog {
    const group = this;
    return {
      id: `r${i}`,
      // A restart gives the replica a new state machine: always the current one.
      get machine() {
        return group.machine(i);
      },
      leaderId: () => (this.#leader === undefined ? undefined : `r${this.#leader}`),
      leaderTerm: () => (this.#leader === i ? this.#leaderTerm : undefined),
      propose: (data) => this.propose(i, data),
      readIndex: () => this.readIndex(i),
      onLeaderChange: (listener) => {
        this.#viewListeners.add(listener);
        return () => this.#viewListeners.delete(listener);
      },
    };
  }

  machine(replica: number): SchedulerStateMachine {
    return this.#replica(replica).machine;
  }

  onLeaderChange(listener: (leader: number | undefined) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  propose(replica: number, data: Uint8Array): Promise<CommandResult> {
    const r = this.#replica(replica);
    if (!r.up) return Promise.reject(new NotLeaderError(`replica ${replica} is down`));
    const res = r.node.propose([data]);
    if (!res.ok) return Promise.reject(new NotLeaderError(`replica ${replica}: ${res.reason}`));
    return new Promise<CommandResult>((resolve, reject) => {
      r.pending.set(res.index, { term: res.term, resolve, reject });
      this.#drain(r);
    });
  }

  readIndex(replica: number): Promise<void> {
    const r = this.#replica(replica);
    const context = String(++this.#readSeq);
    if (!r.up || !r.node.readIndex(context))
      return Promise.reject(new NotLeaderError(`replica ${replica} cannot serve a linearizable read`));
    return new Promise<void>((resolve, reject) => {
      r.reads.set(context, { index: undefined, resolve, reject });
      this.#drain(r);
    });
  }

  /** One tick of virtual time for every live replica and the network. */
  tick(): void {
    for (const r of this.#replicas) {
      if (!r.up) continue;
      r.node.tick();
      this.#drain(r);
    }
    this.net.tick();
    this.#updateLeader();
  }

  /** Crashes a replica: it keeps what was synced plus a random prefix of the rest; its callers get NotLeaderError. */
  crash(i: number): void {
    const r = this.#replica(i);
    if (!r.up) return;
    r.up = false;
    r.storage = r.storage.crashImage(this.#rng.int(0, r.storage.unsyncedWrites + 1));
    this.stats.crashes++;
    this.#failAll(r, `replica ${i} crashed`);
    this.#updateLeader();
  }

  restart(i: number): void {
    const r = this.#replica(i);
    if (r.up) return;
    this.stats.restarts++;
    this.#start(i, r.storage);
  }

  /** Proposals and reads not answered yet, per replica. */
  pendingCount(): number[] {
    return this.#replicas.map((r) => r.pending.size + r.reads.size);
  }

  isUp(i: number): boolean {
    return this.#replica(i).up;
  }

  /** Every live replica has applied the leader's whole log (the cluster is quiet and converged). */
  converged(): boolean {
    const l = this.#leader;
    if (l === undefined) return false;
    const last = this.#replica(l).node.log.lastIndex();
    return this.#replicas.every((r) => r.up && r.node.log.applied === last && r.node.log.committed === last);
  }

  #failAll(r: Replica, why: string): void {
    for (const p of r.pending.values()) p.reject(new NotLeaderError(why));
    r.pending.clear();
    for (const q of r.reads.values()) q.reject(new NotLeaderError(why));
    r.reads.clear();
  }

  /**
   * Carries out the replica's Readies. Not re-entrant: applying an entry runs the scheduler's listeners, which
   * may propose at once; that proposal's Ready is taken by this same loop after the current one advances.
   */
  #drain(r: Replica): void {
    if (this.#draining.has(r)) return;
    this.#draining.add(r);
    try {
      this.#drainLoop(r);
    } finally {
      this.#draining.delete(r);
    }
  }

  readonly #draining = new Set<Replica>();

  #drainLoop(r: Replica): void {
    while (r.up && r.node.hasReady()) {
      const rd = r.node.ready();
      r.storage.saveSync(updateOf(rd), rd.mustSync);
      this.net.endpoint(r.id).send([...rd.earlyMessages, ...rd.messages]);
      this.#dropReplaced(r, rd.entries);
      if (rd.snapshot !== undefined) {
        r.machine.restore(rd.snapshot.data);
        this.stats.snapshotsInstalled++;
        for (const [index, p] of r.pending)
          if (index <= rd.snapshot.meta.index) {
            r.pending.delete(index);
            p.reject(new NotLeaderError(`entry ${index} was covered by a snapshot; outcome unknown`));
          }
      }
      for (const e of rd.committedEntries) this.#apply(r, e);
      for (const rs of rd.readStates) {
        const q = r.reads.get(rs.context);
        if (q !== undefined) q.index = rs.index;
      }
      if (rd.softState !== undefined) {
        if (rd.softState.role === 'leader') this.stats.elections++;
        else {
          // Reads not yet confirmed can no longer be; proposals may still commit under the next leader.
          for (const [ctx, q] of r.reads)
            if (q.index === undefined) {
              r.reads.delete(ctx);
              q.reject(new NotLeaderError(`replica ${r.id} lost leadership`));
            }
        }
      }
      r.node.advance();
      for (const [ctx, q] of r.reads)
        if (q.index !== undefined && r.node.log.applied >= q.index) {
          r.reads.delete(ctx);
          q.resolve();
        }
      const applied = r.node.log.applied;
      if (applied - r.storage.snapshot().meta.index >= this.#snapshotEvery)
        r.storage.createSnapshotSync(applied, r.node.confState(), r.machine.snapshot());
    }
  }

  /** New entries replace the log from their first index: proposals there of another term never commit. */
  #dropReplaced(r: Replica, entries: readonly Entry[]): void {
    const first = entries[0];
    if (first === undefined) return;
    for (const [index, p] of r.pending) {
      if (index < first.index || r.node.log.term(index) === p.term) continue;
      r.pending.delete(index);
      p.reject(new NotLeaderError(`entry ${index} was replaced by another leader's`));
    }
  }

  #apply(r: Replica, e: Entry): void {
    const p = r.pending.get(e.index);
    if (e.type !== 'normal' || e.data.length === 0) {
      if (p !== undefined) {
        r.pending.delete(e.index);
        p.reject(new NotLeaderError(`entry ${e.index} was replaced`));
      }
      return;
    }
    const result = r.machine.apply(e);
    if (p === undefined) return;
    r.pending.delete(e.index);
    if (p.term === e.term) p.resolve(result);
    else p.reject(new NotLeaderError(`entry ${e.index} was replaced by another leader's`));
  }

  #updateLeader(): void {
    let best: Replica | undefined;
    let bestIndex: number | undefined;
    this.#replicas.forEach((r, i) => {
      // A leader serves the pipeline only once it has committed an entry of its term (reads need it too).
      const ready = r.up && r.node.role === 'leader' && r.node.log.term(r.node.log.committed) === r.node.term;
      if (ready && (best === undefined || r.node.term > best.node.term)) {
        best = r;
        bestIndex = i;
      }
    });
    // A new term is a new leadership even on the same replica: its pipeline starts over.
    const term = bestIndex === undefined ? 0 : this.#replica(bestIndex).node.term;
    if (bestIndex === this.#leader && term === this.#leaderTerm) return;
    this.#leader = bestIndex;
    this.#leaderTerm = term;
    for (const l of [...this.#viewListeners]) l();
    for (const l of this.#listeners) l(bestIndex);
  }
}
