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
  /** Stops delivery in both directions and releases resources. */
  close(): Promise<void>;
}
