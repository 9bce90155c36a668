/**
 * The Raft transport over NATS. Each replica subscribes to `trellis.<cluster>.raft.<replicaId>`; a peer's
 * messages are coalesced per tick into one NATS message, a versioned batch envelope
 * `{cluster, from, frames}` whose frames are the message codec's own envelopes.
 *
 * Delivery is best effort, as Raft expects: a full outbound queue drops (and counts) messages, a peer with no
 * subscriber (NATS "no responders") or a closed connection is reported through `onUnreachable`, and nothing
 * that arrives — random bytes, a wrong shape, another cluster's traffic, a frame too large — reaches the
 * handler unvalidated or takes the replica down: it is counted per reason and dropped.
 *
 * The connection is the caller's (credentials, TLS and reconnect policy are set where it is opened, see
 * src/nats/); the transport only uses it, so a reconnect keeps the replica's state untouched.
 */
import { ErrorCode, type NatsConnection, NatsError, type Subscription } from 'nats';
import { z } from 'zod';
import { type Codec, createCodec } from '../../src/lib/codec.js';
import { CodecError } from '../../src/lib/errors.js';
import { zodDecoder } from '../../src/lib/validate.js';
import type { PeerId } from '../core/types.js';
import type { PeerPresence, Transport } from '../transport.js';

/** Messages queued for one peer before further ones are dropped. */
export const outboundQueueMax = 4_096;
/** Frames one batch may carry. */
export const framesPerBatchMax = 1_024;
/** Bytes of envelope around a batch's frames, kept free under the server's max payload. */
const batchOverheadBytes = 256;
/** How often a peer is probed for a live subscriber. */
export const probeIntervalMsDefault = 1_000;
/**
 * How long `probe` waits for a peer's answer. "No responders" comes back from the server at once; a peer
 * that is there but busy answers late, and is then 'unknown', which the driver treats as alive, asking again
 * at its next tick. Short, because a probe delivered just before the peer died gets no answer at all: at
 * 250 ms, that wait was most of a failover in the chaos runs (followers learned 350-470 ms after the kill).
 */
export const presenceTimeoutMsDefault = 50;

export function raftSubject(cluster: string, replica: PeerId): string {
  return `trellis.${cluster}.raft.${replica}`;
}

const batchSchema = z.strictObject({
  cluster: z.string().min(1).max(128),
  from: z.string().min(1).max(128),
  frames: z
    .array(z.custom<Uint8Array>((v) => v instanceof Uint8Array, 'frame must be bytes'))
    .max(framesPerBatchMax),
});
type Batch = z.output<typeof batchSchema>;

/** Why an inbound frame or batch was dropped. */
export type DropReason = CodecError['reason'] | 'wrong-cluster' | 'handler-error';

export interface NatsTransportStats {
  readonly batchesSent: number;
  readonly messagesSent: number;
  readonly messagesReceived: number;
  /** Outbound messages dropped because a peer's queue was full or a frame exceeded the payload limit. */
  readonly outboundDropped: number;
  /** Inbound frames or batches dropped, per reason. */
  readonly dropped: Readonly<Record<DropReason, number>>;
}

export interface NatsTransportOptions<M> {
  readonly connection: NatsConnection;
  readonly cluster: string;
  readonly self: PeerId;
  /** The Raft message codec: validates every inbound frame. */
  readonly codec: Codec<M>;
  /** The replica a message is for. */
  readonly destination: (message: M) => PeerId;
  readonly probeIntervalMs?: number;
  /** How long `probe(peer)` waits for an answer before it says 'unknown'. */
  readonly presenceTimeoutMs?: number;
  /** Called once per kind of drop with an example, for a log line (optional). */
  readonly onDrop?: (reason: DropReason, detail: string) => void;
}

export class NatsTransport<M> implements Transport<M> {
  readonly #o: NatsTransportOptions<M>;
  readonly #batchCodec: Codec<Batch>;
  readonly #queues = new Map<PeerId, Uint8Array[]>();
  readonly #lastProbeMs = new Map<PeerId, number>();
  readonly #subscription: Subscription;
  #handler: (message: M) => void = () => {};
  #unreachable: (peer: PeerId) => void = () => {};
  #flushScheduled = false;
  #closed = false;
  #stats = {
    batchesSent: 0,
    messagesSent: 0,
    messagesReceived: 0,
    outboundDropped: 0,
    dropped: {
      'too-large': 0,
      malformed: 0,
      envelope: 0,
      kind: 0,
      version: 0,
      shape: 0,
      'wrong-cluster': 0,
      'handler-error': 0,
    },
  };
  readonly #reported = new Set<DropReason>();

  constructor(options: NatsTransportOptions<M>) {
    this.#o = options;
    const maxPayload = options.connection.info?.max_payload ?? 1 << 20;
    this.#batchCodec = createCodec<Batch>({
      kind: 'trellis.raft.batch',
      version: 1,
      frameBytesMax: maxPayload,
      decoders: { 1: zodDecoder(batchSchema) },
    });
    this.#subscription = options.connection.subscribe(raftSubject(options.cluster, options.self), {
      callback: (err, msg) => {
        if (err !== null) return;
        // A probe is an empty request: answering it proves this replica is subscribed.
        if (msg.data.length === 0) {
          if (msg.reply !== undefined && msg.reply !== '') msg.respond();
          return;
        }
        this.#receive(msg.data);
      },
    });
  }

  #drop(reason: DropReason, detail: string): void {
    this.#stats.dropped[reason]++;
    if (!this.#reported.has(reason)) {
      this.#reported.add(reason);
      this.#o.onDrop?.(reason, detail);
    }
  }

  #receive(data: Uint8Array): void {
    let batch: Batch;
    try {
      batch = this.#batchCodec.decode(data);
    } catch (err) {
      this.#drop(err instanceof CodecError ? err.reason : 'malformed', String(err));
      return;
    }
    if (batch.cluster !== this.#o.cluster) {
      this.#drop('wrong-cluster', `batch for cluster ${batch.cluster} from ${batch.from}`);
      return;
    }
    for (const frame of batch.frames) {
      let message: M;
      try {
        message = this.#o.codec.decode(frame);
      } catch (err) {
        this.#drop(err instanceof CodecError ? err.reason : 'malformed', String(err));
        continue;
      }
      this.#stats.messagesReceived++;
      try {
        this.#handler(message);
      } catch (err) {
        // The handler is the replica's; a throw there must not stop the other frames or the subscription.
        this.#drop('handler-error', String(err));
      }
    }
  }

  send(messages: readonly M[]): void {
    if (this.#closed) return;
    for (const m of messages) {
      const peer = this.#o.destination(m);
      let queue = this.#queues.get(peer);
      if (queue === undefined) {
        queue = [];
        this.#queues.set(peer, queue);
      }
      if (queue.length >= outboundQueueMax) {
        this.#stats.outboundDropped++;
        continue;
      }
      try {
        queue.push(this.#o.codec.encode(m));
      } catch {
        // A message too large for a frame cannot be sent; Raft treats it as lost and retries in smaller pieces.
        this.#stats.outboundDropped++;
      }
    }
    if (!this.#flushScheduled) {
      // Everything sent in this turn of the event loop goes out together: one NATS message per peer.
      this.#flushScheduled = true;
      setImmediate(() => this.flush());
    }
  }

  /** Sends what is queued now, one batch (or a few, under the payload limit) per peer. */
  flush(): void {
    this.#flushScheduled = false;
    if (this.#closed) return;
    const nc = this.#o.connection;
    const limit = (nc.info?.max_payload ?? 1 << 20) - batchOverheadBytes;
    for (const [peer, queue] of this.#queues) {
      if (queue.length === 0) continue;
      this.#queues.set(peer, []);
      if (nc.isClosed() || nc.isDraining()) {
        this.#unreachable(peer);
        continue;
      }
      let frames: Uint8Array[] = [];
      let bytes = 0;
      const publish = (): void => {
        if (frames.length === 0) return;
        nc.publish(
          raftSubject(this.#o.cluster, peer),
          this.#batchCodec.encode({ cluster: this.#o.cluster, from: this.#o.self, frames }),
        );
        this.#stats.batchesSent++;
        this.#stats.messagesSent += frames.length;
        frames = [];
        bytes = 0;
      };
      for (const frame of queue) {
        if (frame.length > limit) {
          this.#stats.outboundDropped++;
          continue;
        }
        if (bytes + frame.length + 8 > limit || frames.length >= framesPerBatchMax) publish();
        frames.push(frame);
        bytes += frame.length + 8;
      }
      publish();
      this.#probe(peer);
    }
  }

  /**
   * Asks, at most once per interval, whether `peer` has a subscriber; reports it unreachable when the server
   * says no one is subscribed. A late answer is not reported: on a loaded machine a live peer answered after
   * the interval and was reported unreachable (the transport test flaked on it).
   */
  #probe(peer: PeerId): void {
    const now = Date.now();
    const interval = this.#o.probeIntervalMs ?? probeIntervalMsDefault;
    if (now - (this.#lastProbeMs.get(peer) ?? 0) < interval) return;
    this.#lastProbeMs.set(peer, now);
    void this.probe(peer).then((presence) => {
      if (presence === 'absent' && !this.#closed) this.#unreachable(peer);
    });
  }

  /**
   * Whether `peer` is subscribed now: an empty request on its subject (its subscription answers those).
   * 'absent' only when the server says no one is subscribed — the peer's process or its connection is gone,
   * since a replica subscribes before it starts Raft; 'unknown' when this connection is not up, or on a
   * timeout or any other error.
   */
  async probe(peer: PeerId): Promise<PeerPresence> {
    const nc = this.#o.connection;
    if (this.#closed || nc.isClosed() || nc.isDraining()) return 'unknown';
    try {
      await nc.request(raftSubject(this.#o.cluster, peer), new Uint8Array(0), {
        timeout: this.#o.presenceTimeoutMs ?? presenceTimeoutMsDefault,
      });
      return 'present';
    } catch (err) {
      return err instanceof NatsError && err.code === ErrorCode.NoResponders ? 'absent' : 'unknown';
    }
  }

  onMessage(handler: (message: M) => void): void {
    this.#handler = handler;
  }

  onUnreachable(handler: (peer: PeerId) => void): void {
    this.#unreachable = handler;
  }

  stats(): NatsTransportStats {
    return { ...this.#stats, dropped: { ...this.#stats.dropped } };
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#queues.clear();
    this.#subscription.unsubscribe();
  }
}
