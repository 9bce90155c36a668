/**
 * A deterministic simulated network for tests and the Raft simulation. Time is virtual: messages sent now are
 * delivered by `tick()` after a delay drawn from the seeded `Rng`, so one seed replays one run exactly.
 *
 * Faults, per directed link or for all: drop, duplication, delay (hence reordering), a clogged link (holds
 * everything for a while), a cut link (asymmetric partition) and partitions into groups (symmetric). Sending
 * over a cut link reports the peer unreachable, as the NATS transport does for "no responders".
 */
import type { Rng } from '../../src/lib/prng.js';
import type { PeerId } from '../core/types.js';
import type { Transport } from '../transport.js';

/** Messages in flight across the whole network before further sends are dropped. */
export const inFlightMax = 100_000;

export interface LinkFaults {
  /** Probability a message is lost. */
  readonly dropRate: number;
  /** Probability a message is delivered twice. */
  readonly duplicateRate: number;
  /** Delay in ticks, drawn uniformly from [delayTicksMin, delayTicksMax]. */
  readonly delayTicksMin: number;
  readonly delayTicksMax: number;
}

export const perfectLink: LinkFaults = Object.freeze({
  dropRate: 0,
  duplicateRate: 0,
  delayTicksMin: 0,
  delayTicksMax: 0,
});

interface InFlight<M> {
  readonly to: PeerId;
  readonly message: M;
  readonly deliverAt: number;
  readonly seq: number;
}

export interface SimNetworkStats {
  sent: number;
  delivered: number;
  dropped: number;
  duplicated: number;
}

export class SimNetwork<M> {
  readonly #rng: Rng;
  readonly #route: (m: M) => { readonly from: PeerId; readonly to: PeerId };
  #defaults: LinkFaults;
  readonly #links = new Map<string, LinkFaults>();
  readonly #cut = new Set<string>();
  readonly #clogUntil = new Map<string, number>();
  readonly #handlers = new Map<PeerId, (m: M) => void>();
  readonly #unreachable = new Map<PeerId, (peer: PeerId) => void>();
  #inFlight: InFlight<M>[] = [];
  #now = 0;
  #seq = 0;
  readonly stats: SimNetworkStats = { sent: 0, delivered: 0, dropped: 0, duplicated: 0 };

  constructor(
    rng: Rng,
    route: (m: M) => { readonly from: PeerId; readonly to: PeerId },
    defaults: LinkFaults = perfectLink,
  ) {
    this.#rng = rng;
    this.#route = route;
    this.#defaults = defaults;
  }

  get now(): number {
    return this.#now;
  }

  /** The transport of one replica. */
  endpoint(peer: PeerId): Transport<M> {
    return {
      send: (messages) => {
        for (const m of messages) this.#send(m);
      },
      onMessage: (handler) => {
        this.#handlers.set(peer, handler);
      },
      onUnreachable: (handler) => {
        this.#unreachable.set(peer, handler);
      },
      close: async () => {
        this.#handlers.delete(peer);
        this.#unreachable.delete(peer);
      },
    };
  }

  setDefaults(faults: LinkFaults): void {
    this.#defaults = faults;
  }
  setLink(from: PeerId, to: PeerId, faults: LinkFaults): void {
    this.#links.set(`${from}>${to}`, faults);
  }
  /** Cuts the link from → to only (an asymmetric partition). */
  cut(from: PeerId, to: PeerId): void {
    this.#cut.add(`${from}>${to}`);
  }
  /** Splits the peers into groups that cannot reach each other. */
  partition(groups: readonly (readonly PeerId[])[]): void {
    for (const a of groups)
      for (const b of groups) if (a !== b) for (const x of a) for (const y of b) this.cut(x, y);
  }
  /** Holds everything on from → to until `ticks` from now, then delivers it. */
  clog(from: PeerId, to: PeerId, ticks: number): void {
    this.#clogUntil.set(`${from}>${to}`, this.#now + ticks);
  }
  /** Removes every cut, clog and per-link fault. */
  heal(): void {
    this.#cut.clear();
    this.#clogUntil.clear();
    this.#links.clear();
  }

  #send(m: M): void {
    const { from, to } = this.#route(m);
    const link = `${from}>${to}`;
    this.stats.sent++;
    if (this.#cut.has(link) || !this.#handlers.has(to)) {
      this.stats.dropped++;
      this.#unreachable.get(from)?.(to);
      return;
    }
    const f = this.#links.get(link) ?? this.#defaults;
    if (this.#rng.chance(f.dropRate) || this.#inFlight.length >= inFlightMax) {
      this.stats.dropped++;
      return;
    }
    const copies = this.#rng.chance(f.duplicateRate) ? 2 : 1;
    if (copies === 2) this.stats.duplicated++;
    for (let i = 0; i < copies; i++) {
      const delay = this.#rng.int(f.delayTicksMin, f.delayTicksMax + 1);
      const deliverAt = Math.max(this.#now + delay, this.#clogUntil.get(link) ?? 0);
      this.#inFlight.push({ to, message: m, deliverAt, seq: this.#seq++ });
    }
  }

  /**
   * Advances virtual time by one tick and delivers everything due, in (due time, send order). Messages sent by
   * handlers during delivery with no delay are delivered in the same call. Returns how many were delivered.
   */
  tick(): number {
    this.#now++;
    return this.deliverDue();
  }

  /** Delivers what is due now without advancing time. */
  deliverDue(): number {
    let delivered = 0;
    for (let round = 0; round < inFlightMax; round++) {
      const due = this.#inFlight.filter((x) => x.deliverAt <= this.#now);
      if (due.length === 0) break;
      this.#inFlight = this.#inFlight.filter((x) => x.deliverAt > this.#now);
      due.sort((a, b) => a.deliverAt - b.deliverAt || a.seq - b.seq);
      for (const x of due) {
        const handler = this.#handlers.get(x.to);
        if (handler === undefined) {
          this.stats.dropped++;
          continue;
        }
        this.stats.delivered++;
        delivered++;
        handler(x.message);
      }
    }
    return delivered;
  }

  /** Messages still in flight. */
  get pending(): number {
    return this.#inFlight.length;
  }
}
