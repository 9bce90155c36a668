/**
 * Committed state changes on NATS: `trellis.<cluster>.events` carries every event `Scheduler.watch()` yields,
 * in log order, batched per event-loop turn into one versioned msgpack message. Followers of the subject
 * (dashboards, the platform's own bookkeeping) decode with `subscribeEvents`, which validates every message and
 * counts and drops what does not decode. NATS core delivery is at most once: a follower that must not miss an
 * event reconciles from `Scheduler.list()` after a reconnect, using `index` to order what it has.
 */
import type { NatsConnection, Subscription } from 'nats';
import { z } from 'zod';
import { nodeStates } from '../../placement/index.js';
import { sandboxStates } from '../../scheduler/lifecycle.js';
import type { SchedulerEvent } from '../../scheduler/types.js';
import { createCodec } from '../lib/codec.js';
import { CodecError } from '../lib/errors.js';
import { zodDecoder } from '../lib/validate.js';

/** Events one NATS message carries at most. */
export const eventsPerMessageMax = 4_096;
const eventsFrameBytesMax = 1 << 20;

export function eventsSubject(cluster: string): string {
  return `trellis.${cluster}.events`;
}

const text = z.string().min(1).max(256);
export const eventSchema = z.discriminatedUnion('kind', [
  z.strictObject({
    kind: z.literal('sandbox'),
    index: z.int().min(0),
    atMs: z.int().min(0),
    sandboxId: text,
    tenant: text,
    from: z.enum([...sandboxStates, 'none']),
    to: z.enum(sandboxStates),
    nodeId: text.optional(),
    reason: z.string().max(4_096).optional(),
  }),
  z.strictObject({
    kind: z.literal('node'),
    index: z.int().min(0),
    atMs: z.int().min(0),
    nodeId: text,
    change: z.enum(['registered', 'updated', 'state', 'removed']),
    state: z.enum(nodeStates as [string, ...string[]]).optional(),
  }),
  z.strictObject({
    kind: z.literal('orphan'),
    index: z.int().min(0),
    atMs: z.int().min(0),
    nodeId: text,
    sandboxId: text,
    reason: z.string().max(4_096),
  }),
]);

export const eventsCodec = createCodec<readonly SchedulerEvent[]>({
  kind: 'trellis.events',
  version: 1,
  frameBytesMax: eventsFrameBytesMax,
  decoders: {
    1: zodDecoder(z.array(eventSchema).max(eventsPerMessageMax)) as (b: unknown) => readonly SchedulerEvent[],
  },
});

/** Publishes a scheduler's committed events until `stop()`. */
export class EventPublisher {
  readonly #nc: NatsConnection;
  readonly #subject: string;
  readonly #source: AsyncIterableIterator<SchedulerEvent>;
  #pending: SchedulerEvent[] = [];
  #flushScheduled = false;
  #published = 0;
  readonly done: Promise<void>;

  constructor(
    source: { watch(): AsyncIterableIterator<SchedulerEvent> },
    nc: NatsConnection,
    cluster: string,
  ) {
    this.#nc = nc;
    this.#subject = eventsSubject(cluster);
    this.#source = source.watch();
    this.done = this.#pump();
  }

  get published(): number {
    return this.#published;
  }

  async #pump(): Promise<void> {
    for await (const event of this.#source) {
      this.#pending.push(event);
      if (this.#pending.length >= eventsPerMessageMax) this.#flush();
      else if (!this.#flushScheduled) {
        this.#flushScheduled = true;
        setImmediate(() => this.#flush());
      }
    }
    this.#flush();
  }

  #flush(): void {
    this.#flushScheduled = false;
    if (this.#pending.length === 0 || this.#nc.isClosed()) return;
    const batch = this.#pending;
    this.#pending = [];
    this.#nc.publish(this.#subject, eventsCodec.encode(batch));
    this.#published += batch.length;
  }

  /** Stops following the scheduler; events already taken are published. */
  async stop(): Promise<void> {
    await this.#source.return?.();
    await this.done;
  }
}

/** Follows a cluster's events; messages that do not decode are counted in `dropped` and skipped. */
export function subscribeEvents(
  nc: NatsConnection,
  cluster: string,
  onEvent: (event: SchedulerEvent) => void,
): { readonly subscription: Subscription; readonly dropped: () => number } {
  let dropped = 0;
  const subscription = nc.subscribe(eventsSubject(cluster), {
    callback: (err, msg) => {
      if (err !== null) return;
      let events: readonly SchedulerEvent[];
      try {
        events = eventsCodec.decode(msg.data);
      } catch (e) {
        if (!(e instanceof CodecError)) throw e;
        dropped++;
        return;
      }
      for (const event of events) onEvent(event);
    },
  });
  return { subscription, dropped: () => dropped };
}
