/**
 * What the scheduler needs from replication, and nothing more: propose a command on the leader and learn
 * its apply result once committed, and a ReadIndex barrier for linearizable reads. The Raft driver
 * (`raft/node.ts`) is meant to sit behind this; `InProcessLog` (in-process-log.ts) stands in for it.
 */

import type { CommandResult } from './state.js';
import type { SchedulerStateMachine } from './state-machine.js';

export interface ReplicatedLog {
  /** The id of the replica that currently leads, or undefined during an election. */
  leader(): number | undefined;
  /**
   * Proposes `data` through replica `replica`. Resolves with that replica's apply result once the entry
   * is committed and applied there. Rejects with NotLeaderError when `replica` does not lead, or when it
   * lost leadership before the entry committed (the outcome is then unknown: retry with the same request
   * id, which the dedup table makes safe).
   */
  propose(replica: number, data: Uint8Array): Promise<CommandResult>;
  /** Resolves once replica `replica` has applied everything committed when the call was made. */
  readIndex(replica: number): Promise<void>;
  /** The replica's state machine (its applied state is what reads see). */
  machine(replica: number): SchedulerStateMachine;
  /** Number of replicas. */
  readonly size: number;
  /** Registers a listener for leader changes; returns its removal. */
  onLeaderChange(listener: (leader: number | undefined) => void): () => void;
}
