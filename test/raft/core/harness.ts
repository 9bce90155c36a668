/**
 * A small synchronous cluster of RawNodes for the core's tests: a MemoryStorage per replica (the Ready
 * contract carried out by hand: persist, send, restore a snapshot, apply, advance), a message queue, and a
 * link filter for partitions and drops. The state machine is the list of applied commands; with
 * `snapshotEvery` a replica snapshots it and compacts its log. Deterministic for a given seed.
 */
import type { Message } from '../../../raft/core/messages.js';
import { RawNode, type RawNodeConfig } from '../../../raft/core/raw-node.js';
import type { Entry } from '../../../raft/core/types.js';
import { MemoryStorage } from '../../../raft/storage/memory.js';
import { updateOf } from '../../../raft/storage/storage.js';
import { createRng, type Rng } from '../../../src/lib/prng.js';

/** Every entry a storage holds, oldest first (`logOf(s)[i]` has index `s.firstIndex() + i`). */
export function logOf(store: MemoryStorage): readonly Entry[] {
  return store.entries(store.firstIndex(), store.lastIndex() + 1, Number.MAX_SAFE_INTEGER);
}

export interface HarnessOptions {
  /** Take a snapshot (and compact) once this many entries were applied since the last one. */
  readonly snapshotEvery?: number;
}

export interface Replica {
  node: RawNode;
  store: MemoryStorage;
  /** Applied normal entries' data, decoded as text; the state machine of these tests. */
  applied: string[];
}

const text = new TextDecoder();
const bytes = new TextEncoder();

export class Cluster {
  readonly ids: string[];
  readonly replicas = new Map<string, Replica>();
  readonly rng: Rng;
  queue: Message[] = [];
  /** Returns false to drop a message on the link from → to. */
  link: (from: string, to: string, message: Message) => boolean = () => true;
  /** Every (term, leader) observed, for election safety. */
  readonly leaders = new Map<number, string>();

  readonly options: HarnessOptions;

  constructor(size: number, seed: number, config: Partial<RawNodeConfig> = {}, options: HarnessOptions = {}) {
    this.rng = createRng(seed);
    this.options = options;
    this.ids = Array.from({ length: size }, (_, i) => `r${i + 1}`);
    for (const id of this.ids) this.start(id, new MemoryStorage(), config);
  }

  /**
   * Starts (or restarts from its store) a replica: its state machine comes back from the store's snapshot,
   * and the core hands out again the committed entries after it.
   */
  start(id: string, store: MemoryStorage, config: Partial<RawNodeConfig> = {}): void {
    const node = new RawNode({ id, voters: this.ids, storage: store, rng: this.rng.fork(), ...config });
    this.replicas.set(id, { node, store, applied: decodeApplied(store.snapshot().data) });
  }

  /** Adds a replica that joins the membership `conf` (it starts empty and catches up from the leader). */
  add(id: string, voters: readonly string[], learners: readonly string[] = []): void {
    const node = new RawNode({ id, voters, learners, storage: new MemoryStorage(), rng: this.rng.fork() });
    this.replicas.set(id, { node, store: node.log.storage as MemoryStorage, applied: [] });
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
        r.store.saveSync(updateOf(rd), rd.mustSync);
        this.queue.push(...rd.earlyMessages, ...rd.messages);
        if (rd.snapshot !== undefined) r.applied = decodeApplied(rd.snapshot.data);
        for (const e of rd.committedEntries)
          if (e.type === 'normal' && e.data.length > 0) r.applied.push(text.decode(e.data));
        r.node.advance();
        const every = this.options.snapshotEvery;
        const applied = r.node.log.applied;
        if (every !== undefined && applied - r.store.snapshot().meta.index >= every) {
          r.store.createSnapshotSync(applied, r.node.confState(), bytes.encode(JSON.stringify(r.applied)));
        }
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

function decodeApplied(data: Uint8Array): string[] {
  return data.length === 0 ? [] : (JSON.parse(text.decode(data)) as string[]);
}

/** Throws unless every replica's applied sequence is a prefix of the longest one (state machine safety). */
export function assertAppliedPrefixes(c: Cluster, context: string): void {
  const seqs = [...c.replicas.values()].map((r) => r.applied);
  const longest = seqs.reduce((a, b) => (b.length > a.length ? b : a), [] as string[]);
  for (const seq of seqs)
    if (seq.some((e, i) => e !== longest[i]))
      throw new Error(`${context}: applied [${seq.join(',')}] is not a prefix of [${longest.join(',')}]`);
}

export interface RandomFaultsOptions {
  /** Steps of faults, each followed by one tick. Default 300. */
  readonly steps?: number;
  /** Lose messages at a random rate on some steps. Default false. */
  readonly drops?: boolean;
  /** Something more to do on about one step in five (e.g. a call under test on a random replica). */
  readonly extra?: (c: Cluster, rng: Rng) => void;
}

/**
 * A random schedule of partitions, heals, proposals (and message loss, and `extra`) on `c`, one tick a step;
 * after every step no term may have two leaders (the harness throws) and applied sequences must stay prefixes
 * of one another. Then the faults heal and a final proposal must be applied everywhere (liveness).
 */
export function runRandomFaults(c: Cluster, context: string, o: RandomFaultsOptions = {}): void {
  const rng = c.rng.fork();
  let proposed = 0;
  for (let step = 0; step < (o.steps ?? 300); step++) {
    const roll = rng.int(0, 10);
    if (roll === 0) {
      const cut = c.ids.filter(() => rng.chance(0.4));
      c.partition(
        cut,
        c.ids.filter((id) => !cut.includes(id)),
      );
    } else if (roll === 1) c.heal();
    else if (roll === 2 && o.drops === true) {
      const drop = rng.next() * 0.3;
      c.link = (a, b) => a === b || !rng.chance(drop);
    } else if (roll <= 4) {
      const l = c.leader();
      if (l !== undefined) c.propose(l, `p${proposed++}`);
    } else if (roll <= 6) o.extra?.(c, rng);
    c.tick();
    assertAppliedPrefixes(c, context);
  }
  c.heal();
  c.tick(60);
  const l = c.electLeader();
  c.propose(l, 'final');
  c.tick(10);
  assertAppliedPrefixes(c, context);
  for (const [id, r] of c.replicas)
    if (r.applied.at(-1) !== 'final') throw new Error(`${context}: ${id} did not apply the final proposal`);
}
