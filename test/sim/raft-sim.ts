/**
 * The whole-cluster deterministic simulation of the Raft core (after FoundationDB's and TigerBeetle's
 * simulators): 3 or 5 RawNodes, each with a MemoryStorage that can lose what was not fsynced, on the
 * SimNetwork, all driven by one seed. Virtual time is the tick; nothing reads a clock.
 *
 * Faults of the safety phase: message drop, duplication, delay (hence reordering), symmetric and asymmetric
 * partitions, a clogged link, crashes at any point of a Ready (after the write, before its fsync) that keep
 * any prefix of the unsynced writes with the last record torn, restarts, snapshots and compaction with
 * small chunks, membership changes (remove a voter, add it back as a learner, promote it) and leadership
 * transfers. Then the liveness phase heals the network, restarts every replica and requires a commit, and
 * all members to converge, within a tick budget.
 *
 * Checked after every step: election safety (one leader per term), log matching (an (index, term) names
 * one entry and one predecessor term, checked on every entry any replica persists, which by induction
 * gives identical prefixes), leader completeness (a new leader holds every entry applied anywhere), state
 * machine safety (every replica applies the same entry at an index) and, at the end, that no acknowledged
 * write is lost and every member's state is equal. Clients run puts and ReadIndex reads against a KV
 * state machine; their history goes to the linearizability checker. `brokenReads` serves reads from any
 * replica's local state without ReadIndex: the checker must catch it.
 */
import { decodeConfChange } from '../../raft/core/conf.js';
import type { Message } from '../../raft/core/messages.js';
import { RawNode } from '../../raft/core/raw-node.js';
import type { Entry } from '../../raft/core/types.js';
import { MemoryStorage } from '../../raft/storage/memory.js';
import { updateOf } from '../../raft/storage/storage.js';
import { perfectLink, SimNetwork } from '../../raft/transport/memory.js';
import { createRng, type Rng } from '../../src/lib/prng.js';
import { checkHistory, type KvInput, type KvOutput, type Operation } from './linearizability.js';

export interface RaftSimOptions {
  readonly seed: number;
  readonly replicas: 3 | 5;
  /** Ticks of the safety phase, under faults. */
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
  /** What failed, with `SEED=<seed>` to replay it. */
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
  };
  readonly trace: readonly string[];
}

class SimFailure extends Error {}

function fail(message: string): never {
  throw new SimFailure(message);
}

const enc = new TextEncoder();
const dec = new TextDecoder();
const keys = ['x', 'y', 'z'];

interface Replica {
  readonly id: string;
  node: RawNode;
  storage: MemoryStorage;
  kv: Map<string, string>;
  up: boolean;
  /** Crash in the middle of the next Ready, after its writes and before their fsync. */
  crashInReady: boolean;
}

interface PendingPut {
  readonly replica: string;
  readonly index: number;
  readonly term: number;
  readonly op: number;
}
interface PendingRead {
  readonly replica: string;
  readonly context: string;
  index: number | undefined;
  readonly op: number;
}

interface OpRecord {
  client: number;
  input: KvInput;
  output: KvOutput;
  callAt: number;
  returnAt: number | undefined;
  /** Definitely did not happen (its entry was replaced, or it was a read that never got an answer). */
  void: boolean;
}

const clients = 3;
const opTimeoutTicks = 60;

export function runRaftSim(options: RaftSimOptions): RaftSimResult {
  const sim = new RaftSim(options);
  let failure: string | undefined;
  try {
    sim.run();
  } catch (err) {
    const what =
      err instanceof SimFailure
        ? err.message
        : err instanceof Error
          ? (err.stack ?? err.message)
          : String(err);
    failure = `SEED=${options.seed} replicas=${options.replicas}${options.brokenReads ? ' brokenReads' : ''}: ${what}`;
  }
  return {
    seed: options.seed,
    ok: failure === undefined,
    ...(failure === undefined ? {} : { failure }),
    stats: { ...sim.stats, ticks: sim.now, messages: sim.net.stats.sent },
    trace: sim.traceLines,
  };
}

class RaftSim {
  readonly o: RaftSimOptions;
  readonly rng: Rng;
  readonly net: SimNetwork<Message>;
  readonly ids: string[];
  readonly replicas = new Map<string, Replica>();
  readonly leaders = new Map<number, string>();
  /** index → the entry applied there (by anyone): the committed log as observed. */
  readonly applied = new Map<number, Entry>();
  /**
   * index → a term the entry was committed in or before: the lowest term of a replica when it applied it
   * (it learned of the commit from a leader of at most its own term). Leader completeness holds for leaders
   * of later terms only: a leader of an earlier term may still be elected late, with delayed votes.
   */
  readonly committedBy = new Map<number, number>();
  /** "index:term" → the entry's data and its predecessor's term, for log matching. */
  readonly seen = new Map<string, { data: Uint8Array; prevTerm: number | undefined }>();
  readonly ops: OpRecord[] = [];
  readonly clientBusy: (number | undefined)[] = Array.from({ length: clients }, () => undefined);
  readonly puts = new Map<number, PendingPut>();
  readonly reads = new Map<number, PendingRead>();
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
  };
  now = 0;
  /** Drawn per seed, so the seeds together cover small and large messages, windows, snapshots and fault rates. */
  readonly shape: {
    msgBytesMax: number;
    inflightMsgsMax: number;
    snapshotEvery: number;
    chunkBytes: number;
    /** Per-mille chance, each tick, of a crash. */
    crashRate: number;
  };
  #opSeq = 0;

  constructor(o: RaftSimOptions) {
    this.o = o;
    this.rng = createRng(o.seed);
    this.shape = {
      msgBytesMax: this.rng.pick([1, 64, 256, 4096]),
      inflightMsgsMax: this.rng.pick([1, 2, 8, 256]),
      snapshotEvery: this.rng.pick([5, 12, 40, 1_000_000]),
      chunkBytes: this.rng.pick([16, 48, 4096]),
      crashRate: this.rng.pick([4, 8, 20]),
    };
    this.ids = Array.from({ length: o.replicas }, (_, i) => `n${i + 1}`);
    this.net = new SimNetwork<Message>(this.rng.fork(), (m) => m, perfectLink);
    for (const id of this.ids) this.#start(id, new MemoryStorage());
  }

  #trace(line: string): void {
    if (this.o.trace) this.traceLines.push(`t${this.now} ${line}`);
  }

  #start(id: string, storage: MemoryStorage): void {
    const node = new RawNode({
      id,
      voters: this.ids,
      storage,
      rng: this.rng.fork(),
      snapshotChunkBytes: this.shape.chunkBytes,
      msgBytesMax: this.shape.msgBytesMax,
      inflightMsgsMax: this.shape.inflightMsgsMax,
    });
    const kv = new Map<string, string>(
      storage.snapshot().data.length > 0
        ? (JSON.parse(dec.decode(storage.snapshot().data)) as [string, string][])
        : [],
    );
    const r: Replica = { id, node, storage, kv, up: true, crashInReady: false };
    this.replicas.set(id, r);
    this.net.endpoint(id).onMessage((m) => {
      if (!r.up) return;
      r.node.step(m);
      this.#drain(r);
    });
  }

  #crash(r: Replica): void {
    const unsynced = r.storage.unsyncedWrites;
    const keep = this.rng.int(0, unsynced + 1);
    const torn = this.rng.chance(0.5) ? this.rng.int(0, 4) : undefined;
    const image = r.storage.crashImage(keep, torn);
    this.#trace(
      `${r.id} crash (kept ${keep}/${unsynced} unsynced writes${torn === undefined ? '' : `, torn to ${torn}`})`,
    );
    r.up = false;
    r.storage = image;
    this.stats.crashes++;
    // Whatever it was serving is now of unknown outcome.
    for (const [op, p] of this.puts) if (p.replica === r.id) this.#giveUp(op);
    for (const [op, p] of this.reads) if (p.replica === r.id) this.#giveUp(op);
  }

  #restart(r: Replica): void {
    this.#trace(`${r.id} restart (log ${r.storage.firstIndex()}..${r.storage.lastIndex()})`);
    this.#start(r.id, r.storage);
  }

  /** Carries out every Ready of a replica, checking the invariants on what it persists and applies. */
  #drain(r: Replica): void {
    while (r.up && r.node.hasReady()) {
      const rd = r.node.ready();
      // Written, not yet fsynced: a crash here keeps any prefix of it.
      r.storage.saveSync(updateOf(rd), false);
      // A leader's appends go out while its own write is still in flight (and may be lost with it).
      this.net.endpoint(r.id).send(rd.earlyMessages);
      if (r.crashInReady) {
        r.crashInReady = false;
        this.#crash(r);
        return;
      }
      if (rd.mustSync) r.storage.sync();
      this.#checkPersisted(r, rd.entries);
      for (const m of rd.messages) if (m.type === 'snapshot' && m.offset === 0) this.stats.snapshotsSent++;
      if (this.o.trace)
        for (const m of rd.messages)
          if (m.type.endsWith('ote') || m.type.endsWith('oteResp') || m.type === 'timeoutNow')
            this.#trace(
              `${m.from}>${m.to} ${m.type} t${m.term}${'reject' in m ? (m.reject ? ' reject' : ' grant') : ''}`,
            );
      this.net.endpoint(r.id).send(rd.messages);
      if (rd.snapshot !== undefined) {
        const snap = rd.snapshot;
        const known = this.applied.get(snap.meta.index);
        if (known !== undefined && known.term !== snap.meta.term)
          fail(
            `${r.id} installed a snapshot at ${snap.meta.index} of term ${snap.meta.term}; applied there: term ${known.term}`,
          );
        r.kv = new Map(JSON.parse(dec.decode(snap.data)) as [string, string][]);
        this.#trace(`${r.id} installed snapshot @${snap.meta.index}`);
      }
      for (const e of rd.committedEntries) this.#apply(r, e);
      for (const rs of rd.readStates) {
        const op = Number(rs.context);
        const p = this.reads.get(op);
        if (p !== undefined && p.replica === r.id) p.index = rs.index;
      }
      if (rd.softState !== undefined) {
        this.#trace(`${r.id} ${rd.softState.role} term ${r.node.term}`);
        if (rd.softState.role === 'leader') this.#checkNewLeader(r);
        else this.#leadershipLost(r);
      }
      r.node.advance();
      this.#serveReads(r);
      const applied = r.node.log.applied;
      if (applied - r.storage.snapshot().meta.index >= this.shape.snapshotEvery) {
        r.storage.createSnapshotSync(applied, r.node.confState(), enc.encode(JSON.stringify([...r.kv])));
      }
    }
  }

  #checkPersisted(r: Replica, entries: readonly Entry[]): void {
    for (const e of entries) {
      const key = `${e.index}:${e.term}`;
      const prevTerm = r.node.log.term(e.index - 1);
      const known = this.seen.get(key);
      if (known === undefined) {
        this.seen.set(key, { data: e.data, prevTerm });
        continue;
      }
      if (!sameBytes(known.data, e.data))
        fail(`log matching: two different entries at index ${e.index} term ${e.term} (${r.id})`);
      if (known.prevTerm !== undefined && prevTerm !== undefined && known.prevTerm !== prevTerm)
        fail(
          `log matching: entry ${key} follows term ${prevTerm} on ${r.id}, term ${known.prevTerm} elsewhere`,
        );
    }
  }

  #checkNewLeader(r: Replica): void {
    this.stats.elections++;
    const term = r.node.term;
    const known = this.leaders.get(term);
    if (known !== undefined && known !== r.id)
      fail(`election safety: ${known} and ${r.id} both lead term ${term}`);
    this.leaders.set(term, r.id);
    // Leader completeness: every entry applied anywhere is in the new leader's log (or its snapshot).
    const log = r.node.log;
    for (const [index, e] of this.applied) {
      if (index < log.firstIndex() - 1 || (this.committedBy.get(index) ?? 0) >= term) continue;
      const t = log.term(index);
      if (t !== e.term)
        fail(
          `leader completeness: ${r.id} leads term ${term} without committed entry ${index} (term ${e.term}, has ${t})`,
        );
    }
  }

  #apply(r: Replica, e: Entry): void {
    const known = this.applied.get(e.index);
    this.committedBy.set(e.index, Math.min(this.committedBy.get(e.index) ?? r.node.term, r.node.term));
    if (known === undefined) this.applied.set(e.index, e);
    else if (known.term !== e.term || !sameBytes(known.data, e.data))
      fail(
        `state machine safety: ${r.id} applied term ${e.term} at ${e.index}, another replica term ${known.term}`,
      );
    if (e.type === 'conf') {
      this.#trace(`${r.id} applies conf ${JSON.stringify(decodeConfChange(e.data))} @${e.index}`);
      return;
    }
    if (e.data.length === 0) return;
    const [client, op, key, value] = dec.decode(e.data).split('|') as [string, string, string, string];
    r.kv.set(key, value);
    const p = this.puts.get(Number(op));
    if (p === undefined || p.replica !== r.id || p.index !== e.index) return;
    this.puts.delete(Number(op));
    const rec = this.ops[Number(op)] as OpRecord;
    if (p.term === e.term) {
      rec.output = { ok: true };
      rec.returnAt = this.now;
      this.acked.add(`${client}|${op}`);
      this.stats.acked++;
    } else {
      rec.void = true; // Another entry took its index: it never happens.
    }
    this.clientBusy[rec.client] = undefined;
  }

  #leadershipLost(r: Replica): void {
    // Reads in flight at a replica that is no longer leader will never be confirmed; puts may still commit.
    for (const [op, p] of this.reads) if (p.replica === r.id && p.index === undefined) this.#giveUp(op);
  }

  #serveReads(r: Replica): void {
    for (const [op, p] of this.reads) {
      if (p.replica !== r.id || p.index === undefined || r.node.log.applied < p.index) continue;
      this.reads.delete(op);
      const rec = this.ops[op] as OpRecord;
      rec.output = { value: r.kv.get((rec.input as { key: string }).key) ?? null };
      rec.returnAt = this.now;
      this.clientBusy[rec.client] = undefined;
    }
  }

  /** The client stops waiting: a put's outcome is unknown; a read that never answered is dropped. */
  #giveUp(op: number): void {
    const rec = this.ops[op] as OpRecord;
    if (rec.input.op === 'get') rec.void = true;
    this.puts.delete(op);
    this.reads.delete(op);
    this.clientBusy[rec.client] = undefined;
  }

  #leader(): Replica | undefined {
    let best: Replica | undefined;
    for (const r of this.replicas.values())
      if (r.up && r.node.role === 'leader' && (best === undefined || r.node.term > best.node.term)) best = r;
    return best;
  }

  /** Where a client sends a request: any replica that believes it leads (a real client may reach a stale one). */
  #clientTarget(): Replica | undefined {
    const leaders = [...this.replicas.values()].filter((r) => r.up && r.node.role === 'leader');
    return leaders.length === 0 ? undefined : this.rng.pick(leaders);
  }

  #clientStep(): void {
    for (let c = 0; c < clients; c++) {
      const busy = this.clientBusy[c];
      if (busy !== undefined) {
        const rec = this.ops[busy] as OpRecord;
        if (this.now - rec.callAt > opTimeoutTicks) this.#giveUp(busy);
        continue;
      }
      if (!this.rng.chance(0.3)) continue;
      const key = this.rng.pick(keys);
      const op = this.#opSeq++;
      if (this.rng.chance(0.5)) {
        const value = `${c}.${op}`;
        const rec: OpRecord = {
          client: c,
          input: { op: 'put', key, value },
          output: undefined,
          callAt: this.now,
          returnAt: undefined,
          void: false,
        };
        this.ops.push(rec);
        const leader = this.#clientTarget();
        const res = leader?.node.propose([enc.encode(`${c}|${op}|${key}|${value}`)]);
        if (leader === undefined || res === undefined || !res.ok) {
          rec.void = true; // Refused outright: nothing was appended.
          continue;
        }
        this.puts.set(op, { replica: leader.id, index: res.index, term: res.term, op });
        this.clientBusy[c] = op;
        this.#drain(leader);
      } else {
        const rec: OpRecord = {
          client: c,
          input: { op: 'get', key },
          output: undefined,
          callAt: this.now,
          returnAt: undefined,
          void: false,
        };
        this.ops.push(rec);
        if (this.o.brokenReads) {
          // The bug: any replica answers from what it has applied, without confirming anything.
          const up = [...this.replicas.values()].filter((r) => r.up);
          if (up.length === 0) {
            rec.void = true;
            continue;
          }
          const r = this.rng.pick(up);
          rec.output = { value: r.kv.get(key) ?? null };
          rec.returnAt = this.now;
          continue;
        }
        const leader = this.#clientTarget();
        if (leader === undefined || !leader.node.readIndex(String(op))) {
          rec.void = true;
          continue;
        }
        this.reads.set(op, { replica: leader.id, context: String(op), index: undefined, op });
        this.clientBusy[c] = op;
        this.#drain(leader);
        this.#serveReads(leader);
      }
    }
  }

  #faultStep(): void {
    const up = [...this.replicas.values()].filter((r) => r.up);
    const down = [...this.replicas.values()].filter((r) => !r.up);
    const roll = this.rng.int(0, 1000);
    const c = this.shape.crashRate;
    if (roll < c && up.length > 0) {
      const r = this.rng.pick(up);
      if (this.rng.chance(0.5)) r.crashInReady = true;
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
        if (leader.node.transferLeadership(to)) {
          this.stats.transfers++;
          this.#trace(`${leader.id} transfers to ${to}`);
          this.#drain(leader);
        }
      }
    }
  }

  /** Removes a voter, adds a removed one back as a learner, or promotes a learner: one step at a time. */
  #membershipStep(): boolean {
    const leader = this.#leader();
    if (leader === undefined) return false;
    const conf = leader.node.confState();
    const missing = this.ids.filter((id) => !conf.voters.includes(id) && !conf.learners.includes(id));
    const learner = conf.learners[0];
    const change =
      learner !== undefined
        ? ({ type: 'addVoter', peer: learner } as const)
        : missing[0] !== undefined
          ? ({ type: 'addLearner', peer: missing[0] } as const)
          : ({ type: 'remove', peer: this.rng.pick(conf.voters) } as const);
    const res = leader.node.proposeConfChange(change);
    if (!res.ok) return false;
    this.stats.confChanges++;
    this.#trace(`${leader.id} proposes ${change.type} ${change.peer}`);
    this.#drain(leader);
    return true;
  }

  #tick(): void {
    this.now++;
    for (const r of this.replicas.values()) {
      if (!r.up) continue;
      r.node.tick();
      this.#drain(r);
    }
    this.net.tick();
  }

  run(): void {
    const faultTicks = this.o.faultTicks ?? 300;
    for (let t = 0; t < faultTicks; t++) {
      this.#faultStep();
      this.#clientStep();
      this.#tick();
    }
    this.#liveness(this.o.livenessTicks ?? 600);
    this.#checkHistory();
  }

  /** Heals everything, restarts every replica, and requires progress and convergence within the budget. */
  #liveness(budget: number): void {
    this.net.heal();
    this.net.setDefaults(perfectLink);
    for (const r of this.replicas.values()) {
      r.crashInReady = false;
      if (!r.up) this.#restart(r);
    }
    this.#trace('liveness phase');
    const deadline = this.now + budget;
    let marker: { index: number; term: number } | undefined;
    while (this.now < deadline) {
      this.#tick();
      for (let c = 0; c < clients; c++) {
        const busy = this.clientBusy[c];
        if (busy !== undefined && this.now - (this.ops[busy] as OpRecord).callAt > opTimeoutTicks)
          this.#giveUp(busy);
      }
      const leader = this.#leader();
      if (leader === undefined) continue;
      const conf = leader.node.confState();
      // Bring every replica back into the membership, one change at a time.
      if (conf.voters.length + conf.learners.length < this.ids.length || conf.learners.length > 0) {
        this.#membershipStep();
        continue;
      }
      // A marker write must commit: proposed once the membership is whole, again if another entry took its
      // index. Then every replica must have applied all the leader holds.
      const atMarker = marker === undefined ? undefined : this.applied.get(marker.index);
      if (marker === undefined || (atMarker !== undefined && atMarker.term !== marker.term)) {
        const res = leader.node.propose([enc.encode(`-1|-1|marker|${this.now}`)]);
        if (res.ok) marker = { index: res.index, term: res.term };
        this.#drain(leader);
        continue;
      }
      if (atMarker === undefined) continue;
      const last = leader.node.log.lastIndex();
      if (
        leader.node.log.committed === last &&
        [...this.replicas.values()].every((r) => r.node.log.applied === last)
      ) {
        this.#checkConverged();
        return;
      }
    }
    const status = [...this.replicas.values()]
      .map(
        (r) =>
          `${r.id}:${r.node.role}/t${r.node.term}/c${r.node.log.committed}/a${r.node.log.applied}/l${r.node.log.lastIndex()}`,
      )
      .join(' ');
    fail(`liveness: no commit and convergence within ${budget} ticks after healing (${status})`);
  }

  #checkConverged(): void {
    const states = [...this.replicas.values()].map((r) => JSON.stringify([...r.kv].sort()));
    if (new Set(states).size !== 1)
      fail(`convergence: replicas' states differ at the end: ${states.join(' / ')}`);
    // No acknowledged write lost: each is in the applied log, at the index where it was acknowledged.
    const appliedPuts = new Set<string>();
    for (const e of this.applied.values()) {
      if (e.type !== 'normal' || e.data.length === 0) continue;
      const [client, op] = dec.decode(e.data).split('|');
      appliedPuts.add(`${client}|${op}`);
    }
    for (const a of this.acked)
      if (!appliedPuts.has(a)) fail(`acknowledged write ${a} is not in the committed log`);
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
    if (!verdict.ok) fail(`linearizability: history of key ${verdict.key} is ${verdict.reason}`);
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
