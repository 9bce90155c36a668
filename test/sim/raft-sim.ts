/**
 * The whole-cluster deterministic simulation of Raft as it ships (after FoundationDB's and TigerBeetle's
 * simulators): 3 or 5 production `RaftNode`s (raft/node.ts, the one driver loop), each with a MemoryStorage
 * that can lose what was not fsynced, on the SimNetwork, all on one `VirtualTimers` and driven by one seed.
 * Virtual time moves one millisecond per Raft tick; between moves the event loop settles, which runs every
 * driver's Ready loop (its memory writes resolve at once) to quiescence. Nothing reads a real clock, and no
 * Ready is carried out here: the simulation only watches what the drivers write, send and apply.
 *
 * Faults of the safety phase: message drop, duplication, delay (hence reordering), symmetric and asymmetric
 * partitions, a clogged link, crashes at any point of a Ready (inside its write, before the fsync) that keep
 * any prefix of the unsynced writes with the last record torn, restarts, snapshots and compaction with
 * small chunks, membership changes (remove a voter, add it back as a learner, promote it) and leadership
 * transfers. Then the liveness phase heals the network, restarts every replica and requires a commit, and
 * all members to converge, within a tick budget.
 *
 * Checked as it happens: election safety (one leader per term), log matching (an (index, term) names one
 * entry and one predecessor term, checked on every entry any replica persists, which by induction gives
 * identical prefixes), leader completeness (a new leader holds every entry committed anywhere), state machine
 * safety (every replica commits and applies the same entry at an index), that a snapshot installed from a
 * leader matches what was committed at its index, that no replica stops itself, and that a proposal rejected
 * as dropped never takes effect. At the end: no acknowledged write is lost and every member's state is equal.
 * Clients run puts and ReadIndex reads against a KV state machine; their history goes to the linearizability
 * checker. `brokenReads` serves reads from any replica's local state without ReadIndex: the checker must
 * catch it.
 */
import { createHash } from 'node:crypto';
import { decodeConfChange } from '../../raft/core/conf.js';
import type { Message } from '../../raft/core/messages.js';
import type { Entry } from '../../raft/core/types.js';
import { NotLeaderError, ProposalDroppedError } from '../../raft/errors.js';
import { RaftNode } from '../../raft/node.js';
import type { StateMachine } from '../../raft/state-machine.js';
import { StorageClosedError } from '../../raft/storage/file.js';
import { MemoryStorage } from '../../raft/storage/memory.js';
import type { StorageUpdate } from '../../raft/storage/storage.js';
import { perfectLink, SimNetwork } from '../../raft/transport/memory.js';
import type { Transport } from '../../raft/transport.js';
import { createRng, type Rng } from '../../src/lib/prng.js';
import { settleTurn, VirtualTimers } from '../../src/lib/timers.js';
import { checkHistory, type KvInput, type KvOutput, type Operation } from './linearizability.js';

export interface RaftSimOptions {
  readonly seed: number;
  readonly replicas: 3 | 5;
  /** Ticks of the safety phase, under faults. Default `faultTicksDefault`. */
  readonly faultTicks?: number;
  /** Ticks the healed cluster has to commit and converge. */
  readonly livenessTicks?: number;
  /** Serve reads from local state without ReadIndex (a deliberate bug the checker must flag). */
  readonly brokenReads?: boolean;
  /** Keep a trace of events (printed when a run fails). */
  readonly trace?: boolean;
}

export interface RaftSimResult {
  readonly seed: number;
  readonly ok: boolean;
  /** What failed, with `SEED=<seed>` and the command that replays it. */
  readonly failure?: string;
  readonly stats: {
    readonly ticks: number;
    readonly elections: number;
    readonly crashes: number;
    readonly snapshotsSent: number;
    readonly confChanges: number;
    readonly transfers: number;
    readonly acked: number;
    readonly operations: number;
    readonly messages: number;
    /** Probes that found a leader's endpoint gone (true answers), and probes answered at random (lies). */
    readonly probesAbsent: number;
    readonly probeLies: number;
  };
  /** SHA-256 of the run's history, committed log and statistics: equal digests, equal runs. */
  readonly digest: string;
  readonly trace: readonly string[];
}

class SimFailure extends Error {}

const enc = new TextEncoder();
const dec = new TextDecoder();
const keys = ['x', 'y', 'z'];
const clients = 3;
/** Virtual milliseconds per Raft tick. */
const tickMs = 1;
/** A request's deadline, in ticks: the driver's proposal and read timeout. */
const opTimeoutTicks = 60;
/**
 * Ticks of the safety phase by default. 300 when the simulation had its own synchronous Ready loop; the
 * production driver's promises cost about half as much again per tick, so a seed runs 240 to keep the
 * 1,000 seeds of the test command near their old time (`npm run sim:raft -- --fault-ticks N` runs longer).
 */
export const faultTicksDefault = 240;
/** Rounds of same-tick deliveries (a request, its answer, the next request, ...) one tick allows. */
const deliveryRoundsPerTickMax = 64;

/**
 * MemoryStorage with the simulation's eyes and its crash point: every save is shown to the simulation once
 * written, and a save armed to crash writes (unsynced) and then crashes the replica before its fsync, as a
 * process killed inside `fdatasync` would; the driver sees the write fail and stops.
 */
class SimStorage extends MemoryStorage {
  /** Crash inside the next save, after its writes, before their fsync. */
  crashArmed = false;
  constructor(
    initial: MemoryStorage | undefined,
    readonly events: {
      saved(storage: SimStorage, update: StorageUpdate): void;
      crash(): void;
    },
  ) {
    super(
      initial === undefined
        ? undefined
        : {
            hardState: initial.initialState().hardState,
            snapshot: initial.snapshot(),
            entries: initial.entries(initial.firstIndex(), initial.lastIndex() + 1, Number.POSITIVE_INFINITY),
          },
    );
  }

  override async save(update: StorageUpdate, mustSync: boolean): Promise<void> {
    this.saveSync(update, false);
    this.events.saved(this, update);
    if (this.crashArmed) {
      this.crashArmed = false;
      this.events.crash();
      throw new StorageClosedError('the replica crashed before this write was synced');
    }
    if (mustSync || update.snapshot !== undefined) this.sync();
  }
}

/** The KV state machine the clients' puts and reads go to; its snapshot is its entries as JSON. */
class SimKv implements StateMachine<void> {
  kv = new Map<string, string>();
  constructor(readonly onApply: (e: Entry) => void) {}
  apply(e: Entry): void {
    this.onApply(e);
    const [, , key, value] = dec.decode(e.data).split('|') as [string, string, string, string];
    this.kv.set(key, value);
  }
  snapshot(): Uint8Array {
    return enc.encode(JSON.stringify([...this.kv]));
  }
  restore(data: Uint8Array): void {
    this.kv = new Map(JSON.parse(dec.decode(data)) as [string, string][]);
  }
}

/** One incarnation of a replica: a crash ends it, a restart makes the next one from the crash's image. */
interface Replica {
  readonly id: string;
  node: RaftNode<void>;
  storage: SimStorage;
  machine: SimKv;
  /** False once this incarnation crashed: what its driver still does is not seen by anyone. */
  gate: { alive: boolean };
  /** Commit index this incarnation was last seen to persist. */
  checkedCommit: number;
}

interface OpRecord {
  /** Its number, which its put's entry carries. */
  readonly id: number;
  client: number;
  input: KvInput;
  output: KvOutput;
  callAt: number;
  returnAt: number | undefined;
  /** Definitely did not happen (refused, an unanswered read, or a put whose entry never committed). */
  void: boolean;
  /** The replica serving it, while it waits. */
  replica: string | undefined;
  /** The client stopped waiting: a late answer is ignored. */
  done: boolean;
  /** The driver rejected it as dropped: it must never commit. */
  dropped: boolean;
}

export async function runRaftSim(options: RaftSimOptions): Promise<RaftSimResult> {
  const sim = new RaftSim(options);
  let failure: string | undefined;
  try {
    await sim.run();
  } catch (err) {
    const what =
      sim.failure ??
      (err instanceof SimFailure
        ? err.message
        : err instanceof Error
          ? (err.stack ?? err.message)
          : String(err));
    const flags =
      (options.brokenReads ? ' --broken-reads' : '') +
      (options.faultTicks === undefined ? '' : ` --fault-ticks ${options.faultTicks}`);
    failure =
      `SEED=${options.seed} replicas=${options.replicas}${options.brokenReads ? ' brokenReads' : ''}: ${what}\n` +
      `replay: npm run sim:raft -- --seed ${options.seed} --replicas ${options.replicas}${flags}` +
      ` (or SEED=${options.seed} npx vitest run test/sim/raft-sim.test.ts)`;
  }
  await sim.stop();
  const stats = { ...sim.stats, ticks: sim.now, messages: sim.net.stats.sent };
  return {
    seed: options.seed,
    ok: failure === undefined,
    ...(failure === undefined ? {} : { failure }),
    stats,
    digest: sim.digest(stats),
    trace: sim.traceLines,
  };
}

class RaftSim {
  readonly o: RaftSimOptions;
  readonly rng: Rng;
  readonly timers = new VirtualTimers();
  readonly net: SimNetwork<Message>;
  readonly ids: string[];
  readonly replicas = new Map<string, Replica>();
  readonly leaders = new Map<number, string>();
  /** index → the entry committed there (as any replica persisted or applied it): the committed log. */
  readonly committed = new Map<number, Entry>();
  /**
   * index → a term the entry was committed in or before: the lowest term of a replica when it learned the
   * commit (from a leader of at most its own term). Leader completeness holds for leaders of later terms
   * only: a leader of an earlier term may still be elected late, with delayed votes.
   */
  readonly committedBy = new Map<number, number>();
  /** "index:term" → the entry's data and its predecessor's term, for log matching. */
  readonly seen = new Map<string, { data: Uint8Array; prevTerm: number | undefined }>();
  readonly ops: OpRecord[] = [];
  readonly clientBusy: (number | undefined)[] = Array.from({ length: clients }, () => undefined);
  readonly acked = new Set<string>();
  readonly traceLines: string[] = [];
  readonly stats = {
    elections: 0,
    crashes: 0,
    snapshotsSent: 0,
    confChanges: 0,
    transfers: 0,
    acked: 0,
    operations: 0,
    probesAbsent: 0,
    probeLies: 0,
  };
  /** Drawn per seed, so the seeds together cover small and large messages, windows, snapshots and fault rates. */
  readonly shape: {
    msgBytesMax: number;
    inflightMsgsMax: number;
    snapshotEvery: number;
    chunkBytes: number;
    /** Per-mille chance, each tick, of a crash. */
    crashRate: number;
    /**
     * Percent of `Transport.probe` answers drawn at random ('absent' for a live leader included): the early
     * election after an absent leader must never be what safety rests on.
     */
    probeLiePercent: number;
  };
  #opSeq = 0;
  /**
   * The first check that failed. Most checks run inside a driver's callbacks (a save, an apply, a role
   * change), where a throw would only stop that driver: the failure is kept here and raised by the tick.
   */
  #failure: string | undefined;
  /** A replica's driver that stopped by itself (a failed invariant or write it did not expect). */
  #selfStopped: string | undefined;
  /** Drivers of crashed incarnations, closing. */
  readonly #closing: Promise<void>[] = [];

  constructor(o: RaftSimOptions) {
    this.o = o;
    this.rng = createRng(o.seed);
    this.shape = {
      msgBytesMax: this.rng.pick([1, 64, 256, 4096]),
      inflightMsgsMax: this.rng.pick([1, 2, 8, 256]),
      snapshotEvery: this.rng.pick([5, 12, 40, 1_000_000]),
      chunkBytes: this.rng.pick([16, 48, 4096]),
      crashRate: this.rng.pick([4, 8, 20]),
      probeLiePercent: this.rng.pick([0, 0, 10, 50]),
    };
    this.ids = Array.from({ length: o.replicas }, (_, i) => `n${i + 1}`);
    this.net = new SimNetwork<Message>(this.rng.fork(), (m) => m, perfectLink);
    for (const id of this.ids) this.#start(id, undefined);
  }

  get now(): number {
    return this.timers.now() / tickMs;
  }

  /** The first check that failed, if any. */
  get failure(): string | undefined {
    return this.#failure;
  }

  #fail(message: string): never {
    this.#failure ??= message;
    throw new SimFailure(message);
  }

  #trace(line: string): void {
    if (this.o.trace) this.traceLines.push(`t${this.now} ${line}`);
  }

  /** Starts an incarnation of `id` on the storage a crash left (none: a new replica). */
  #start(id: string, image: MemoryStorage | undefined): void {
    const gate = { alive: true };
    let r: Replica | undefined;
    const alive = (): Replica | undefined => (gate.alive ? r : undefined);
    const storage = new SimStorage(image, {
      saved: (s, update) => {
        const live = alive();
        if (live !== undefined) this.#saved(live, s, update);
      },
      crash: () => {
        const live = alive();
        if (live !== undefined) this.#crash(live);
      },
    });
    const machine = new SimKv((e) => {
      const live = alive();
      if (live !== undefined) this.#applied(live, e);
    });
    const node = new RaftNode<void>({
      id,
      voters: this.ids,
      storage,
      transport: this.#transport(id, gate),
      stateMachine: machine,
      rng: this.rng.fork(),
      timers: this.timers,
      tickMs,
      proposalTimeoutMs: opTimeoutTicks * tickMs,
      snapshotEntries: this.shape.snapshotEvery,
      core: {
        snapshotChunkBytes: this.shape.chunkBytes,
        msgBytesMax: this.shape.msgBytesMax,
        inflightMsgsMax: this.shape.inflightMsgsMax,
      },
    });
    r = { id, node, storage, machine, gate, checkedCommit: storage.snapshot().meta.index };
    this.replicas.set(id, r);
    node.onRoleChange((change) => {
      const live = alive();
      if (live === undefined) return;
      this.#trace(`${id} ${change.role} term ${change.term}`);
      if (change.role === 'leader') this.#checkNewLeader(live, change.term);
    });
  }

  /**
   * The replica's endpoint behind its incarnation's gate: once crashed it neither sends nor receives, even
   * from a Ready in progress. A driver that closes its transport while alive stopped by itself.
   */
  #transport(id: string, gate: { alive: boolean }): Transport<Message> {
    const inner = this.net.endpoint(id);
    return {
      send: (messages) => {
        if (!gate.alive) return;
        for (const m of messages) if (m.type === 'snapshot' && m.offset === 0) this.stats.snapshotsSent++;
        if (this.o.trace)
          for (const m of messages)
            if (m.type.endsWith('ote') || m.type.endsWith('oteResp') || m.type === 'timeoutNow')
              this.#trace(
                `${m.from}>${m.to} ${m.type} t${m.term}${'reject' in m ? (m.reject ? ' reject' : ' grant') : ''}`,
              );
        inner.send(messages);
      },
      onMessage: (handler) =>
        inner.onMessage((m) => {
          if (gate.alive) handler(m);
        }),
      onUnreachable: (handler) => inner.onUnreachable(handler),
      probe: async (peer) => {
        await Promise.resolve(); // answered later, as over a network
        if (!gate.alive) return 'unknown';
        if (this.rng.int(0, 100) < this.shape.probeLiePercent) {
          this.stats.probeLies++;
          return this.rng.pick(['present', 'absent', 'unknown'] as const);
        }
        // As NATS answers: a crashed incarnation has no subscriber; a live one, even partitioned, has.
        if (this.replicas.get(peer)?.gate.alive === true) return 'present';
        this.stats.probesAbsent++;
        return 'absent';
      },
      close: async () => {
        // The next incarnation registers its own handler on the shared network: leave the endpoint alone.
        if (gate.alive) this.#selfStopped ??= id;
      },
    };
  }

  /** What a replica persisted: log matching on its entries, a snapshot's agreement, the commits it learned. */
  #saved(r: Replica, s: SimStorage, update: StorageUpdate): void {
    if (update.snapshot !== undefined) {
      const snap = update.snapshot;
      const known = this.committed.get(snap.meta.index);
      if (known !== undefined && known.term !== snap.meta.term)
        this.#fail(
          `${r.id} installed a snapshot at ${snap.meta.index} of term ${snap.meta.term}; committed there: term ${known.term}`,
        );
      this.#trace(`${r.id} installed snapshot @${snap.meta.index}`);
      r.checkedCommit = Math.max(r.checkedCommit, snap.meta.index);
    }
    for (const e of update.entries) this.#checkPersisted(r, s, e);
    const hs = update.hardState;
    if (hs === undefined || hs.commit <= r.checkedCommit) return;
    const from = Math.max(r.checkedCommit + 1, s.firstIndex());
    for (const e of s.entries(from, hs.commit + 1, Number.POSITIVE_INFINITY)) this.#committed(r, e, hs.term);
    r.checkedCommit = hs.commit;
  }

  #checkPersisted(r: Replica, s: SimStorage, e: Entry): void {
    const key = `${e.index}:${e.term}`;
    const prevTerm = e.index - 1 >= s.firstIndex() - 1 ? s.term(e.index - 1) : undefined;
    const known = this.seen.get(key);
    if (known === undefined) {
      this.seen.set(key, { data: e.data, prevTerm });
      return;
    }
    if (!sameBytes(known.data, e.data))
      this.#fail(`log matching: two different entries at index ${e.index} term ${e.term} (${r.id})`);
    if (known.prevTerm !== undefined && prevTerm !== undefined && known.prevTerm !== prevTerm)
      this.#fail(
        `log matching: entry ${key} follows term ${prevTerm} on ${r.id}, term ${known.prevTerm} elsewhere`,
      );
  }

  /** State machine safety: one entry per committed index, whoever committed or applied it. */
  #committed(r: Replica, e: Entry, term: number): void {
    this.committedBy.set(e.index, Math.min(this.committedBy.get(e.index) ?? term, term));
    const known = this.committed.get(e.index);
    if (known !== undefined) {
      if (known.term !== e.term || !sameBytes(known.data, e.data))
        this.#fail(
          `state machine safety: ${r.id} committed term ${e.term} at ${e.index}, another replica term ${known.term}`,
        );
      return;
    }
    this.committed.set(e.index, e);
    if (e.type === 'conf') {
      this.stats.confChanges++;
      this.#trace(`${r.id} commits conf ${JSON.stringify(decodeConfChange(e.data))} @${e.index}`);
    }
  }

  #applied(r: Replica, e: Entry): void {
    this.#committed(r, e, r.storage.initialState().hardState.term);
  }

  #checkNewLeader(r: Replica, term: number): void {
    this.stats.elections++;
    const known = this.leaders.get(term);
    if (known !== undefined && known !== r.id)
      this.#fail(`election safety: ${known} and ${r.id} both lead term ${term}`);
    this.leaders.set(term, r.id);
    // Leader completeness: every entry committed anywhere is in the new leader's log (or its snapshot).
    const s = r.storage;
    for (const [index, e] of this.committed) {
      if (index < s.firstIndex() - 1 || (this.committedBy.get(index) ?? 0) >= term) continue;
      const t = index <= s.lastIndex() ? s.term(index) : undefined;
      if (t !== e.term)
        this.#fail(
          `leader completeness: ${r.id} leads term ${term} without committed entry ${index} (term ${e.term}, has ${t})`,
        );
    }
  }

  /** Kills an incarnation: it keeps what was synced plus a random prefix of the rest, the last write torn. */
  #crash(r: Replica): void {
    const unsynced = r.storage.unsyncedWrites;
    const keep = this.rng.int(0, unsynced + 1);
    const torn = this.rng.chance(0.5) ? this.rng.int(0, 4) : undefined;
    const image = r.storage.crashImage(keep, torn);
    this.#trace(
      `${r.id} crash (kept ${keep}/${unsynced} unsynced writes${torn === undefined ? '' : `, torn to ${torn}`})`,
    );
    r.gate.alive = false;
    this.stats.crashes++;
    // Whatever it was serving is now of unknown outcome.
    for (const rec of this.ops) if (rec.replica === r.id && !rec.done) this.#giveUp(rec);
    this.#closing.push(r.node.close());
    // The replica stays down, holding its crash image, until a restart.
    r.storage = new SimStorage(image, { saved: () => {}, crash: () => {} });
  }

  #restart(r: Replica): void {
    this.#trace(`${r.id} restart (log ${r.storage.firstIndex()}..${r.storage.lastIndex()})`);
    this.#start(r.id, r.storage);
  }

  #up(): Replica[] {
    return [...this.replicas.values()].filter((r) => r.gate.alive);
  }

  /** The client stops waiting: a put's outcome is unknown; a read that never answered is dropped. */
  #giveUp(rec: OpRecord): void {
    if (rec.input.op === 'get') rec.void = true;
    this.#finish(rec);
  }

  #finish(rec: OpRecord): void {
    rec.done = true;
    rec.replica = undefined;
    if (this.clientBusy[rec.client] === rec.id) this.clientBusy[rec.client] = undefined;
  }

  #leader(): Replica | undefined {
    let best: { r: Replica; term: number } | undefined;
    for (const r of this.#up()) {
      const st = r.node.status();
      if (st.role === 'leader' && (best === undefined || st.term > best.term)) best = { r, term: st.term };
    }
    return best?.r;
  }

  /** Where a client sends a request: any replica that believes it leads (a real client may reach a stale one). */
  #clientTarget(): Replica | undefined {
    const leaders = this.#up().filter((r) => r.node.status().role === 'leader');
    return leaders.length === 0 ? undefined : this.rng.pick(leaders);
  }

  #clientStep(): void {
    for (let c = 0; c < clients; c++) {
      if (this.clientBusy[c] !== undefined) continue; // The driver's timeout ends a wait.
      if (!this.rng.chance(0.3)) continue;
      const key = this.rng.pick(keys);
      const op = this.#opSeq++;
      const put = this.rng.chance(0.5);
      const rec: OpRecord = {
        id: op,
        client: c,
        input: put ? { op: 'put', key, value: `${c}.${op}` } : { op: 'get', key },
        output: undefined,
        callAt: this.now,
        returnAt: undefined,
        void: false,
        replica: undefined,
        done: false,
        dropped: false,
      };
      this.ops.push(rec);
      if (put) this.#put(rec, op, key);
      else this.#get(rec, op, key);
    }
  }

  /** The replica a client's operation goes to, now marked busy with it; undefined (void, done) when none. */
  #send(rec: OpRecord, op: number): Replica | undefined {
    const leader = this.#clientTarget();
    if (leader === undefined) {
      rec.void = true;
      rec.done = true;
      return undefined;
    }
    rec.replica = leader.id;
    this.clientBusy[rec.client] = op;
    return leader;
  }

  #put(rec: OpRecord, op: number, key: string): void {
    const leader = this.#send(rec, op);
    if (leader === undefined) return;
    const value = (rec.input as { value: string }).value;
    leader.node.propose(enc.encode(`${rec.client}|${op}|${key}|${value}`)).then(
      () => {
        if (rec.done) return;
        rec.output = { ok: true };
        rec.returnAt = this.now;
        this.acked.add(`${rec.client}|${op}`);
        this.stats.acked++;
        this.#finish(rec);
      },
      (err: unknown) => {
        if (rec.done) return;
        // Refused before anything was appended: it never happens. Otherwise the outcome is unknown until
        // the end, when the committed log decides; a drop promises it never commits.
        if (err instanceof NotLeaderError) rec.void = true;
        if (err instanceof ProposalDroppedError) rec.dropped = true;
        this.#trace(`put ${rec.client}|${rec.id} at ${rec.replica}: ${(err as Error).message}`);
        this.#finish(rec);
      },
    );
  }

  #get(rec: OpRecord, op: number, key: string): void {
    if (this.o.brokenReads) {
      // The bug: any replica answers from what it has applied, without confirming anything.
      const up = this.#up();
      if (up.length === 0) {
        rec.void = true;
        rec.done = true;
        return;
      }
      const r = this.rng.pick(up);
      rec.output = { value: r.machine.kv.get(key) ?? null };
      rec.returnAt = this.now;
      rec.done = true;
      return;
    }
    const leader = this.#send(rec, op);
    if (leader === undefined) return;
    const machine = leader.machine;
    leader.node.read().then(
      () => {
        if (rec.done) return;
        rec.output = { value: machine.kv.get(key) ?? null };
        rec.returnAt = this.now;
        this.#finish(rec);
      },
      () => {
        if (rec.done) return;
        rec.void = true;
        this.#finish(rec);
      },
    );
  }

  #faultStep(): void {
    const up = this.#up();
    const down = [...this.replicas.values()].filter((r) => !r.gate.alive);
    const roll = this.rng.int(0, 1000);
    const c = this.shape.crashRate;
    if (roll < c && up.length > 0) {
      const r = this.rng.pick(up);
      if (this.rng.chance(0.5)) r.storage.crashArmed = true;
      else this.#crash(r);
    } else if (roll < c + 22 && down.length > 0) {
      this.#restart(this.rng.pick(down));
    } else if (roll < c + 32) {
      const shuffled = this.rng.shuffle([...this.ids]);
      const cut = this.rng.int(1, shuffled.length);
      this.net.heal();
      this.net.partition([shuffled.slice(0, cut), shuffled.slice(cut)]);
      this.#trace(`partition ${shuffled.slice(0, cut).join(',')} | ${shuffled.slice(cut).join(',')}`);
    } else if (roll < c + 38) {
      const a = this.rng.pick(this.ids);
      const b = this.rng.pick(this.ids.filter((x) => x !== a));
      this.net.cut(a, b);
      this.#trace(`cut ${a}>${b}`);
    } else if (roll < c + 42) {
      const a = this.rng.pick(this.ids);
      const b = this.rng.pick(this.ids.filter((x) => x !== a));
      this.net.clog(a, b, this.rng.int(5, 40));
      this.#trace(`clog ${a}>${b}`);
    } else if (roll < c + 67) {
      this.net.heal();
      this.#trace('heal');
    } else if (roll < c + 77) {
      const drop = this.rng.pick([0, 0.02, 0.1, 0.3]);
      const dup = this.rng.pick([0, 0.02, 0.1]);
      const delay = this.rng.pick([0, 1, 3, 8]);
      this.net.setDefaults({ dropRate: drop, duplicateRate: dup, delayTicksMin: 0, delayTicksMax: delay });
      this.#trace(`links drop ${drop} dup ${dup} delay 0..${delay}`);
    } else if (roll < c + 82) {
      this.#membershipStep();
    } else if (roll < c + 86) {
      const leader = this.#leader();
      if (leader !== undefined) {
        const to = this.rng.pick(this.ids);
        this.#trace(`${leader.id} transfers to ${to}`);
        leader.node.transferLeadership(to).then(
          () => {
            this.stats.transfers++;
          },
          () => {},
        );
      }
    }
  }

  /** Removes a voter, adds a removed one back as a learner, or promotes a learner: one step at a time. */
  #membershipStep(): void {
    const leader = this.#leader();
    if (leader === undefined) return;
    const conf = leader.node.status().conf;
    const missing = this.ids.filter((id) => !conf.voters.includes(id) && !conf.learners.includes(id));
    const learner = conf.learners[0];
    const change =
      learner !== undefined
        ? ({ type: 'addVoter', peer: learner } as const)
        : missing[0] !== undefined
          ? ({ type: 'addLearner', peer: missing[0] } as const)
          : ({ type: 'remove', peer: this.rng.pick(conf.voters) } as const);
    this.#trace(`${leader.id} proposes ${change.type} ${change.peer}`);
    // Refused while another change is pending; a refusal or timeout changes nothing the checks rely on.
    leader.node.changeMembership(change).then(
      () => {},
      () => {},
    );
  }

  /**
   * One tick of virtual time: every live driver's ticker fires and the network delivers what is due; then
   * the event loop settles (the Ready loops run) and what the replicas sent with no delay is delivered within
   * the same tick, settling between rounds. (Each settle is one macrotask turn, a few microseconds, and the
   * bulk of the cost of a tick: ticking and delivering before the first one saves a turn per tick.)
   */
  async #tick(): Promise<void> {
    this.timers.runUntil(this.timers.now() + tickMs);
    this.net.tick();
    for (let round = 0; round < deliveryRoundsPerTickMax; round++) {
      await settleTurn();
      if (this.net.deliverDue() === 0) break;
    }
    if (this.#failure !== undefined) throw new SimFailure(this.#failure);
    if (this.#selfStopped !== undefined)
      this.#fail(`${this.#selfStopped}'s driver stopped by itself (a failed write or a broken invariant)`);
  }

  async run(): Promise<void> {
    const faultTicks = this.o.faultTicks ?? faultTicksDefault;
    for (let t = 0; t < faultTicks; t++) {
      this.#faultStep();
      this.#clientStep();
      await this.#tick();
    }
    await this.#liveness(this.o.livenessTicks ?? 600);
    this.#checkHistory();
  }

  /** Heals everything, restarts every replica, and requires progress and convergence within the budget. */
  async #liveness(budget: number): Promise<void> {
    this.net.heal();
    this.net.setDefaults(perfectLink);
    for (const r of this.replicas.values()) {
      r.storage.crashArmed = false;
      if (!r.gate.alive) this.#restart(r);
    }
    this.#trace('liveness phase');
    const deadline = this.now + budget;
    const marker: { state: 'none' | 'pending' | 'committed' } = { state: 'none' };
    while (this.now < deadline) {
      await this.#tick();
      const leader = this.#leader();
      if (leader === undefined) continue;
      const st = leader.node.status();
      // Bring every replica back into the membership, one change at a time.
      if (st.conf.voters.length + st.conf.learners.length < this.ids.length || st.conf.learners.length > 0) {
        this.#membershipStep();
        continue;
      }
      // A marker write must commit: proposed once the membership is whole, again if it failed. Then every
      // replica must have applied all the leader holds.
      if (marker.state === 'none') {
        marker.state = 'pending';
        leader.node.propose(enc.encode(`-1|-1|marker|${this.now}`)).then(
          () => {
            marker.state = 'committed';
          },
          () => {
            if (marker.state === 'pending') marker.state = 'none';
          },
        );
        continue;
      }
      if (marker.state !== 'committed') continue;
      const last = leader.storage.lastIndex();
      if (st.commit === last && [...this.replicas.values()].every((r) => r.node.status().applied === last)) {
        this.#checkConverged();
        return;
      }
    }
    const status = [...this.replicas.values()]
      .map((r) => {
        const s = r.node.status();
        return `${r.id}:${s.role}/t${s.term}/c${s.commit}/a${s.applied}/l${r.storage.lastIndex()}`;
      })
      .join(' ');
    this.#fail(`liveness: no commit and convergence within ${budget} ticks after healing (${status})`);
  }

  #checkConverged(): void {
    const states = [...this.replicas.values()].map((r) => JSON.stringify([...r.machine.kv].sort()));
    if (new Set(states).size !== 1)
      this.#fail(`convergence: replicas' states differ at the end: ${states.join(' / ')}`);
    // No acknowledged write lost: each is in the committed log. A dropped one must not be.
    const committedPuts = new Set<string>();
    for (const e of this.committed.values()) {
      if (e.type !== 'normal' || e.data.length === 0) continue;
      const [client, op] = dec.decode(e.data).split('|');
      committedPuts.add(`${client}|${op}`);
    }
    for (const a of this.acked)
      if (!committedPuts.has(a)) this.#fail(`acknowledged write ${a} is not in the committed log`);
    // The whole log is committed everywhere now, so a put that is not in it never will be: it did not happen.
    for (const rec of this.ops) {
      if (rec.input.op !== 'put' || rec.output !== undefined || rec.void) continue;
      const inLog = committedPuts.has(`${rec.client}|${rec.id}`);
      if (rec.dropped && inLog)
        this.#fail(`put ${rec.client}|${rec.id} was rejected as dropped, yet it committed`);
      if (!inLog) rec.void = true;
    }
  }

  #checkHistory(): void {
    const history: Operation[] = this.ops
      .filter((o) => !o.void && !(o.input.op === 'get' && o.output === undefined))
      .map((o) => ({
        client: o.client,
        input: o.input,
        output: o.output,
        callAt: o.callAt,
        returnAt: o.returnAt,
      }));
    this.stats.operations = history.length;
    const verdict = checkHistory(history);
    if (!verdict.ok) this.#fail(`linearizability: history of key ${verdict.key} is ${verdict.reason}`);
  }

  /** Closes every driver (a failed run may leave some mid-flight), so nothing outlives the run. */
  async stop(): Promise<void> {
    for (const r of this.replicas.values()) {
      r.gate.alive = false;
      this.#closing.push(r.node.close());
    }
    await Promise.all(this.#closing);
  }

  digest(stats: object): string {
    const h = createHash('sha256');
    h.update(JSON.stringify(this.ops));
    for (const [index, e] of [...this.committed].sort((a, b) => a[0] - b[0]))
      h.update(`${index}:${e.term}:${e.type}:${dec.decode(e.data)};`);
    h.update(JSON.stringify(stats));
    return h.digest('hex');
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
