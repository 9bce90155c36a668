/**
 * A small synchronous cluster of RawNodes for the core's tests: an in-memory log store per replica (the
 * Ready contract carried out by hand: persist, send, apply, advance), a message queue, and a link filter for
 * partitions and drops. Deterministic for a given seed.
 */
import { EntryUnavailableError, LogCompactedError } from '../../../raft/core/errors.js';
import type { LogReader } from '../../../raft/core/log-reader.js';
import type { Message } from '../../../raft/core/messages.js';
import { RawNode, type RawNodeConfig } from '../../../raft/core/raw-node.js';
import type { ConfState, Entry, HardState, Snapshot } from '../../../raft/core/types.js';
import { emptyConfState, emptyHardState } from '../../../raft/core/types.js';
import { createRng, type Rng } from '../../../src/lib/prng.js';

/** The persisted side of one replica, synchronous. */
export class MemStore implements LogReader {
  hardState: HardState = emptyHardState;
  log: Entry[] = [];
  initialState(): { hardState: HardState; confState: ConfState } {
    return { hardState: this.hardState, confState: emptyConfState };
  }
  entries(lo: number, hi: number, bytesMax: number): readonly Entry[] {
    if (lo < 1) throw new LogCompactedError(`lo ${lo}`);
    if (hi > this.lastIndex() + 1) throw new EntryUnavailableError(`hi ${hi}`);
    const out: Entry[] = [];
    let bytes = 0;
    for (let i = lo; i < hi; i++) {
      const e = this.log[i - 1] as Entry;
      bytes += e.data.length;
      if (out.length > 0 && bytes > bytesMax) break;
      out.push(e);
    }
    return out;
  }
  term(index: number): number {
    if (index === 0) return 0;
    const e = this.log[index - 1];
    if (e === undefined) throw new EntryUnavailableError(`index ${index}`);
    return e.term;
  }
  firstIndex(): number {
    return 1;
  }
  lastIndex(): number {
    return this.log.length;
  }
  snapshot(): Snapshot {
    return { meta: { index: 0, term: 0, conf: emptyConfState }, data: new Uint8Array(0) };
  }
  append(entries: readonly Entry[]): void {
    if (entries.length === 0) return;
    this.log.length = (entries[0] as Entry).index - 1;
    this.log.push(...entries);
  }
}

export interface Replica {
  node: RawNode;
  store: MemStore;
  /** Applied normal entries' data, decoded as text; the state machine of these tests. */
  applied: string[];
}

const text = new TextDecoder();

export class Cluster {
  readonly ids: string[];
  readonly replicas = new Map<string, Replica>();
  readonly rng: Rng;
  queue: Message[] = [];
  /** Returns false to drop a message on the link from → to. */
  link: (from: string, to: string, message: Message) => boolean = () => true;
  /** Every (term, leader) observed, for election safety. */
  readonly leaders = new Map<number, string>();

  constructor(size: number, seed: number, config: Partial<RawNodeConfig> = {}) {
    this.rng = createRng(seed);
    this.ids = Array.from({ length: size }, (_, i) => `r${i + 1}`);
    for (const id of this.ids) this.start(id, new MemStore(), config);
  }

  /** Starts (or restarts from its store) a replica. */
  start(id: string, store: MemStore, config: Partial<RawNodeConfig> = {}): void {
    const node = new RawNode({ id, voters: this.ids, storage: store, rng: this.rng.fork(), ...config });
    const applied = this.replicas.get(id)?.applied ?? [];
    this.replicas.set(id, { node, store, applied: applied.slice(0, store.hardState.commit) });
  }

  get(id: string): Replica {
    const r = this.replicas.get(id);
    if (r === undefined) throw new Error(`no replica ${id}`);
    return r;
  }

  /** Carries out every Ready (persist, queue messages, apply, advance), then checks election safety. */
  process(): void {
    for (const [id, r] of this.replicas) {
      while (r.node.hasReady()) {
        const rd = r.node.ready();
        r.store.append(rd.entries);
        if (rd.hardState !== undefined) r.store.hardState = rd.hardState;
        this.queue.push(...rd.messages);
        for (const e of rd.committedEntries) if (e.data.length > 0) r.applied.push(text.decode(e.data));
        r.node.advance();
      }
      if (r.node.role === 'leader') {
        const known = this.leaders.get(r.node.term);
        if (known !== undefined && known !== id)
          throw new Error(`two leaders in term ${r.node.term}: ${known} and ${id}`);
        this.leaders.set(r.node.term, id);
      }
    }
  }

  /** Delivers queued messages (through the link filter) until the cluster is quiet; bounded. */
  deliver(roundsMax = 100): void {
    for (let round = 0; round < roundsMax; round++) {
      this.process();
      if (this.queue.length === 0) return;
      const batch = this.queue;
      this.queue = [];
      for (const m of batch) if (this.link(m.from, m.to, m)) this.replicas.get(m.to)?.node.step(m);
    }
  }

  tick(times = 1): void {
    for (let i = 0; i < times; i++) {
      for (const r of this.replicas.values()) r.node.tick();
      this.deliver();
    }
  }

  leader(): string | undefined {
    const leaders = [...this.replicas].filter(([, r]) => r.node.role === 'leader');
    // With partitions an old leader may not know yet; the one with the highest term is the real one.
    leaders.sort((a, b) => b[1].node.term - a[1].node.term);
    return leaders[0]?.[0];
  }

  /** Ticks until a leader exists (bounded). */
  electLeader(ticksMax = 200): string {
    for (let i = 0; i < ticksMax; i++) {
      const l = this.leader();
      if (l !== undefined) return l;
      this.tick();
    }
    throw new Error('no leader elected');
  }

  propose(id: string, ...commands: string[]): void {
    this.get(id).node.propose(commands.map((c) => new TextEncoder().encode(c)));
    this.deliver();
  }

  /** Cuts every link between the groups. */
  partition(...groups: string[][]): void {
    const groupOf = new Map(groups.flatMap((g, i) => g.map((id) => [id, i] as const)));
    this.link = (a, b) => groupOf.get(a) === groupOf.get(b);
  }

  heal(): void {
    this.link = () => true;
  }
}
