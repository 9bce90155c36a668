/**
 * How the Raft driver reaches its peers. The in-memory simulated network (tests) and the NATS transport
 * implement it. Delivery is best effort: a message may be lost, delayed, duplicated or reordered, and
 * Raft tolerates all of it. `send` never throws for an unreachable peer; it reports it through
 * `onUnreachable` so the core can pause pipelining to that peer.
 */
import type { PeerId } from './core/types.js';

export interface Transport<M> {
  /** Sends messages, in order per destination as far as the medium allows. */
  send(messages: readonly M[]): void;
  /** Registers the handler for messages addressed to this replica. One handler; a second call replaces it. */
  onMessage(handler: (message: M) => void): void;
  /** Registers the handler called when a peer could not be reached. */
  onUnreachable(handler: (peer: PeerId) => void): void;
  /**
   * Optional: whether `peer` has a live endpoint now. 'absent' only on positive evidence that nobody is
   * there to receive (NATS: no subscriber on its subject, so its process or its connection is gone);
   * 'unknown' when the question could not be answered (a timeout, a disconnected medium). The driver uses
   * an 'absent' leader to elect a new one sooner; Raft's safety never depends on the answer.
   */
  probe?(peer: PeerId): Promise<PeerPresence>;
  /** Stops delivery in both directions and releases resources. */
  close(): Promise<void>;
}

/** What `Transport.probe` learned about a peer. */
export type PeerPresence = 'present' | 'absent' | 'unknown';
