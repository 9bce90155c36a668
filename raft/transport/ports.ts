/**
 * Raft messages between threads of one process (`worker_threads` ports). A message crosses as its wire frame
 * (raft/wire.ts: versioned, validated msgpack) whose buffer is transferred, not cloned; the receiver decodes
 * and validates it like a frame from the network, so whatever else is posted to a port is dropped and
 * counted, never delivered and never thrown.
 *
 * - `PortTransport` is one replica's transport inside a worker: its frames go out through `post` (to the
 *   thread that routes them), and what its thread receives is handed to `receive`.
 * - `PortNetwork` is the routing side, on the thread that owns the ports: replicas local to it get
 *   `endpoint`s (delivered on the next turn, as the loopback network does), remote replicas are `attach`ed
 *   with their port's `post`, and frames a remote posts are delivered here or passed on, still encoded.
 *
 * Delivery is best effort as Raft expects: a frame for a replica that is down or unknown is dropped and its
 * sender told it was unreachable.
 */
import type { Message } from '../core/messages.js';
import type { PeerId } from '../core/types.js';
import type { PeerPresence, Transport } from '../transport.js';
import { raftMessageCodec } from '../wire.js';

/** One encoded Raft message on its way to the replica `to`. */
export interface PortFrame {
  readonly to: PeerId;
  readonly frame: Uint8Array;
}

/** Posts frames across a thread boundary; `transfer` lists the buffers that move with them. */
export type PostFrames = (frames: PortFrame[], transfer: ArrayBuffer[]) => void;

/** Frames one posted value may carry, at most (a Ready's messages; far more than Raft sends at once). */
export const portFramesMax = 4096;

/** A peer id as the frame envelope may carry it (the codec checks the message's own ids). */
const peerIdBytesMax = 128;

/** Encodes messages into frames, with the buffers to transfer (each frame owns its whole buffer). */
export function framesOf(messages: readonly Message[]): { frames: PortFrame[]; transfer: ArrayBuffer[] } {
  const frames: PortFrame[] = [];
  const transfer: ArrayBuffer[] = [];
  for (const m of messages) {
    const frame = raftMessageCodec.encode(m);
    frames.push({ to: m.to, frame });
    if (ownsBuffer(frame)) transfer.push(frame.buffer as ArrayBuffer);
  }
  return { frames, transfer };
}

function ownsBuffer(b: Uint8Array): boolean {
  return b.byteOffset === 0 && b.byteLength === b.buffer.byteLength && b.buffer instanceof ArrayBuffer;
}

/**
 * The frames of a posted value, each checked for shape only (an object with a short string `to` and a byte
 * array `frame`); what is not a list of such frames yields nothing. Decoding is the receiver's.
 */
export function framesIn(value: unknown): { frames: PortFrame[]; dropped: number } {
  if (!Array.isArray(value) || value.length > portFramesMax) return { frames: [], dropped: 1 };
  const frames: PortFrame[] = [];
  let dropped = 0;
  for (const f of value as unknown[]) {
    if (
      typeof f === 'object' &&
      f !== null &&
      typeof (f as PortFrame).to === 'string' &&
      (f as PortFrame).to.length <= peerIdBytesMax &&
      (f as PortFrame).frame instanceof Uint8Array
    )
      frames.push({ to: (f as PortFrame).to, frame: (f as PortFrame).frame });
    else dropped++;
  }
  return { frames, dropped };
}

/** The message of a frame for `self`, or undefined when it does not decode or is addressed elsewhere. */
function messageFor(self: PeerId, frame: Uint8Array): Message | undefined {
  try {
    const m = raftMessageCodec.decode(frame);
    return m.to === self ? m : undefined;
  } catch {
    return undefined;
  }
}

/** One replica's transport inside a worker thread; the thread's message handler calls `receive`. */
export class PortTransport implements Transport<Message> {
  readonly #id: PeerId;
  readonly #post: PostFrames;
  #handler: ((m: Message) => void) | undefined;
  #closed = false;
  /** Posted frames refused (malformed, undecodable, or for another replica). */
  dropped = 0;

  constructor(id: PeerId, post: PostFrames, presence?: (peer: PeerId) => PeerPresence) {
    this.#id = id;
    this.#post = post;
    if (presence !== undefined) this.probe = (peer) => Promise.resolve(presence(peer));
  }

  probe?: (peer: PeerId) => Promise<PeerPresence>;

  send(messages: readonly Message[]): void {
    if (this.#closed || messages.length === 0) return;
    const { frames, transfer } = framesOf(messages);
    this.#post(frames, transfer);
  }

  /** Delivers the frames of a value posted to this thread; anything malformed is dropped and counted. */
  receive(value: unknown): void {
    const { frames, dropped } = framesIn(value);
    this.dropped += dropped;
    for (const f of frames) {
      const m = this.#closed ? undefined : messageFor(this.#id, f.frame);
      if (m === undefined) {
        if (!this.#closed) this.dropped++;
        continue;
      }
      this.#handler?.(m);
    }
  }

  onMessage(handler: (message: Message) => void): void {
    this.#handler = handler;
  }

  onUnreachable(_handler: (peer: PeerId) => void): void {
    // The routing thread drops frames for a replica that is down; Raft's own timeouts cover it.
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#handler = undefined;
  }
}

/** The routing side: local replicas' endpoints and remote replicas' ports. */
export class PortNetwork {
  readonly #local = new Map<PeerId, (m: Message) => void>();
  readonly #unreachable = new Map<PeerId, (peer: PeerId) => void>();
  readonly #remote = new Map<PeerId, PostFrames>();
  /** Replicas that neither send nor receive (stopped, or their thread is gone). */
  readonly down = new Set<PeerId>();
  /** Frames posted by remote replicas that were refused (malformed, undecodable, misaddressed). */
  dropped = 0;

  /** The transport of a replica that runs on this thread. */
  endpoint(id: PeerId): Transport<Message> {
    return {
      send: (messages) => {
        if (messages.length === 0 || this.down.has(id)) return;
        const local: Message[] = [];
        const remote = new Map<PeerId, Message[]>();
        for (const m of messages) {
          if (this.#remote.has(m.to)) {
            const list = remote.get(m.to);
            if (list === undefined) remote.set(m.to, [m]);
            else list.push(m);
          } else local.push(m);
        }
        for (const [to, list] of remote) {
          if (this.down.has(to)) continue;
          const { frames, transfer } = framesOf(list);
          this.#remote.get(to)?.(frames, transfer);
        }
        if (local.length > 0) setImmediate(() => this.#deliverLocal(local));
      },
      // Whether a peer is up is known here: the owner marks it down when it stops or its thread dies.
      probe: (peer) => Promise.resolve(this.down.has(peer) ? 'absent' : 'present'),
      onMessage: (handler) => {
        this.#local.set(id, handler);
      },
      onUnreachable: (handler) => {
        this.#unreachable.set(id, handler);
      },
      close: async () => {
        this.#local.delete(id);
        this.#unreachable.delete(id);
      },
    };
  }

  #deliverLocal(messages: readonly Message[]): void {
    for (const m of messages) {
      if (this.down.has(m.from)) continue;
      const handler = this.down.has(m.to) ? undefined : this.#local.get(m.to);
      if (handler === undefined) this.#unreachable.get(m.from)?.(m.to);
      else handler(m);
    }
  }

  /** A replica on another thread, reached through `post`. */
  attach(id: PeerId, post: PostFrames): void {
    this.#remote.set(id, post);
  }

  detach(id: PeerId): void {
    this.#remote.delete(id);
  }

  /**
   * Frames posted by the remote replica `from`: those for a local replica are decoded, checked (sender and
   * addressee) and delivered; those for another remote one are passed on still encoded (its thread checks
   * them). Nothing posted here throws.
   */
  fromRemote(from: PeerId, value: unknown): void {
    if (this.down.has(from)) return;
    const { frames, dropped } = framesIn(value);
    this.dropped += dropped;
    const onward = new Map<PeerId, PortFrame[]>();
    for (const f of frames) {
      if (this.down.has(f.to)) continue;
      const local = this.#local.get(f.to);
      if (local !== undefined) {
        const m = messageFor(f.to, f.frame);
        if (m === undefined || m.from !== from) this.dropped++;
        else local(m);
        continue;
      }
      if (!this.#remote.has(f.to)) {
        this.dropped++;
        continue;
      }
      const list = onward.get(f.to);
      if (list === undefined) onward.set(f.to, [f]);
      else list.push(f);
    }
    for (const [to, list] of onward)
      this.#remote.get(to)?.(
        list,
        list.filter((f) => ownsBuffer(f.frame)).map((f) => f.frame.buffer as ArrayBuffer),
      );
  }
}
