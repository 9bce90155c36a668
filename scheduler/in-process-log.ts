/**
 * A replicated log for replicas in one process: one shared ordered log, a leader that appends, and a
 * commit step that applies each entry to every replica's state machine in log order. It has Raft's
 * observable contract (one order for everyone, proposals lost on a leader change reject with
 * NotLeaderError, a new leader appends a no-op) without elections or a network, so the scheduler can run
 * and be tested while the Raft driver is finished. Commits run on `setImmediate`, so many proposals
 * made in one turn share a commit step, as they would share a Raft append.
 */
import { assert } from '../src/lib/assert.js';
import { NotLeaderError } from './errors.js';
import type { ReplicaGroup, ReplicaLog } from './log.js';
import type { CommandResult } from './state.js';
import { SchedulerStateMachine } from './state-machine.js';

/** Entries appended but not yet committed, at most; a proposer beyond it is refused. */
export const uncommittedEntriesMax = 4096;

interface Proposal {
  readonly index: number;
  readonly term: number;
  readonly data: Uint8Array;
  readonly resolve: (r: CommandResult) => void;
  readonly reject: (e: Error) => void;
}

export class InProcessLog implements ReplicaGroup {
  readonly size: number;
  readonly #machines: SchedulerStateMachine[];
  readonly #views: ReplicaLog[];
  readonly #viewListeners = new Set<() => void>();
  #leader: number | undefined = 0;
  #term = 1;
  #lastIndex = 0;
  #uncommitted: Proposal[] = [];
  #commitScheduled = false;
  readonly #listeners = new Set<(leader: number | undefined) => void>();

  constructor(replicas = 3) {
    assert(replicas >= 1 && replicas <= 9, 'replica count out of range', { replicas });
    this.size = replicas;
    this.#machines = Array.from({ length: replicas }, () => new SchedulerStateMachine());
    this.#views = this.#machines.map((machine, i) => this.#view(i, machine));
  }

  /** Replica `i` as a replica log: it leads exactly while `leader()` is `i`. */
  #view(i: number, machine: SchedulerStateMachine): ReplicaLog {
    return {
      id: `r${i}`,
      machine,
      leaderId: () => (this.#leader === undefined ? undefined : `r${this.#leader}`),
      leaderTerm: () => (this.#leader === i ? this.#term : undefined),
      propose: (data) => this.propose(i, data),
      readIndex: () => this.readIndex(i),
      onLeaderChange: (listener) => {
        this.#viewListeners.add(listener);
        return () => this.#viewListeners.delete(listener);
      },
    };
  }

  replica(i: number): ReplicaLog {
    const v = this.#views[i];
    assert(v !== undefined, 'unknown replica', { replica: i });
    return v;
  }

  leader(): number | undefined {
    return this.#leader;
  }
  get term(): number {
    return this.#term;
  }
  machine(replica: number): SchedulerStateMachine {
    const m = this.#machines[replica];
    assert(m !== undefined, 'unknown replica', { replica });
    return m;
  }

  propose(replica: number, data: Uint8Array): Promise<CommandResult> {
    if (replica !== this.#leader)
      return Promise.reject(new NotLeaderError(`replica ${replica} is not the leader`));
    if (this.#uncommitted.length >= uncommittedEntriesMax)
      return Promise.reject(new NotLeaderError('the leader has too many uncommitted entries'));
    return new Promise((resolve, reject) => {
      this.#lastIndex += 1;
      this.#uncommitted.push({ index: this.#lastIndex, term: this.#term, data, resolve, reject });
      this.#scheduleCommit();
    });
  }

  readIndex(_replica: number): Promise<void> {
    // Every replica applies at the same commit step, so a replica is never behind the commit index here.
    return Promise.resolve();
  }

  onLeaderChange(listener: (leader: number | undefined) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /**
   * Moves leadership to `next`. Entries not yet committed are dropped, as a Raft leader's uncommitted
   * tail may be, and their proposers get NotLeaderError; the new leader's first entry is a no-op.
   */
  changeLeader(next: number): void {
    assert(next >= 0 && next < this.size, 'unknown replica', { next });
    const dropped = this.#uncommitted;
    this.#uncommitted = [];
    this.#lastIndex -= dropped.length;
    this.#term += 1;
    this.#leader = next;
    for (const p of dropped)
      p.reject(new NotLeaderError(`leadership moved to replica ${next} before entry ${p.index} committed`));
    this.#append(new Uint8Array());
    for (const l of [...this.#viewListeners]) l();
    for (const l of this.#listeners) l(next);
  }

  #append(data: Uint8Array): void {
    this.#lastIndex += 1;
    this.#uncommitted.push({
      index: this.#lastIndex,
      term: this.#term,
      data,
      resolve: () => {},
      reject: () => {},
    });
    this.#scheduleCommit();
  }

  #scheduleCommit(): void {
    if (this.#commitScheduled) return;
    this.#commitScheduled = true;
    setImmediate(() => {
      this.#commitScheduled = false;
      this.#commit();
    });
  }

  #commit(): void {
    const batch = this.#uncommitted;
    this.#uncommitted = [];
    for (const p of batch) {
      const entry = { term: p.term, index: p.index, type: 'normal' as const, data: p.data };
      let result: CommandResult | undefined;
      this.#machines.forEach((m, i) => {
        const r = m.apply(entry);
        if (i === this.#leader) result = r;
      });
      p.resolve(result as CommandResult);
    }
  }
}
