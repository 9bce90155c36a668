/**
 * What the scheduler needs from replication, seen from one replica: propose a command while this replica
 * leads and learn its apply result once committed, a ReadIndex barrier, this replica's state machine, and
 * who leads. `SchedulerReplica` (replica.ts) runs on one `ReplicaLog`; nothing in it names another replica,
 * so the same code runs in-process (a Raft group on the loopback transport, or the deterministic stand-ins)
 * and as one server over NATS.
 *
 * `ReplicaGroup` is the in-process side: N replica logs sharing one process (the embedded default, the
 * tests and the simulations), with the handles a test needs.
 */

import type { CommandResult } from './state.js';
import type { SchedulerStateMachine } from './state-machine.js';

export interface ReplicaLog {
  /** This replica's id, as its peers and the forwarder name it. */
  readonly id: string;
  /** This replica's state machine: its applied state is what local reads see. */
  readonly machine: SchedulerStateMachine;
  /** The leader as this replica knows it, or undefined during an election. */
  leaderId(): string | undefined;
  /** The term of this replica's leadership while it leads and may serve the pipeline, else undefined. */
  leaderTerm(): number | undefined;
  /**
   * Proposes `data` through this replica. Resolves with its apply result once the entry is committed and
   * applied here. Rejects with NotLeaderError when this replica does not lead, or when it lost leadership
   * before the entry committed (the outcome is then unknown: retry with the same request id, which the
   * dedup table makes safe).
   */
  propose(data: Uint8Array): Promise<CommandResult>;
  /** On the leader: resolves once this replica has applied everything committed when the call was made. */
  readIndex(): Promise<void>;
  /** Called after any change of leader or of this replica's leadership term; returns its removal. */
  onLeaderChange(listener: () => void): () => void;
  /**
   * Set when this replica's state machine and pipeline run elsewhere (a worker thread, scheduler/threads):
   * the scheduler then runs no pipeline for it and never reads its `machine`; while it leads, requests reach
   * it through `remote.handle` as forwarded bytes, as they would reach another process.
   */
  readonly remote?: RemoteReplica;
}

/** A replica served elsewhere: it takes forwarded requests (forward.ts bytes) and answers with reply bytes. */
export interface RemoteReplica {
  /** As `SchedulerReplica.handle`; rejects with NotLeaderError when the replica goes down meanwhile. */
  handle(request: Uint8Array): Promise<Uint8Array>;
}

/** Replicas of one group living in one process. */
export interface ReplicaGroup {
  /** Number of replicas. */
  readonly size: number;
  /** Replica `i`'s log (the same object for the group's lifetime, across restarts). */
  replica(i: number): ReplicaLog;
  /** The index of the replica that leads and may serve the pipeline, or undefined. */
  leader(): number | undefined;
  /** Replica `i`'s state machine (shorthand for `replica(i).machine`). */
  machine(i: number): SchedulerStateMachine;
  /** Shorthand for `replica(i).propose(data)`. */
  propose(i: number, data: Uint8Array): Promise<CommandResult>;
  /** Shorthand for `replica(i).readIndex()`. */
  readIndex(i: number): Promise<void>;
  /** Registers a listener for leader changes, with the new leader's index; returns its removal. */
  onLeaderChange(listener: (leader: number | undefined) => void): () => void;
}

/** @deprecated The group-centric name; a `ReplicaGroup` is what the scheduler runs on. */
export type ReplicatedLog = ReplicaGroup;

/**
 * Of the replicas of one process, the one that leads in the newest term (undefined, with term -1, when none
 * does). A group hands its callers to this replica; comparing terms keeps a deposed leader that has not yet
 * heard of the new term from being chosen over the new one.
 */
export function newestLeader(replicas: readonly Pick<ReplicaLog, 'leaderTerm'>[]): {
  readonly index: number | undefined;
  readonly term: number;
} {
  let index: number | undefined;
  let term = -1;
  replicas.forEach((r, i) => {
    const t = r.leaderTerm();
    if (t !== undefined && t > term) {
      index = i;
      term = t;
    }
  });
  return { index, term };
}
