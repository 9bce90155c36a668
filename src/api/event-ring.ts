/**
 * The committed events a server keeps for watchers catching up: the last `capacity` events in log order,
 * each at its position (see protocol.ts `Cursor`). Everything after `floor` is held; a reader asking from
 * before it has missed events the ring cannot give (WatchGapError), and must re-read state instead.
 */
import type { SchedulerEvent } from '../../scheduler/types.js';
import { assert } from '../lib/assert.js';
import { WatchGapError } from './errors.js';
import { advance, type Cursor, compareCursor } from './protocol.js';

/** Events a server holds for catch-up by default. */
export const eventsRetainedDefault = 100_000;

export class EventRing {
  readonly #capacity: number;
  /** Held events and the position after each; `#start` is the first live slot (shifted lazily). */
  #events: SchedulerEvent[] = [];
  #after: Cursor[] = [];
  #start = 0;
  #floor: Cursor;
  #end: Cursor;

  /** `appliedIndex`: the last entry already applied when the ring starts (its events are not held). */
  constructor(appliedIndex: number, capacity = eventsRetainedDefault) {
    assert(Number.isInteger(capacity) && capacity >= 1, 'ring capacity must be positive', { capacity });
    this.#capacity = capacity;
    // Entry 0 does not exist, so a ring started on an empty log holds everything.
    this.#floor = appliedIndex === 0 ? { index: 0, count: 0 } : { index: appliedIndex + 1, count: 0 };
    this.#end = this.#floor;
  }

  /** The position after the last event held. */
  get end(): Cursor {
    return this.#end;
  }

  get floor(): Cursor {
    return this.#floor;
  }

  get size(): number {
    return this.#events.length - this.#start;
  }

  /** Appends committed events (in log order); returns the position before them. */
  push(events: readonly SchedulerEvent[]): Cursor {
    const prev = this.#end;
    for (const e of events) {
      assert(e.index >= this.#end.index, 'events arrive in log order', {
        index: e.index,
        end: this.#end.index,
      });
      this.#end = advance(this.#end, e);
      this.#events.push(e);
      this.#after.push(this.#end);
    }
    const excess = this.size - this.#capacity;
    if (excess > 0) {
      this.#start += excess;
      this.#floor = this.#after[this.#start - 1] as Cursor;
    }
    if (this.#start > this.#capacity) {
      // Compact once the dead prefix is as large as the live part, so pushes stay amortized O(1).
      this.#events = this.#events.slice(this.#start);
      this.#after = this.#after.slice(this.#start);
      this.#start = 0;
    }
    return prev;
  }

  /** Up to `limit` events after position `after`; throws WatchGapError when some were dropped (or never held). */
  read(after: Cursor, limit: number): { events: SchedulerEvent[]; next: Cursor; more: boolean } {
    if (compareCursor(after, this.#floor) < 0) {
      throw new WatchGapError(
        `events before log position ${after.index}/${after.count} are no longer held here (held from ${this.#floor.index}/${this.#floor.count}); re-read state with list() and watch from now`,
        { details: { floorIndex: this.#floor.index, floorCount: this.#floor.count } },
      );
    }
    // First held event whose position-after exceeds `after` (binary search over the live slots).
    let lo = this.#start;
    let hi = this.#events.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (compareCursor(this.#after[mid] as Cursor, after) <= 0) lo = mid + 1;
      else hi = mid;
    }
    const stop = Math.min(this.#events.length, lo + limit);
    const events = this.#events.slice(lo, stop);
    const next = stop > lo ? (this.#after[stop - 1] as Cursor) : after;
    return { events, next, more: stop < this.#events.length };
  }
}
