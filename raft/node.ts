/**
 * RaftNode: the asynchronous driver around the pure core. It ticks the core on a timer, feeds it messages from
 * the transport, and carries out each Ready in the order the Ready documents: persist (fsync when asked), then
 * send, then apply committed entries to the state machine, then advance. Proposals resolve with the state
 * machine's result for their own entry, matched by (index, term): one whose index committed with another
 * entry rejects with ProposalDroppedError, never with someone else's result; one whose fate this replica can
 * no longer see (its log overwritten there, or covered by a snapshot) with ProposalOutcomeUnknownError.
 *
 * `read()` is a ReadIndex barrier for linearizable reads. Every `snapshotEntries` applied entries the driver
 * snapshots the state machine into storage, which drops the log up to there; on start it restores the state
 * machine from storage's snapshot and replays only the entries after it. A snapshot received from the leader
 * replaces the state machine's state. `changeMembership` and `transferLeadership` expose the core's membership
 * change and leadership transfer.
 */
import { assert } from '../src/lib/assert.js';
import { noopMetrics, type TrellisMetrics, trellisMetrics } from '../src/lib/metrics.js';
import type { Rng } from '../src/lib/prng.js';
import { type Cancel, realTimers, type Timers } from '../src/lib/timers.js';
import type { ConfChange } from './core/conf.js';
import type { Message } from './core/messages.js';
import { type ProposeResult, RawNode, type RawNodeConfig, type Role } from './core/raw-node.js';
import type { ConfState, Entry, PeerId } from './core/types.js';
import {
  MembershipChangeError,
  NotLeaderError,
  ProposalDroppedError,
  ProposalOutcomeUnknownError,
  RaftClosedError,
  TimeoutError,
} from './errors.js';
import type { StateMachine } from './state-machine.js';
import { type Storage, updateOf } from './storage/storage.js';
import type { Transport } from './transport.js';

/** Default of `RaftNodeOptions.leaderProbeTicks`: one missed heartbeat is normal jitter, two is worth a look. */
export const leaderProbeTicksDefault = 2;

/** Proposals waiting for their entry to commit, at most. */
export const pendingProposalsMax = 100_000;

export interface RaftNodeOptions<R> {
  readonly id: PeerId;
  readonly voters: readonly PeerId[];
  readonly storage: Storage;
  readonly transport: Transport<Message>;
  readonly stateMachine: StateMachine<R>;
  readonly rng: Rng;
  /** Learners of a new cluster (ignored once storage holds a membership). */
  readonly learners?: readonly PeerId[];
  /** Applied entries between snapshots. Default 100,000 (etcd's default); 0 turns snapshots off. */
  readonly snapshotEntries?: number;
  /** Milliseconds per core tick. Default 100 (election after 1–2 s with the default 10 ticks). */
  readonly tickMs?: number;
  /**
   * Ticks a follower waits without word from its leader before it asks the transport whether the leader is
   * still there (`Transport.probe`; transports without it are never asked). An absent leader is forgotten
   * and a new one elected within a few ticks instead of a whole election timeout (`RawNode.leaderGone`).
   * Default 2; 0 turns probing off.
   */
  readonly leaderProbeTicks?: number;
  /** How long a proposal may wait for its commit. Default 10 s. */
  readonly proposalTimeoutMs?: number;
  readonly core?: Partial<Omit<RawNodeConfig, 'id' | 'voters' | 'learners' | 'storage' | 'rng' | 'applied'>>;
  /** Clock and timers: ticks, proposal and read timeouts. Default real time; a simulation passes virtual. */
  readonly timers?: Timers;
  /**
   * Where the node records its term, role, commit index, applied lag, append, commit and snapshot latency
   * (labelled with its id). Default: nothing recorded. Durations are read from `performance.now()`, never
   * from `timers`, so metrics cannot change what a simulation does.
   */
  readonly metrics?: TrellisMetrics;
}

/** What `status()` reports. */
export interface RaftStatus {
  readonly id: PeerId;
  readonly role: Role;
  readonly term: number;
  readonly leader: PeerId;
  readonly commit: number;
  /** Term of the entry at `commit` (0 when this log no longer holds it): a new leader's commit is of its term. */
  readonly commitTerm: number;
  readonly applied: number;
  /** Index of the latest snapshot in storage (0 when none). */
  readonly snapshotIndex: number;
  /** Snapshots received from a leader and installed since this node started. */
  readonly snapshotsInstalled: number;
  /** Times this node, as a follower, found its leader absent and forgot it (`leaderProbeTicks`). */
  readonly leadersGone: number;
  readonly conf: ConfState;
}

interface Pending<R> {
  readonly term: number;
  readonly resolve: (r: R) => void;
  readonly reject: (e: Error) => void;
  readonly timer: Cancel;
  /** `performance.now()` at the proposal, for the commit latency metric. */
  readonly startedMs?: number;
}

const noMetrics = trellisMetrics(noopMetrics);

export class RaftNode<R> {
  readonly #o: RaftNodeOptions<R>;
  readonly #core: RawNode;
  readonly #pending = new Map<number, Pending<R>>();
  /** Linearizable reads: confirmed ones carry the index the state machine must reach before they resolve. */
  readonly #reads = new Map<
    string,
    {
      index: number | undefined;
      resolve: () => void;
      reject: (e: Error) => void;
      timer: Cancel;
    }
  >();
  #readSeq = 0;
  readonly #ticker: Cancel;
  readonly #timers: Timers;
  #loop: Promise<void> | undefined;
  #again = false;
  #closed = false;
  /** A fatal storage failure: the node stops, because memory is now ahead of disk. */
  #failure: unknown;

  /** Conf-change proposals waiting to apply, by index. */
  readonly #pendingConf = new Map<number, Pending<ConfState>>();
  #snapshotsInstalled = 0;
  readonly #metrics: TrellisMetrics;
  readonly #labels: { readonly replica: string };

  constructor(options: RaftNodeOptions<R>) {
    this.#o = options;
    this.#metrics = options.metrics ?? noMetrics;
    this.#labels = { replica: options.id };
    this.#timers = options.timers ?? realTimers;
    const snap = options.storage.snapshot();
    // The state machine starts from the stored snapshot; the core hands out only the entries after it.
    if (snap.meta.index > 0) options.stateMachine.restore(snap.data);
    this.#core = new RawNode({
      id: options.id,
      voters: options.voters,
      ...(options.learners === undefined ? {} : { learners: options.learners }),
      storage: options.storage,
      rng: options.rng,
      applied: snap.meta.index,
      ...options.core,
    });
    options.transport.onMessage((m) => {
      if (this.#closed) return;
      this.#core.step(m);
      this.#kick();
    });
    this.#ticker = this.#timers.setInterval(() => {
      this.#core.tick();
      this.#probeLeader();
      this.#kick();
    }, options.tickMs ?? 100);
    this.#kick();
  }

  /**
   * A follower whose leader has been silent for `leaderProbeTicks` asks the transport whether the leader is
   * still there, one question at a time (so at most one per tick). A kill -9 closes the leader's connection
   * at once, so its absence is known long before an election timeout; a leader that is only slow is
   * 'present' or 'unknown', and the election timeout stays in charge.
   */
  #probeLeader(): void {
    const transport = this.#o.transport;
    const ticks = this.#o.leaderProbeTicks ?? leaderProbeTicksDefault;
    if (transport.probe === undefined || ticks <= 0 || this.#probing || this.#closed) return;
    const core = this.#core;
    if (core.role !== 'follower' || core.leader === '' || core.leaderSilentTicks < ticks) return;
    const leader = core.leader;
    this.#probing = true;
    transport.probe(leader).then(
      (presence) => {
        this.#probing = false;
        if (presence !== 'absent' || this.#closed || !core.leaderGone(leader)) return;
        this.#leaderGoneCount++;
        this.#kick();
      },
      () => {
        this.#probing = false;
      },
    );
  }
  #probing = false;
  #leaderGoneCount = 0;

  status(): RaftStatus {
    const log = this.#core.log;
    return {
      id: this.#o.id,
      role: this.#core.role,
      term: this.#core.term,
      leader: this.#core.leader,
      commit: log.committed,
      commitTerm: log.term(log.committed) ?? 0,
      applied: log.applied,
      snapshotIndex: this.#o.storage.snapshot().meta.index,
      snapshotsInstalled: this.#snapshotsInstalled,
      leadersGone: this.#leaderGoneCount,
      conf: this.#core.confState(),
    };
  }

  /**
   * Registers a listener for role and leader changes (called from the Ready loop, after the change is
   * persisted); returns its removal. `term` is the term the change happened in.
   */
  onRoleChange(listener: (change: { role: Role; leader: PeerId; term: number }) => void): () => void {
    this.#roleListeners.add(listener);
    return () => this.#roleListeners.delete(listener);
  }
  readonly #roleListeners = new Set<(change: { role: Role; leader: PeerId; term: number }) => void>();

  /** Starts an election now (pre-vote first), e.g. to elect a chosen replica at startup. */
  campaign(): void {
    if (this.#closed) return;
    this.#core.campaign();
    this.#kick();
  }

  /** On the leader: how far each member's log is known to match (empty on a follower). */
  progress(): ReadonlyMap<PeerId, { readonly match: number; readonly next: number; readonly state: string }> {
    return this.#core.role === 'leader' ? this.#core.progress() : new Map();
  }

  /**
   * Proposes one membership change (add a voter or promote a learner, add a learner, remove a member);
   * resolves with the membership once the change is applied here. Rejects with NotLeaderError on a
   * follower and MembershipChangeError when refused (another change pending, or invalid).
   */
  changeMembership(change: ConfChange): Promise<ConfState> {
    if (this.#closed) return Promise.reject(new RaftClosedError('raft node is closed'));
    const r = this.#core.proposeConfChange(change);
    if (!r.ok) return Promise.reject(this.#refusal(r));
    return new Promise<ConfState>((resolve, reject) => {
      const timer = this.#timers.setTimeout(() => {
        this.#pendingConf.delete(r.index);
        reject(new TimeoutError(`membership change at index ${r.index} not applied in time`));
      }, this.#o.proposalTimeoutMs ?? 10_000);
      this.#pendingConf.set(r.index, { term: r.term, resolve, reject, timer });
      this.#kick();
    });
  }

  /**
   * Hands leadership to voter `to`; resolves once this replica sees `to` lead (or rejects with
   * TimeoutError after the proposal timeout). NotLeaderError when this replica is not the leader.
   */
  async transferLeadership(to: PeerId): Promise<void> {
    if (this.#closed) throw new RaftClosedError('raft node is closed');
    if (this.#core.leader === to && this.#core.role !== 'leader') return;
    if (!this.#core.transferLeadership(to)) {
      if (this.#core.role !== 'leader') throw new NotLeaderError(this.#core.leader);
      throw new MembershipChangeError(`${to} is not another voter`);
    }
    this.#kick();
    const deadline = this.#timers.now() + (this.#o.proposalTimeoutMs ?? 10_000);
    while (this.#core.leader !== to || this.#core.role === 'leader') {
      if (this.#closed) throw new RaftClosedError('raft node closed');
      if (this.#timers.now() > deadline) throw new TimeoutError(`leadership did not move to ${to} in time`);
      await new Promise<void>((r) => this.#timers.setTimeout(r, this.#o.tickMs ?? 100));
    }
  }

  #refusal(r: Extract<ProposeResult, { ok: false }>): Error {
    switch (r.reason) {
      case 'not-leader':
        return new NotLeaderError(r.leader);
      case 'transferring':
        return new ProposalDroppedError('a leadership transfer is in progress; retry at the new leader');
      case 'too-many-uncommitted':
        return new ProposalDroppedError('too many uncommitted entries; retry later');
      case 'conf-change-pending':
        return new MembershipChangeError('another membership change is not applied yet; retry later');
      case 'invalid-conf-change':
        return new MembershipChangeError(r.detail ?? 'invalid membership change');
    }
  }

  /** Proposes one command; resolves with the state machine's result once it is committed and applied. */
  propose(data: Uint8Array): Promise<R> {
    if (this.#closed) return Promise.reject(new RaftClosedError('raft node is closed'));
    if (this.#pending.size >= pendingProposalsMax)
      return Promise.reject(new TimeoutError('too many proposals pending'));
    const r = this.#core.propose([data]);
    if (!r.ok) return Promise.reject(this.#refusal(r));
    this.#metrics.raftEntryBytes.observe(data.length, this.#labels);
    return new Promise<R>((resolve, reject) => {
      const timer = this.#timers.setTimeout(() => {
        this.#pending.delete(r.index);
        reject(
          new TimeoutError(
            `proposal at index ${r.index} not committed within ${this.#o.proposalTimeoutMs ?? 10_000} ms`,
          ),
        );
      }, this.#o.proposalTimeoutMs ?? 10_000);
      this.#pending.set(r.index, { term: r.term, resolve, reject, timer, startedMs: performance.now() });
      this.#kick();
    });
  }

  /**
   * A linearizable read barrier (ReadIndex): resolves once this replica, as leader, has confirmed its
   * leadership with a quorum and applied everything committed when the read was asked. Read the state machine
   * after it resolves. Rejects with NotLeaderError on a follower or when leadership is lost meanwhile.
   */
  read(): Promise<void> {
    if (this.#closed) return Promise.reject(new RaftClosedError('raft node is closed'));
    const context = `${this.#o.id}-${++this.#readSeq}`;
    if (!this.#core.readIndex(context)) return Promise.reject(new NotLeaderError(this.#core.leader));
    return new Promise<void>((resolve, reject) => {
      const timer = this.#timers.setTimeout(() => {
        this.#reads.delete(context);
        reject(new TimeoutError('read not confirmed in time'));
      }, this.#o.proposalTimeoutMs ?? 10_000);
      this.#reads.set(context, { index: undefined, resolve, reject, timer });
      this.#kick();
    });
  }

  #settleReads(): void {
    const applied = this.#core.log.applied;
    for (const [context, r] of this.#reads) {
      if (r.index !== undefined && r.index <= applied) {
        r.timer();
        this.#reads.delete(context);
        r.resolve();
      } else if (r.index === undefined && this.#core.role !== 'leader') {
        r.timer();
        this.#reads.delete(context);
        r.reject(new NotLeaderError(this.#core.leader));
      }
    }
  }

  #kick(): void {
    if (this.#loop !== undefined) {
      this.#again = true;
      return;
    }
    // The loop starts on a microtask, after `#loop` is set: a Ready that applies without awaiting its write
    // (a commit-index-only Ready) runs state machine listeners synchronously, and one that proposes or reads
    // kicks again; starting the loop inline would let that kick start a second loop and take a new Ready
    // before this one is advanced (found by the scheduler simulation on the production driver).
    this.#loop = Promise.resolve()
      .then(() => this.#run())
      .finally(() => {
        this.#loop = undefined;
        if (this.#again && !this.#closed) {
          this.#again = false;
          this.#kick();
        }
      });
  }

  async #run(): Promise<void> {
    try {
      await this.#runReadies();
    } catch (err) {
      // A broken invariant or a transport that threw: stop rather than run on in an unknown state.
      this.#fail(err);
    }
  }

  async #runReadies(): Promise<void> {
    while (!this.#closed && this.#core.hasReady()) {
      const rd = this.#core.ready();
      // 0. A leader's appends go out at once: its own write runs in parallel with the followers' (§10.2.1).
      if (rd.earlyMessages.length > 0) this.#o.transport.send(rd.earlyMessages);
      // 1. Persist before anything that depends on it is sent. A Ready that only moves the commit index
      // (no entries, term, vote or snapshot) need not wait: nothing sent or applied depends on that index
      // being durable (a lost one is learned again from the leader), and storage writes in call order.
      const update = updateOf(rd);
      const saved = this.#o.storage.save(update, rd.mustSync);
      if (rd.mustSync || update.snapshot !== undefined) {
        try {
          const startedMs = performance.now();
          await saved;
          this.#metrics.raftAppendSeconds.observe((performance.now() - startedMs) / 1_000, this.#labels);
        } catch (err) {
          this.#fail(err);
          return;
        }
      } else {
        saved.catch((err: unknown) => this.#fail(err));
      }
      // 2. Send.
      if (rd.messages.length > 0) this.#o.transport.send(rd.messages);
      this.#dropReplaced(rd.entries);
      // 3. Restore a snapshot from the leader, then apply, matching each entry to the proposal made for it.
      if (rd.snapshot !== undefined) {
        this.#o.stateMachine.restore(rd.snapshot.data);
        this.#snapshotsInstalled++;
        // Proposals at or below the snapshot were decided elsewhere: their outcome is unknown here (the
        // snapshot may well hold them; the Raft simulation found them reported as dropped yet committed).
        for (const [index, p] of [...this.#pending])
          if (index <= rd.snapshot.meta.index)
            this.#settle(
              index,
              p,
              new ProposalOutcomeUnknownError(`entry ${index} is covered by a snapshot from the leader`),
            );
      }
      const confApplied: Entry[] = [];
      for (const e of rd.committedEntries) {
        if (e.type === 'conf') confApplied.push(e);
        this.#apply(e);
      }
      for (const rs of rd.readStates) {
        const r = this.#reads.get(rs.context);
        if (r !== undefined) r.index = rs.index;
      }
      // 4. Advance; then reads whose index is applied may go, and membership changes are in force.
      this.#core.advance();
      if (rd.softState !== undefined)
        for (const l of this.#roleListeners)
          l({ role: rd.softState.role, leader: rd.softState.leader, term: this.#core.term });
      this.#settleReads();
      for (const e of confApplied) {
        const p = this.#pendingConf.get(e.index);
        if (p === undefined) continue;
        p.timer();
        this.#pendingConf.delete(e.index);
        if (p.term === e.term) p.resolve(this.#core.confState());
        else p.reject(new ProposalDroppedError(`membership change at ${e.index} was replaced`));
      }
      this.#maybeSnapshot();
      this.#recordState();
    }
  }

  /** Term, role, commit index and applied lag, once per Ready: a few gauge writes. */
  #recordState(): void {
    const m = this.#metrics;
    const log = this.#core.log;
    m.raftTerm.set(this.#core.term, this.#labels);
    m.raftIsLeader.set(this.#core.role === 'leader' ? 1 : 0, this.#labels);
    m.raftCommitIndex.set(log.committed, this.#labels);
    m.raftAppliedLag.set(log.committed - log.applied, this.#labels);
  }

  /**
   * Snapshots the state machine once `snapshotEntries` entries were applied since the last snapshot. The
   * state is serialised now, at the applied index; writing and fsyncing the file runs beside the Ready loop
   * (one snapshot at a time), so commits do not wait for it.
   */
  #maybeSnapshot(): void {
    const every = this.#o.snapshotEntries ?? 100_000;
    const applied = this.#core.log.applied;
    if (this.#snapshotting !== undefined) return;
    if (every <= 0 || applied - this.#o.storage.snapshot().meta.index < every) return;
    const startedMs = performance.now();
    // The state as of `applied` is taken now either way; a machine that can write it later in pieces does
    // so beside the Ready loop, so a large state does not stall apply while it is serialised.
    const later = this.#o.stateMachine.snapshotLater?.();
    const now = later === undefined ? this.#o.stateMachine.snapshot() : undefined;
    const conf = this.#core.confState();
    this.#snapshotting = (async () => {
      try {
        const data = now ?? (await (later as () => Promise<Uint8Array>)());
        await this.#o.storage.createSnapshot(applied, conf, data);
        await this.#o.storage.compact(applied);
        this.#metrics.snapshotBytes.set(data.length, this.#labels);
        this.#metrics.snapshotSeconds.observe((performance.now() - startedMs) / 1_000, this.#labels);
      } catch (err) {
        this.#fail(err);
      } finally {
        this.#snapshotting = undefined;
      }
      // Entries applied while this snapshot was written did not start one (one at a time): look again, or
      // a burst that ends during a slow write would leave the log uncompacted until the next apply.
      if (!this.#closed) this.#maybeSnapshot();
    })();
  }
  #snapshotting: Promise<void> | undefined;

  /**
   * Entries from a leader replace this log from their first index on: a proposal made here at or past it
   * whose entry is not among them (another term, or cut off beyond their end) is gone from this log, so its
   * result can never come back here. It may still commit (another replica holding it may be elected and
   * replicate it, the Raft paper's Figure 8), so the caller learns its outcome is unknown, now rather than at
   * its timeout, and retries idempotently at once.
   */
  #dropReplaced(entries: readonly Entry[]): void {
    const first = entries[0];
    if (first === undefined || this.#pending.size === 0) return;
    // Judged on the log as it is now: entries proposed after this Ready was taken are still there.
    const log = this.#core.log;
    for (const [index, p] of [...this.#pending]) {
      if (index < first.index || log.term(index) === p.term) continue;
      this.#settle(
        index,
        p,
        new ProposalOutcomeUnknownError(`entry ${index} of term ${p.term} was overwritten by a newer leader`),
      );
    }
  }

  #apply(e: Entry): void {
    const waiting = this.#pending.get(e.index);
    if (e.type !== 'normal' || e.data.length === 0) {
      // A leader's no-op or a configuration entry: no result, but it replaces any proposal made at its index.
      if (waiting !== undefined)
        this.#settle(e.index, waiting, new ProposalDroppedError(`entry ${e.index} was replaced`));
      return;
    }
    const result = this.#o.stateMachine.apply(e);
    if (waiting === undefined) return;
    if (waiting.term === e.term) {
      waiting.timer();
      this.#pending.delete(e.index);
      if (waiting.startedMs !== undefined)
        this.#metrics.raftCommitSeconds.observe(
          (performance.now() - waiting.startedMs) / 1_000,
          this.#labels,
        );
      waiting.resolve(result);
    } else {
      this.#settle(
        e.index,
        waiting,
        new ProposalDroppedError(`entry ${e.index} of term ${waiting.term} was replaced`),
      );
    }
  }

  #settle(index: number, p: Pending<R>, err: Error): void {
    p.timer();
    this.#pending.delete(index);
    p.reject(err);
  }

  #fail(err: unknown): void {
    this.#failure = err;
    void this.close();
  }

  /** Stops ticking and delivery, settles pending proposals, closes transport and storage. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#ticker();
    await this.#loop;
    await this.#snapshotting;
    const closed = (): RaftClosedError =>
      new RaftClosedError('raft node closed', this.#failure === undefined ? {} : { cause: this.#failure });
    for (const [index, p] of [...this.#pending]) this.#settle(index, p, closed());
    for (const [, p] of [...this.#pendingConf]) {
      p.timer();
      p.reject(closed());
    }
    this.#pendingConf.clear();
    await this.#o.transport.close();
    await this.#o.storage.close();
    assert(this.#pending.size === 0, 'no proposal left pending after close');
  }
}
