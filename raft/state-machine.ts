/**
 * What the Raft driver applies committed entries to. Implementations must be deterministic: `apply` may
 * read only the entry and the machine's own state, never a clock or a random source, so every replica
 * that applies the same log reaches the same state.
 */
import type { Entry } from './core/types.js';

export interface StateMachine<R = unknown> {
  /** Applies one committed normal entry and returns the result the proposer's promise resolves with. */
  apply(entry: Entry): R;
  /** Serialises the whole state as of the last applied entry. */
  snapshot(): Uint8Array;
  /**
   * Optional: takes the state as of the last applied entry now, cheaply, and returns a writer that
   * serialises it later, in pieces, while apply goes on. The driver prefers it to `snapshot()`, so taking a
   * snapshot does not stall the apply loop.
   */
  snapshotLater?(): () => Promise<Uint8Array>;
  /** Replaces the whole state with a snapshot's. */
  restore(data: Uint8Array): void;
}
