/**
 * Raft messages on the wire: the core's message union in a versioned, validated msgpack envelope
 * (src/lib/codec.ts), for transports that leave the process (NATS).
 */
import { createCodec } from '../src/lib/codec.js';
import { type Message, parseMessage } from './core/messages.js';

/** A Raft message frame, at most (snapshot chunks will stay under it). */
export const raftFrameBytesMax = 8 << 20;

export const raftMessageCodec = createCodec<Message>({
  kind: 'trellis.raft.msg',
  version: 1,
  frameBytesMax: raftFrameBytesMax,
  decoders: { 1: parseMessage },
});
