/**
 * Egress: the leader appends committed sandbox and node events to the events stream, in commit order, each
 * under the stream id `<raft index>-<n>` (`n`: the event's place among its entry's events, from 0). The id
 * is the event's log position, so:
 * - a consumer resumes after a gap with `XREAD STREAMS trellis:events <last id seen>`;
 * - nothing is written twice: Redis refuses an id at or below the stream's last, so a publisher that
 *   re-sends (after a reconnection, or a new leader while the old one still writes) skips what is there;
 * - nothing is skipped: a publisher starts right after the stream's last id (read back from Redis, not
 *   remembered), and writes its events in order, so the ids that reach the stream are consecutive
 *   positions of the log whichever publisher wrote them.
 *
 * The events come from this replica's `EventRing` (src/api/event-ring.ts), filled from `watch()` on every
 * replica from the gateway's start, so a new leader holds what its predecessor may not have written. When
 * the stream ends before the oldest event held (the ring overflowed, or the gateway started on a log whose
 * stream is gone), the gap is counted and logged and the publisher goes on from what it has.
 */
import type { Redis } from 'ioredis';
import type { SchedulerEvent } from '../../scheduler/types.js';
import type { EventRing } from '../api/event-ring.js';
import { advance, type Cursor, compareCursor, positionOf } from '../api/protocol.js';
import type { TrellisMetrics } from '../lib/metrics.js';
import type { Logger } from '../log.js';
import type { GatewayConfig } from './config.js';
import { pairs, retryDelayMsMax } from './ingress.js';

/** Events one pipeline of XADDs carries. */
export const eventsPerWriteMax = 500;

/** The stream id of the event at `position` (its entry's index, and how many of its events precede it). */
export const eventStreamId = (position: Cursor): string => `${position.index}-${position.count}`;

/** The log position just after the event with stream id `id` (`0-0`: before everything). */
export function cursorAfter(id: string): Cursor {
  const m = /^(\d+)-(\d+)$/.exec(id);
  if (m === null) return { index: 0, count: 0 };
  const index = Number(m[1]);
  const n = Number(m[2]);
  return index === 0 ? { index: 0, count: 0 } : { index, count: n + 1 };
}

/** The fields of one event's stream entry: its index and kind for cheap filtering, the event as JSON. */
function fieldsOf(e: SchedulerEvent): string[] {
  return ['index', String(e.index), 'kind', e.kind, 'event', JSON.stringify(e)];
}

export interface EgressOptions {
  readonly config: GatewayConfig;
  readonly redis: Redis;
  readonly ring: EventRing;
  readonly metrics: TrellisMetrics;
  readonly log: Logger;
}

/** One leadership term's publisher; `poke()` after pushing to the ring, `stop()` to end it. */
export class EventPublisher {
  readonly #o: EgressOptions;
  #stopped = false;
  #wake: (() => void) | undefined;
  readonly #loop: Promise<void>;
  /** Position after the last event known to be in the stream; undefined: read it back first. */
  #written: Cursor | undefined;

  constructor(o: EgressOptions) {
    this.#o = o;
    this.#loop = this.#run();
  }

  /** New events are in the ring. */
  poke(): void {
    const w = this.#wake;
    this.#wake = undefined;
    w?.();
  }

  async #run(): Promise<void> {
    let failures = 0;
    while (!this.#stopped) {
      try {
        const wrote = await this.#step();
        failures = 0;
        if (!wrote && !this.#stopped) await this.#idle();
      } catch (err) {
        if (this.#stopped) break;
        // Whatever happened (Redis down, restarted, another writer), start again from what Redis holds.
        this.#written = undefined;
        failures++;
        this.#o.log.warn({ err: String(err), failures }, 'redis gateway: publishing events failed; retrying');
        await new Promise((r) => setTimeout(r, Math.min(retryDelayMsMax, 50 * failures)));
      }
    }
  }

  #idle(): Promise<void> {
    return new Promise<void>((resolve) => {
      this.#wake = resolve;
      // A publisher that missed a poke (it was mid-write) still looks again soon.
      setTimeout(() => this.poke(), this.#o.config.readBlockMs).unref();
    });
  }

  /** Writes the next batch of held events; false when there was nothing to write. */
  async #step(): Promise<boolean> {
    const ring = this.#o.ring;
    const m = this.#o.metrics;
    let from = this.#written ?? (await this.#readBack());
    if (compareCursor(from, ring.floor) < 0) {
      if (from.index > 0) {
        m.gatewayEventsGaps.inc();
        this.#o.log.error(
          { streamEnd: from, heldFrom: ring.floor },
          'redis gateway: events between the stream end and the oldest held event are lost to the stream',
        );
      }
      from = ring.floor;
    }
    this.#written = from;
    m.gatewayEventsLag.set(Math.max(0, ring.end.index - from.index));
    const { events, next } = ring.read(from, eventsPerWriteMax);
    if (events.length === 0) return false;
    const pipeline = this.#o.redis.pipeline();
    let at = from;
    for (const e of events) {
      const position = positionOf(at, e);
      pipeline.xadd(
        this.#o.config.events,
        'MAXLEN',
        '~',
        this.#o.config.eventsMaxLen,
        eventStreamId(position),
        ...fieldsOf(e),
      );
      at = advance(at, e);
    }
    const results = (await pipeline.exec()) ?? [];
    let added = 0;
    for (const [err] of results) {
      if (err === null) added++;
      // Already there: another publisher (or an earlier send of this one) wrote it first.
      else if (!/equal or smaller/i.test(err.message)) throw err;
    }
    m.gatewayEventsWritten.inc({}, added);
    this.#written = next;
    return true;
  }

  /** The position after the stream's last event, from Redis (an absent stream: the log's start). */
  async #readBack(): Promise<Cursor> {
    try {
      const info = pairs(await this.#o.redis.xinfo('STREAM', this.#o.config.events));
      return cursorAfter(String(info.get('last-generated-id') ?? '0-0'));
    } catch (err) {
      if (err instanceof Error && /no such key/i.test(err.message)) return { index: 0, count: 0 };
      throw err;
    }
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    this.poke();
    await this.#loop;
  }
}
