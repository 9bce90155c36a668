/**
 * The scheduler simulation's replica group: the production replicas (`RaftReplicaLog`: a `RaftNode` driving
 * the Raft core, with a `SchedulerStateMachine`) on MemoryStorage and a SimNetwork, all on one
 * `VirtualTimers`, so a seed replays exactly while the scheduler runs on the driver it ships with under the
 * faults of the Raft simulation: drops, duplicates, delays, partitions, and crashes that keep what was
 * synced plus a random prefix of the unsynced writes, restarting the replica from its snapshot and log.
 *
 * `tick()` moves virtual time by one Raft tick (every replica's ticker fires, then the network delivers
 * what is due); the simulation then lets the event loop settle, which runs each driver's Ready loop with
 * its storage writes (memory, resolved at once) to quiescence.
 */
import type { Message } from '../../raft/core/messages.js';
import { MemoryStorage } from '../../raft/storage/memory.js';
import { perfectLink, SimNetwork } from '../../raft/transport/memory.js';
import type { Transport } from '../../raft/transport.js';
import { NotLeaderError } from '../../scheduler/errors.js';
import { newestLeader, type ReplicaGroup, type ReplicaLog } from '../../scheduler/log.js';
import { RaftReplicaLog } from '../../scheduler/replica.js';
import type { CommandResult } from '../../scheduler/state.js';
import { SchedulerStateMachine } from '../../scheduler/state-machine.js';
import { createRng, type Rng } from '../../src/lib/prng.js';
import { VirtualTimers } from '../../src/lib/timers.js';

/** Milliseconds of virtual time per Raft tick. */
const tickMs = 1;
/** Rounds of same-tick deliveries (a request, its answer, the next request, ...) one tick allows. */
const deliveryRoundsPerTickMax = 64;

/** One turn of the event loop: every driver's Ready loop, on memory storage, runs to quiescence. */
const settle = (): Promise<void> => new Promise((r) => setImmediate(r));

export interface SimRaftLogStats {
  crashes: number;
  restarts: number;
  elections: number;
  snapshotsInstalled: number;
}

/** One replica for the life of the run: the same log object (and state machine) across crashes. */
class Member implements ReplicaLog {
  /**
   * Each incarnation gets its own state machine: a crashed driver may still finish the Ready it was in
   * (apply included) after the crash, and must not write into its successor's state.
   */
  machine = new SchedulerStateMachine();
  current: RaftReplicaLog | undefined;
  /** The incarnation's transport gate: a crashed replica neither sends nor receives, even mid-Ready. */
  gate = { alive: false };
  storage = new MemoryStorage();
  /** Snapshots installed by earlier incarnations. */
  installedBefore = 0;
  readonly #listeners = new Set<() => void>();
  constructor(readonly id: string) {}

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
    if (this.current === undefined) return Promise.reject(new NotLeaderError(`replica ${this.id} is down`));
    return this.current.propose(data);
  }
  readIndex(): Promise<void> {
    if (this.current === undefined) return Promise.reject(new NotLeaderError(`replica ${this.id} is down`));
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

export class SimRaftLog implements ReplicaGroup {
  readonly size: number;
  readonly net: SimNetwork<Message>;
  readonly timers = new VirtualTimers();
  readonly #rng: Rng;
  readonly #members: Member[] = [];
  readonly #listeners = new Set<(leader: number | undefined) => void>();
  #leader: number | undefined;
  #leaderTerm = 0;
  readonly #snapshotEvery: number;
  readonly #stats = { crashes: 0, restarts: 0, elections: 0 };

  constructor(replicas: number, seed: number, options: { snapshotEvery?: number } = {}) {
    this.size = replicas;
    this.#rng = createRng(seed);
    this.#snapshotEvery = options.snapshotEvery ?? 50;
    this.net = new SimNetwork<Message>(this.#rng.fork(), (m) => m, perfectLink);
    for (let i = 0; i < replicas; i++) {
      const m = new Member(`r${i}`);
      m.onLeaderChange(() => this.#updateLeader());
      this.#members.push(m);
      this.#start(m);
    }
  }

  get stats(): SimRaftLogStats {
    const installed = this.#members.reduce(
      (n, m) => n + m.installedBefore + (m.current?.node.status().snapshotsInstalled ?? 0),
      0,
    );
    return { ...this.#stats, snapshotsInstalled: installed };
  }

  /** A gated endpoint: once its incarnation crashed, nothing it sends leaves and nothing reaches it. */
  #transport(id: string, gate: { alive: boolean }): Transport<Message> {
    const inner = this.net.endpoint(id);
    return {
      send: (messages) => {
        if (gate.alive) inner.send(messages);
      },
      onMessage: (handler) =>
        inner.onMessage((msg) => {
          if (gate.alive) handler(msg);
        }),
      onUnreachable: (handler) => inner.onUnreachable(handler),
      close: async () => {
        // The next incarnation registers its own handlers on the shared network; leave them alone.
      },
    };
  }

  #start(m: Member): void {
    m.gate = { alive: true };
    m.current = new RaftReplicaLog({
      id: m.id,
      voters: this.#ids(),
      storage: m.storage,
      transport: this.#transport(m.id, m.gate),
      machine: m.machine,
      rng: this.#rng.fork(),
      tickMs,
      snapshotEntries: this.#snapshotEvery,
      timers: this.timers,
    });
    m.current.onLeaderChange(() => {
      if (m.current?.leaderTerm() !== undefined) this.#stats.elections++;
      m.changed();
    });
    m.changed();
  }

  #ids(): string[] {
    return Array.from({ length: this.size }, (_, i) => `r${i}`);
  }

  #member(i: number): Member {
    const m = this.#members[i];
    if (m === undefined) throw new Error(`no replica ${i}`);
    return m;
  }

  replica(i: number): ReplicaLog {
    return this.#member(i);
  }
  leader(): number | undefined {
    return this.#leader;
  }
  machine(i: number): SchedulerStateMachine {
    return this.#member(i).machine;
  }
  propose(i: number, data: Uint8Array): Promise<CommandResult> {
    return this.#member(i).propose(data);
  }
  readIndex(i: number): Promise<void> {
    return this.#member(i).readIndex();
  }
  onLeaderChange(listener: (leader: number | undefined) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /**
   * One tick of virtual time: every live replica's driver ticks, then the network delivers what is due, and
   * — as the synchronous drivers this replaced did — what the replicas send in answer with no delay is
   * delivered within the same tick: the event loop settles (the drivers run their Readies) between rounds.
   */
  async tick(): Promise<void> {
    this.timers.runUntil(this.timers.now() + tickMs);
    await settle();
    this.net.tick();
    for (let round = 0; round < deliveryRoundsPerTickMax; round++) {
      await settle();
      if (this.net.deliverDue() === 0) break;
    }
  }

  /**
   * Crashes a replica: it keeps what was synced plus a random prefix of the rest, stops sending at once
   * (even from a Ready in progress), and its callers get NotLeaderError as its driver closes.
   */
  crash(i: number): void {
    const m = this.#member(i);
    const current = m.current;
    if (current === undefined) return;
    m.gate.alive = false;
    m.installedBefore += current.node.status().snapshotsInstalled;
    m.storage = m.storage.crashImage(this.#rng.int(0, m.storage.unsyncedWrites + 1));
    m.current = undefined;
    this.#stats.crashes++;
    m.changed();
    void current.close();
  }

  restart(i: number): void {
    const m = this.#member(i);
    if (m.up) return;
    this.#stats.restarts++;
    // A fresh state machine: the driver restores it from the snapshot and replays the log.
    m.machine = new SchedulerStateMachine();
    this.#start(m);
  }

  isUp(i: number): boolean {
    return this.#member(i).up;
  }

  /** Every replica is up and has applied the leader's whole committed log, and the leader has nothing uncommitted. */
  converged(): boolean {
    const l = this.#leader;
    if (l === undefined) return false;
    const leader = this.#member(l).current?.node;
    if (leader === undefined) return false;
    const commit = leader.status().commit;
    if ([...leader.progress().values()].some((p) => p.match !== commit)) return false;
    return this.#members.every((m) => {
      const st = m.current?.node.status();
      return st !== undefined && st.applied === commit && st.commit === commit;
    });
  }

  /** What `converged` looks at, for a failure message. */
  describe(): string {
    const l = this.#leader;
    const lead = l === undefined ? undefined : this.#member(l).current?.node;
    const progress =
      lead === undefined ? [] : [...lead.progress()].map(([id, p]) => `${id}:${p.match}/${p.state}`);
    const members = this.#members.map((m) => {
      const st = m.current?.node.status();
      return st === undefined
        ? `${m.id}:down`
        : `${m.id}:${st.role} t${st.term} c${st.commit} a${st.applied}`;
    });
    return `leader ${String(l)} [${members.join(' ')}] progress [${progress.join(' ')}]`;
  }

  #updateLeader(): void {
    const { index: best, term: bestTerm } = newestLeader(this.#members);
    // A new term is a new leadership even on the same replica.
    if (best === this.#leader && (best === undefined || bestTerm === this.#leaderTerm)) return;
    this.#leader = best;
    this.#leaderTerm = bestTerm;
    for (const l of this.#listeners) l(best);
  }
}
