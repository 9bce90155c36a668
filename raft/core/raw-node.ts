/**
 * RawNode: the pure Raft core (etcd-io/raft's raft.go + rawnode.go in shape). No I/O, clock or ambient
 * randomness: time is `tick()`, input is `step()`/`propose()`, and everything the driver must do comes out of
 * `ready()`, in the order its fields document, acknowledged by `advance()`.
 *
 * What it does: leader election with randomised timeouts (seeded), pre-vote (§9.6), check-quorum with a
 * leader lease, log replication with probe/replicate progress, a bounded in-flight window (messages and bytes)
 * per follower, conflict back-tracking by term hints, proposal batching (one append carries many entries up to
 * a bytes bound), commit only of current-term entries by counting (§5.4.2, Figure 8), a no-op on election,
 * ReadIndex (§6.4), snapshots sent in acknowledged chunks of at most 512 KiB to a follower whose next entry was
 * compacted (§7), membership change one server at a time with learners (§4.1; the change takes effect when
 * its entry is applied), and leadership transfer with TimeoutNow (§3.10).
 *
 * A follower's propose is refused with the leader's id; forwarding is the caller's job (the server forwards
 * requests, not raw entries, so the leader can validate and batch them).
 */
import { assert } from '../../src/lib/assert.js';
import type { Rng } from '../../src/lib/prng.js';
import {
  applyConfChange,
  type ConfChange,
  confChangeProblem,
  decodeConfChange,
  encodeConfChange,
} from './conf.js';
import { SnapshotUnavailableError } from './errors.js';
import { RaftLog } from './log.js';
import type { LogReader } from './log-reader.js';
import {
  type AppendRequest,
  type AppendResponse,
  entriesPerMessageMax,
  type Message,
  type SnapshotChunk,
  snapshotChunkBytesMax,
  type VoteRequest,
} from './messages.js';
import type { ConfState, Entry, HardState, PeerId, Snapshot } from './types.js';
import { hardStateEqual } from './types.js';

export type Role = 'follower' | 'preCandidate' | 'candidate' | 'leader';

export interface RawNodeConfig {
  readonly id: PeerId;
  /**
   * The voters of a new cluster. Ignored when storage holds a membership (from a snapshot): that one is
   * newer. A replica joining an existing cluster passes the membership it is being added to.
   */
  readonly voters: readonly PeerId[];
  /** Learners of a new cluster (see `voters`). */
  readonly learners?: readonly PeerId[];
  readonly storage: LogReader;
  /**
   * The index the state machine already holds when the core starts (etcd's Config.Applied); committed
   * entries after it are handed out again. Default: the storage's snapshot index.
   */
  readonly applied?: number;
  readonly rng: Rng;
  /** Ticks without a leader before a campaign; the actual timeout is random in [this, 2 × this). */
  readonly electionTicks?: number;
  readonly heartbeatTicks?: number;
  readonly preVote?: boolean;
  readonly checkQuorum?: boolean;
  /** Append messages in flight to one follower. */
  readonly inflightMsgsMax?: number;
  /** Entry bytes in flight to one follower. */
  readonly inflightBytesMax?: number;
  /** Entry bytes in one append message. */
  readonly msgBytesMax?: number;
  /** Bytes of proposed but uncommitted entries a leader accepts before refusing proposals. */
  readonly uncommittedBytesMax?: number;
  /** Bytes of snapshot data per InstallSnapshot chunk (at most `snapshotChunkBytesMax`, 512 KiB). */
  readonly snapshotChunkBytes?: number;
}

const defaults = {
  electionTicks: 10,
  heartbeatTicks: 1,
  inflightMsgsMax: 256,
  inflightBytesMax: 32 << 20,
  msgBytesMax: 1 << 20,
  uncommittedBytesMax: 64 << 20,
  snapshotChunkBytes: snapshotChunkBytesMax,
} as const;
assert(defaults.electionTicks > defaults.heartbeatTicks, 'election ticks > heartbeat ticks');

/**
 * After `leaderGone`, a follower campaigns within 1..this many ticks (random), and so does a pre-candidate
 * whose pre-vote went unanswered, instead of a whole election timeout: short, yet spread over a few ticks so
 * that two followers learning it together rarely ask for votes in the same instant and split them.
 */
export const leaderGoneTimeoutTicksMax = 4;
assert(leaderGoneTimeoutTicksMax < defaults.electionTicks, 'leader-gone timeout < election timeout', {
  leaderGoneTimeoutTicksMax,
  electionTicks: defaults.electionTicks,
});

/**
 * Vote rounds of one leader-gone episode that retry on a short timeout. Two survivors that ask within one
 * round trip of each other split the vote; without this their next round waited out a whole election
 * timeout (1,000-1,760 ticks at `electionTicks` 1,000 in `test/raft/core/leader-gone.test.ts`), which is
 * the wait the evidence was meant to save. Bounded, so that under load a cluster whose rounds keep
 * colliding falls back to the whole timeout instead of taking a term every few ticks.
 */
export const leaderGoneVoteRoundsMax = 3;
/**
 * Spread of a leader-gone vote round's retry, in ticks beyond `leaderGoneTimeoutTicksMax`: wider than the
 * first stagger, since the two candidates of a split start their rounds together and only this spread can
 * put them a round trip apart.
 */
export const leaderGoneVoteSpreadTicks = 4 * leaderGoneTimeoutTicksMax;

/** Entries and entry bytes of one append in probe state (it may be sent again every heartbeat). */
export const probeAppendEntriesMax = 64;
export const probeAppendBytesMax = 64 << 10;
assert(probeAppendEntriesMax <= entriesPerMessageMax, 'a probe is a small append', {
  probeAppendEntriesMax,
  entriesPerMessageMax,
});

/** Messages a Ready may carry; past it, further messages wait for the next Ready. */
export const readyMessagesMax = 10_000;
/** Size of a snapshot a follower accepts from a leader, at most (it is assembled in memory). */
export const incomingSnapshotBytesMax = 2 ** 31 - 1;
/** Heartbeat rounds without an acknowledgement before a snapshot chunk is sent again. */
export const snapshotRetryRounds = 3;

export type ProposeRefusal =
  /** Not the leader; `leader` names the one this replica knows of ('' when none). */
  | 'not-leader'
  /** The leader holds `uncommittedBytesMax` of uncommitted entries already. */
  | 'too-many-uncommitted'
  /** A leadership transfer is under way; proposals wait for the new leader. */
  | 'transferring'
  /** A membership change is not applied yet, or the leader has not committed an entry of its term. */
  | 'conf-change-pending'
  /** The membership change does not apply to the current membership (`detail` says why). */
  | 'invalid-conf-change';

/** What a proposal returns: where its entry landed, or why it was refused (a result, not an exception). */
export type ProposeResult =
  | { readonly ok: true; readonly index: number; readonly term: number }
  | {
      readonly ok: false;
      readonly reason: ProposeRefusal;
      readonly leader: PeerId;
      readonly detail?: string;
    };

export interface ReadState {
  readonly context: string;
  readonly index: number;
}

/** ReadIndex requests waiting for a quorum's confirmation, at most; further ones are refused. */
export const pendingReadsMax = 10_000;

export interface SoftState {
  readonly role: Role;
  readonly leader: PeerId;
}

/**
 * One batch of work for the driver. Its duties, in this order:
 * 0. send `earlyMessages` (a leader's appends): at once, before step 1, or with the rest in step 2;
 * 1. persist `entries` (replacing any suffix from their first index) and `hardState`, with fsync when
 *    `mustSync`;
 * 2. only then send `messages` (they may promise what step 1 made durable: votes, acknowledgements);
 * 3. apply `committedEntries` to the state machine, in order;
 * 4. call `advance()`.
 */
export interface Ready {
  /**
   * A snapshot from the leader that replaces the log: persist it (before `entries`, which follow it) and
   * restore the state machine from it before applying `committedEntries`.
   */
  readonly snapshot?: Snapshot;
  /** Present when term, vote or commit changed: persist before sending messages. */
  readonly hardState?: HardState;
  /** New log entries: persist before sending messages. */
  readonly entries: readonly Entry[];
  /**
   * Committed entries to apply, in order, after persisting. A `conf` entry's membership change takes
   * effect in the core at `advance()`; `confState()` tells the membership after it.
   */
  readonly committedEntries: readonly Entry[];
  /** Messages to send after persisting. */
  readonly messages: readonly Message[];
  /**
   * A leader's appends, which may go out before (and while) this Ready is persisted: the leader writes its
   * log in parallel with replicating it (Raft thesis §10.2.1, etcd does the same). Safe because nothing
   * commits on the leader's word until this Ready is persisted: a commit index covering these entries can
   * only be sent or applied in a later Ready. Empty when this Ready changes the term or vote.
   */
  readonly earlyMessages: readonly Message[];
  /**
   * Reads confirmed by a quorum (ReadIndex, §6.4): once the state machine has applied `index`, a read with
   * this `context` may be served and is linearizable.
   */
  readonly readStates: readonly ReadState[];
  /** Present when role or leader changed. */
  readonly softState?: SoftState;
  /** True when `entries` or a changed term/vote must be fsynced before `messages` go out. */
  readonly mustSync: boolean;
}

interface Progress {
  /** Highest index known replicated on the peer. */
  match: number;
  /** Next index to send. */
  next: number;
  /**
   * Probe: one append at a time until the match is found; replicate: pipelined within the window;
   * snapshot: the peer needs entries that were compacted, and receives the snapshot chunk by chunk.
   */
  state: 'probe' | 'replicate' | 'snapshot';
  /** Snapshot state: the snapshot being sent, the next byte to send, heartbeat rounds since the last ack. */
  snapshot: { snap: Snapshot; offset: number; rounds: number } | undefined;
  /** Last index of each append in flight, oldest first, with its bytes. */
  inflight: { index: number; bytes: number }[];
  inflightBytes: number;
  /** Heard from within the current election timeout (check-quorum). */
  recentActive: boolean;
  /** Probe state: an append is outstanding. */
  paused: boolean;
}

function newProgress(next: number, match: number): Progress {
  return {
    match,
    next,
    state: 'probe',
    snapshot: undefined,
    inflight: [],
    inflightBytes: 0,
    recentActive: false,
    paused: false,
  };
}

/** A snapshot being received: its chunks so far. */
interface IncomingSnapshot {
  readonly index: number;
  readonly term: number;
  readonly total: number;
  readonly chunks: Uint8Array[];
  received: number;
}

export class RawNode {
  readonly id: PeerId;
  #conf: ConfState;
  #voters: ReadonlySet<PeerId>;
  readonly #rng: Rng;
  readonly #c: Required<Omit<RawNodeConfig, 'id' | 'voters' | 'learners' | 'storage' | 'rng' | 'applied'>>;
  readonly log: RaftLog;
  #term: number;
  #vote: PeerId;
  #role: Role = 'follower';
  #leader: PeerId = '';
  #electionElapsed = 0;
  #heartbeatElapsed = 0;
  #randomizedElectionTimeout = 0;
  /**
   * Set by `leaderGone` (outside evidence that this term's leader is gone) until a leader is heard from or
   * this replica becomes a candidate: its pre-vote rounds then retry on the short leader-gone timeout.
   */
  #leaderGoneSeen = false;
  /** Vote rounds (terms taken) in the current leader-gone episode; see `leaderGoneVoteRoundsMax`. */
  #leaderGoneVoteRounds = 0;
  #votes = new Map<PeerId, boolean>();
  #progress = new Map<PeerId, Progress>();
  #uncommittedBytes = 0;
  #msgs: Message[] = [];
  /** ReadIndex requests: the commit index at request time and who has confirmed our leadership since. */
  #reads: { context: string; index: number; acks: Set<PeerId> }[] = [];
  #readStates: ReadState[] = [];
  #prevHardState: HardState;
  #prevSoft: SoftState;
  #step: (m: Message) => void;
  #tick: () => void;
  /** What the last ready() handed out, for advance(). */
  #pendingReady:
    | {
        lastEntry: Entry | undefined;
        lastCommitted: number;
        snapshotIndex: number;
        appliedBytes: number;
        confEntries: Entry[];
      }
    | undefined;
  /** The index of the latest membership change proposed; a new one waits until it is applied. */
  #pendingConfIndex = 0;
  /** The voter a leadership transfer is handing over to ('' when none), and ticks since it began. */
  #transferee: PeerId = '';
  #transferElapsed = 0;
  #incoming: IncomingSnapshot | undefined;

  constructor(config: RawNodeConfig) {
    this.id = config.id;
    const stored = config.storage.initialState().confState;
    this.#conf =
      stored.voters.length > 0
        ? stored
        : {
            voters: [...new Set(config.voters)].sort(),
            learners: [...new Set(config.learners ?? [])].filter((p) => !config.voters.includes(p)).sort(),
            votersOutgoing: [],
          };
    this.#voters = new Set(this.#conf.voters);
    this.#rng = config.rng;
    this.#c = {
      electionTicks: config.electionTicks ?? defaults.electionTicks,
      heartbeatTicks: config.heartbeatTicks ?? defaults.heartbeatTicks,
      preVote: config.preVote ?? true,
      checkQuorum: config.checkQuorum ?? true,
      inflightMsgsMax: config.inflightMsgsMax ?? defaults.inflightMsgsMax,
      inflightBytesMax: config.inflightBytesMax ?? defaults.inflightBytesMax,
      msgBytesMax: config.msgBytesMax ?? defaults.msgBytesMax,
      uncommittedBytesMax: config.uncommittedBytesMax ?? defaults.uncommittedBytesMax,
      snapshotChunkBytes: config.snapshotChunkBytes ?? defaults.snapshotChunkBytes,
    };
    assert(
      this.#c.snapshotChunkBytes > 0 && this.#c.snapshotChunkBytes <= snapshotChunkBytesMax,
      'snapshot chunks fit a NATS message',
      { snapshotChunkBytes: this.#c.snapshotChunkBytes },
    );
    assert(this.#c.electionTicks > this.#c.heartbeatTicks, 'election ticks > heartbeat ticks', {
      electionTicks: this.#c.electionTicks,
      heartbeatTicks: this.#c.heartbeatTicks,
    });
    this.log = new RaftLog(config.storage, config.applied);
    const hs = config.storage.initialState().hardState;
    this.#term = hs.term;
    this.#vote = hs.vote;
    this.#prevHardState = hs;
    this.#prevSoft = { role: 'follower', leader: '' };
    this.#step = this.#stepFollower;
    this.#tick = this.#tickElection;
    this.#becomeFollower(this.#term, '');
  }

  // ---- status ----

  get term(): number {
    return this.#term;
  }
  get role(): Role {
    return this.#role;
  }
  get leader(): PeerId {
    return this.#leader;
  }
  /** The membership in force (after every applied change). */
  confState(): ConfState {
    return this.#conf;
  }
  /** The voter a leadership transfer is handing over to, or ''. */
  get transferee(): PeerId {
    return this.#transferee;
  }
  /** Replication progress per peer, for the leader's status page and tests. */
  progress(): ReadonlyMap<PeerId, { readonly match: number; readonly next: number; readonly state: string }> {
    return new Map(
      [...this.#progress].map(([p, pr]) => [p, { match: pr.match, next: pr.next, state: pr.state }]),
    );
  }

  // ---- inputs ----

  tick(): void {
    this.#tick();
  }

  /**
   * Asks for a linearizable read point (ReadIndex, §6.4): the leader notes its commit index and confirms with
   * a heartbeat round that it is still leader; the answer comes as a ReadState in a later Ready. Refused
   * (false) when this replica is not the leader, has not committed an entry of its term yet, or too many reads
   * are pending; the caller retries or goes to the leader.
   */
  readIndex(context: string): boolean {
    if (this.#role !== 'leader' || this.#reads.length >= pendingReadsMax) return false;
    // Until an entry of this term commits, the commit index may lag what an earlier leader committed (§6.4).
    if (this.log.term(this.log.committed) !== this.#term) return false;
    const read = {
      context,
      index: this.log.committed,
      acks: new Set<PeerId>(this.#voters.has(this.id) ? [this.id] : []),
    };
    if (read.acks.size >= this.#quorum()) {
      this.#readStates.push({ context, index: read.index });
      return true;
    }
    this.#reads.push(read);
    this.#broadcastHeartbeat(context);
    return true;
  }

  /** Ticks since this follower last heard from its leader (its election timer); 0 in any other role. */
  get leaderSilentTicks(): number {
    return this.#role === 'follower' ? this.#electionElapsed : 0;
  }

  /**
   * Outside evidence that `leader` is gone (e.g. the transport found nobody subscribed to its subject). A
   * follower of it forgets it (etcd's ForgetLeader): it no longer holds the check-quorum lease for it, so it
   * grants pre-votes at once, and it campaigns within `leaderGoneTimeoutTicksMax` ticks instead of a whole
   * election timeout. Safety does not rest on the evidence: term, vote and log are untouched, and a wrong call
   * only allows an election that the lease would have put off (pre-vote still needs a quorum, and a live
   * leader's next message makes this replica its follower again). False, changing nothing, unless this
   * replica is a follower of `leader`.
   */
  leaderGone(leader: PeerId): boolean {
    if (this.#role !== 'follower' || leader === '' || this.#leader !== leader) return false;
    this.#leader = '';
    this.#leaderGoneSeen = true;
    this.#leaderGoneVoteRounds = 0;
    // Staggered, so that the survivors, who learn it within a round trip of one another, rarely ask for votes
    // at once and split them (a split waits out a whole election timeout): the first voter by id after the
    // gone leader campaigns in 1-2 ticks, the others in 3-4.
    const first = [...this.#voters].filter((v) => v !== leader).sort()[0] === this.id;
    this.#randomizedElectionTimeout =
      this.#electionElapsed + (first ? 1 : leaderGoneTimeoutTicksMax - 1) + this.#rng.int(0, 2);
    return true;
  }

  #leaderGoneTimeout(): number {
    return 1 + this.#rng.int(0, leaderGoneTimeoutTicksMax);
  }

  /** A leader-gone vote round's timeout: never longer than the whole one it replaces. */
  #leaderGoneVoteTimeout(): number {
    return Math.min(
      this.#randomizedElectionTimeout,
      leaderGoneTimeoutTicksMax + this.#rng.int(0, leaderGoneVoteSpreadTicks),
    );
  }

  /** Starts an election now (etcd's MsgHup), through pre-vote when enabled. A leader or a non-voter ignores it. */
  campaign(): void {
    if (this.#role !== 'leader' && this.#promotable()) this.#campaign(this.#c.preVote, false);
  }

  /**
   * Hands leadership to voter `to` (§3.10): the leader stops taking proposals, brings `to` up to date and
   * sends it TimeoutNow, on which it campaigns at once, past every voter's lease. Abandoned after an
   * election timeout. False when this replica is not the leader or `to` is not another voter.
   */
  transferLeadership(to: PeerId): boolean {
    if (this.#role !== 'leader' || to === this.id || !this.#voters.has(to)) return false;
    if (this.#transferee !== to) {
      this.#transferee = to;
      this.#transferElapsed = 0;
    }
    const pr = this.#progress.get(to);
    assert(pr !== undefined, 'a voter has progress on the leader', { to });
    if (pr.match === this.log.lastIndex())
      this.#send({ type: 'timeoutNow', from: this.id, to, term: this.#term });
    else this.#sendAppend(to, pr);
    return true;
  }

  /**
   * Proposes a membership change. One at a time: refused while an earlier change is not applied, and until
   * the leader has committed an entry of its own term (the fix to single-server changes in Ongaro's
   * bug report of 2015). Takes effect on every replica when its entry is applied.
   */
  proposeConfChange(cc: ConfChange): ProposeResult {
    const refused = this.#refuseProposal(0);
    if (refused !== undefined) return refused;
    if (this.#pendingConfIndex > this.log.applied || this.log.term(this.log.committed) !== this.#term)
      return { ok: false, reason: 'conf-change-pending', leader: this.id };
    const problem = confChangeProblem(this.#conf, cc);
    if (problem !== undefined)
      return { ok: false, reason: 'invalid-conf-change', leader: this.id, detail: problem };
    const index = this.log.lastIndex() + 1;
    this.#appendAsLeader([{ term: this.#term, index, type: 'conf', data: encodeConfChange(cc) }]);
    this.#pendingConfIndex = index;
    return { ok: true, index, term: this.#term };
  }

  #refuseProposal(bytes: number): ProposeResult | undefined {
    if (this.#role !== 'leader') return { ok: false, reason: 'not-leader', leader: this.#leader };
    if (this.#transferee !== '') return { ok: false, reason: 'transferring', leader: this.id };
    if (this.#uncommittedBytes > 0 && this.#uncommittedBytes + bytes > this.#c.uncommittedBytesMax) {
      return { ok: false, reason: 'too-many-uncommitted', leader: this.id };
    }
    return undefined;
  }

  /**
   * Proposes commands. On the leader they are appended (one entry each) and replicated; elsewhere the
   * result names the leader to retry at. Never throws for a lost leadership: that is a result.
   */
  propose(commands: readonly Uint8Array[]): ProposeResult {
    const bytes = commands.reduce((n, c) => n + c.length, 0);
    const refused = this.#refuseProposal(bytes);
    if (refused !== undefined) return refused;
    const first = this.log.lastIndex() + 1;
    const entries = commands.map(
      (data, i): Entry => ({ term: this.#term, index: first + i, type: 'normal', data }),
    );
    this.#appendAsLeader(entries);
    this.#uncommittedBytes += bytes;
    return { ok: true, index: this.log.lastIndex(), term: this.#term };
  }

  /** Feeds a message from a peer (already validated by parseMessage at the boundary). */
  step(m: Message): void {
    if (m.to !== this.id) return;
    const isVote = m.type === 'vote' || m.type === 'preVote';
    // A vote request from outside our membership is answered like any other: with membership applied at
    // commit, a lagging replica's view may not hold a voter added since, and refusing it would stall the
    // election (the simulation found this). A removed replica is kept from disrupting by pre-vote and the lease.
    if (m.term > this.#term) {
      // Check-quorum lease: while a live leader was heard within the election timeout, (pre-)votes for a
      // higher term come from a disruptive replica and are ignored, unless a leadership transfer asked
      // for the election.
      if (isVote && m.transfer !== true && this.#inLease()) return;
      // A pre-vote, and a granted pre-vote answer, carry a term the candidate has not taken yet: they never
      // move ours. Anything else from a higher term makes us a follower of that term.
      const keepsTerm = m.type === 'preVote' || (m.type === 'preVoteResp' && !m.reject);
      const fromLeader =
        m.type === 'append' || m.type === 'heartbeat' || m.type === 'snapshot' || m.type === 'timeoutNow';
      if (!keepsTerm) this.#becomeFollower(m.term, fromLeader ? m.from : '');
    } else if (m.term < this.#term) {
      if (m.type === 'append' || m.type === 'heartbeat' || m.type === 'snapshot') {
        // A stale leader: tell it our term so it steps down (with check-quorum, this is what frees it).
        this.#send({
          type: 'appendResp',
          from: this.id,
          to: m.from,
          term: this.#term,
          reject: true,
          index: 0,
          hintIndex: 0,
          hintTerm: 0,
        });
      } else if (m.type === 'preVote') {
        this.#send({ type: 'preVoteResp', from: this.id, to: m.from, term: this.#term, reject: true });
      }
      return;
    }
    if (m.type === 'vote' || m.type === 'preVote') {
      this.#handleVote(m);
      return;
    }
    this.#step(m);
  }

  // ---- output ----

  hasReady(): boolean {
    return (
      this.log.pendingSnapshot !== undefined ||
      this.#msgs.length > 0 ||
      this.#readStates.length > 0 ||
      this.log.unstable.length > 0 ||
      this.log.committed > this.log.applied ||
      !hardStateEqual(this.#hardState(), this.#prevHardState) ||
      this.#softChanged()
    );
  }

  ready(): Ready {
    assert(this.#pendingReady === undefined, 'advance() the previous Ready first');
    const hs = this.#hardState();
    const prev = this.#prevHardState;
    const hsChanged = !hardStateEqual(hs, prev);
    const snapshot = this.log.pendingSnapshot;
    const entries = [...this.log.unstable];
    const committedEntries = this.log.nextCommitted(this.#c.msgBytesMax * 4);
    const all = this.#msgs.splice(0, readyMessagesMax);
    const termOrVote = hs.term !== prev.term || hs.vote !== prev.vote;
    const early = this.#role === 'leader' && !termOrVote;
    const earlyMessages = early ? all.filter((m) => m.type === 'append') : [];
    const messages = early ? all.filter((m) => m.type !== 'append') : all;
    const readStates = this.#readStates;
    this.#readStates = [];
    const soft = { role: this.#role, leader: this.#leader };
    const softChanged = this.#softChanged();
    this.#pendingReady = {
      lastEntry: entries[entries.length - 1],
      lastCommitted:
        committedEntries.length > 0 ? (committedEntries[committedEntries.length - 1] as Entry).index : 0,
      snapshotIndex: snapshot?.meta.index ?? 0,
      appliedBytes: committedEntries.reduce((n, e) => n + e.data.length, 0),
      confEntries: committedEntries.filter((e) => e.type === 'conf'),
    };
    if (hsChanged) this.#prevHardState = hs;
    if (softChanged) this.#prevSoft = soft;
    return {
      ...(snapshot === undefined ? {} : { snapshot }),
      ...(hsChanged ? { hardState: hs } : {}),
      entries,
      committedEntries,
      messages,
      earlyMessages,
      readStates,
      ...(softChanged ? { softState: soft } : {}),
      // A commit-only change need not be fsynced before messages go out (etcd's MustSync): a lost commit
      // index is learned again from the leader.
      mustSync: snapshot !== undefined || entries.length > 0 || termOrVote,
    };
  }

  /** The driver finished the last Ready: entries are persisted, committed entries applied. */
  advance(): void {
    const r = this.#pendingReady;
    assert(r !== undefined, 'advance() without a Ready');
    this.#pendingReady = undefined;
    if (r.snapshotIndex > 0) this.log.snapshotApplied(r.snapshotIndex);
    if (r.lastEntry !== undefined) this.log.stableTo(r.lastEntry.index, r.lastEntry.term);
    if (r.lastCommitted > 0) {
      this.#uncommittedBytes = Math.max(0, this.#uncommittedBytes - r.appliedBytes);
      this.log.appliedTo(r.lastCommitted);
    }
    for (const e of r.confEntries) this.#applyConf(decodeConfChange(e.data));
  }

  /** A committed membership change takes effect (etcd's ApplyConfChange). */
  #applyConf(cc: ConfChange): void {
    if (confChangeProblem(this.#conf, cc) !== undefined) return; // Re-applied after a restart: already in force.
    this.#setConf(applyConfChange(this.#conf, cc));
  }

  #setConf(conf: ConfState): void {
    this.#conf = conf;
    this.#voters = new Set(conf.voters);
    const members = new Set([...conf.voters, ...conf.learners]);
    if (this.#role !== 'leader') {
      if (!this.#voters.has(this.id) && this.#role !== 'follower') this.#becomeFollower(this.#term, '');
      return;
    }
    for (const [p, pr] of [...this.#progress]) {
      if (members.has(p)) continue;
      // A farewell heartbeat: the removed member learns the commit of its own removal (it holds the entry
      // once its match reaches it), so it can see it is out and stop, instead of waiting for a leader that
      // no longer talks to it. It carries no entries and asks for nothing; a lost one costs only that notice.
      if (p !== this.id)
        this.#send({
          type: 'heartbeat',
          from: this.id,
          to: p,
          term: this.#term,
          commit: Math.min(pr.match, this.log.committed),
        });
      this.#progress.delete(p);
    }
    for (const p of members) {
      if (this.#progress.has(p)) continue;
      const pr = newProgress(this.log.lastIndex() + 1, 0);
      this.#progress.set(p, pr);
      this.#sendAppend(p, pr);
    }
    if (this.#transferee !== '' && !this.#voters.has(this.#transferee)) this.#transferee = '';
    if (!this.#voters.has(this.id)) {
      // This leader was removed: hand over to the most up-to-date voter so the group need not wait for an
      // election timeout, then step down for good (a non-voter never campaigns).
      let best: [PeerId, number] | undefined;
      for (const [p, pr] of this.#progress)
        if (this.#voters.has(p) && (best === undefined || pr.match > best[1])) best = [p, pr.match];
      if (best !== undefined && best[1] === this.log.lastIndex())
        this.#send({ type: 'timeoutNow', from: this.id, to: best[0], term: this.#term });
      this.#becomeFollower(this.#term, '');
      return;
    }
    // A smaller quorum may commit what the larger one could not yet.
    this.#maybeCommit();
  }

  // ---- roles ----

  #hardState(): HardState {
    return { term: this.#term, vote: this.#vote, commit: this.log.committed };
  }

  #softChanged(): boolean {
    return this.#prevSoft.role !== this.#role || this.#prevSoft.leader !== this.#leader;
  }

  #resetTimers(): void {
    this.#electionElapsed = 0;
    this.#heartbeatElapsed = 0;
    this.#randomizedElectionTimeout = this.#c.electionTicks + this.#rng.int(0, this.#c.electionTicks);
  }

  #promotable(): boolean {
    return this.#voters.has(this.id);
  }

  #becomeFollower(term: number, leader: PeerId): void {
    // Reads waiting for confirmation can no longer get it; the driver rejects them when it sees the role change.
    this.#reads = [];
    this.#transferee = '';
    if (term !== this.#term) {
      this.#term = term;
      this.#vote = '';
    }
    this.#role = 'follower';
    this.#leader = leader;
    if (leader !== '') this.#leaderGoneSeen = false;
    this.#step = this.#stepFollower;
    this.#tick = this.#tickElection;
    this.#resetTimers();
  }

  /**
   * Starts a vote round. A pre-candidate (§9.6) asks whether it could win before bumping its term, so a
   * partitioned replica that rejoins does not force a needless election; a candidate takes a new term and
   * votes for itself.
   */
  #becomeCampaigner(role: 'preCandidate' | 'candidate'): void {
    if (role === 'candidate') {
      this.#term += 1;
      this.#vote = this.id;
    }
    this.#role = role;
    this.#leader = '';
    this.#votes = new Map();
    this.#step = this.#stepCandidate;
    this.#tick = this.#tickElection;
    this.#resetTimers();
    // A pre-vote that a peer still in its lease ignored is asked again soon once the leader is known gone
    // (that peer learns it too, and then grants). A real vote round takes a term, so only the first
    // `leaderGoneVoteRoundsMax` of an episode retry soon (a split vote of two survivors that asked together),
    // on a wider spread; later ones keep the whole timeout, as repeating them quickly under load could keep
    // preempting themselves.
    if (role === 'candidate') {
      if (this.#leaderGoneSeen && this.#leaderGoneVoteRounds < leaderGoneVoteRoundsMax) {
        this.#leaderGoneVoteRounds++;
        this.#randomizedElectionTimeout = this.#leaderGoneVoteTimeout();
      } else this.#leaderGoneSeen = false;
    } else if (this.#leaderGoneSeen) this.#randomizedElectionTimeout = this.#leaderGoneTimeout();
  }

  #becomeLeader(): void {
    assert(this.#role === 'candidate', 'only a candidate becomes leader', { role: this.#role });
    this.#role = 'leader';
    this.#leader = this.id;
    this.#leaderGoneSeen = false;
    this.#step = this.#stepLeader;
    this.#tick = this.#tickHeartbeat;
    this.#resetTimers();
    this.#progress = new Map();
    this.#transferee = '';
    const last = this.log.lastIndex();
    for (const p of [...this.#conf.voters, ...this.#conf.learners]) {
      const pr = newProgress(last + 1, p === this.id ? last : 0);
      pr.recentActive = p === this.id;
      this.#progress.set(p, pr);
    }
    // The log may hold a membership change from an earlier term that is not applied yet: no new change
    // until everything up to here is applied (etcd does the same).
    this.#pendingConfIndex = last;
    this.#uncommittedBytes = 0;
    // A no-op of the new term: committing it commits everything before it (§5.4.2, §8).
    this.#appendAsLeader([{ term: this.#term, index: last + 1, type: 'normal', data: new Uint8Array(0) }]);
  }

  /** `transfer`: the election a leadership transfer asked for; voters set their lease aside for it. */
  #campaign(pre: boolean, transfer: boolean): void {
    this.#becomeCampaigner(pre ? 'preCandidate' : 'candidate');
    const term = pre ? this.#term + 1 : this.#term;
    this.#votes.set(this.id, true);
    if (this.#quorumReached()) {
      // A single-voter cluster wins at once.
      if (pre) this.#campaign(false, transfer);
      else this.#becomeLeader();
      return;
    }
    for (const p of this.#voters) {
      if (p === this.id) continue;
      this.#send({
        type: pre ? 'preVote' : 'vote',
        from: this.id,
        to: p,
        term,
        lastIndex: this.log.lastIndex(),
        lastTerm: this.log.lastTerm(),
        ...(transfer ? { transfer: true } : {}),
      });
    }
  }

  #quorum(): number {
    return Math.floor(this.#voters.size / 2) + 1;
  }

  #quorumReached(): boolean {
    let granted = 0;
    for (const [p, g] of this.#votes) if (g && this.#voters.has(p)) granted++;
    return granted >= this.#quorum();
  }

  #quorumLost(): boolean {
    let rejected = 0;
    for (const [p, g] of this.#votes) if (!g && this.#voters.has(p)) rejected++;
    return rejected >= this.#quorum();
  }

  /** True while a leader was heard within the election timeout (the check-quorum lease). */
  #inLease(): boolean {
    return this.#c.checkQuorum && this.#leader !== '' && this.#electionElapsed < this.#c.electionTicks;
  }

  // ---- ticks ----

  #tickElection(): void {
    this.#electionElapsed++;
    if (this.#electionElapsed >= this.#randomizedElectionTimeout && this.#promotable()) {
      this.#electionElapsed = 0;
      this.#campaign(this.#c.preVote, false);
    }
  }

  #tickHeartbeat(): void {
    this.#heartbeatElapsed++;
    this.#electionElapsed++;
    if (this.#electionElapsed >= this.#c.electionTicks) {
      this.#electionElapsed = 0;
      if (this.#c.checkQuorum) {
        // Check-quorum: a leader that has not heard from a majority in an election timeout steps down,
        // so a partitioned leader stops accepting proposals it can never commit.
        let active = 0;
        for (const [p, pr] of this.#progress) {
          if (this.#voters.has(p) && (p === this.id || pr.recentActive)) active++;
          pr.recentActive = false;
        }
        if (active < this.#quorum()) {
          this.#becomeFollower(this.#term, '');
          return;
        }
      }
    }
    if (this.#transferee !== '' && ++this.#transferElapsed >= this.#c.electionTicks) this.#transferee = '';
    if (this.#heartbeatElapsed >= this.#c.heartbeatTicks) {
      this.#heartbeatElapsed = 0;
      this.#broadcastHeartbeat(undefined);
      // A snapshot chunk not acknowledged for a few rounds was lost: send it again.
      for (const [p, pr] of this.#progress) {
        if (pr.snapshot !== undefined && ++pr.snapshot.rounds >= snapshotRetryRounds)
          this.#sendSnapshotChunk(p, pr);
      }
    }
  }

  /**
   * Heartbeats every follower. The commit sent is capped at what the follower is known to hold, so it never
   * learns a commit index past its own log; `context` marks a ReadIndex confirmation round.
   */
  #broadcastHeartbeat(context: string | undefined): void {
    for (const [p, pr] of this.#progress) {
      if (p === this.id) continue;
      const commit = Math.min(pr.match, this.log.committed);
      this.#send({
        type: 'heartbeat',
        from: this.id,
        to: p,
        term: this.#term,
        commit,
        ...(context === undefined ? {} : { context }),
      });
    }
  }

  // ---- steps ----

  #handleVote(m: VoteRequest): void {
    const pre = m.type === 'preVote';
    // Grant when the log is up to date and, for a real vote, we have not voted for someone else this term.
    // A pre-vote for a future term is granted on the log alone; we do not record it.
    const canVote = pre
      ? m.term > this.#term || (this.#vote === '' && this.#leader === '')
      : this.#vote === '' || this.#vote === m.from;
    const grant =
      canVote &&
      this.log.isUpToDate(m.lastIndex, m.lastTerm) &&
      !(pre && m.transfer !== true && this.#inLease() && m.term <= this.#term);
    // A granted pre-vote echoes the term asked for (the candidate has not taken it yet); a refusal carries
    // our own term, so a candidate behind us learns it and one ahead of us ignores it (etcd does the same:
    // echoing the asked term in a refusal made candidates give up a pre-vote that a quorum was granting;
    // the simulation found it).
    this.#send({
      type: pre ? 'preVoteResp' : 'voteResp',
      from: this.id,
      to: m.from,
      term: pre && grant ? m.term : this.#term,
      reject: !grant,
    });
    if (grant && !pre) {
      this.#vote = m.from;
      this.#electionElapsed = 0;
    }
  }

  #stepFollower(m: Message): void {
    if (m.type === 'append' || m.type === 'heartbeat' || m.type === 'snapshot') {
      // Word from the leader of our term: it is alive, and it is the leader.
      this.#electionElapsed = 0;
      this.#leader = m.from;
      this.#leaderGoneSeen = false;
    }
    switch (m.type) {
      case 'append':
        this.#handleAppend(m);
        return;
      case 'heartbeat':
        this.log.commitTo(Math.min(m.commit, this.log.lastIndex()));
        this.#send({
          type: 'heartbeatResp',
          from: this.id,
          to: m.from,
          term: this.#term,
          ...(m.context === undefined ? {} : { context: m.context }),
        });
        return;
      case 'snapshot':
        this.#handleSnapshot(m);
        return;
      case 'timeoutNow':
        // The leader hands over: campaign now, without pre-vote, past the voters' leases.
        if (this.#promotable()) this.#campaign(false, true);
        return;
      default:
        return;
    }
  }

  #stepCandidate(m: Message): void {
    switch (m.type) {
      case 'append':
      case 'heartbeat':
      case 'snapshot':
        // A leader of our term exists: follow it.
        this.#becomeFollower(this.#term, m.from);
        this.#stepFollower(m);
        return;
      case 'voteResp':
      case 'preVoteResp': {
        if ((m.type === 'preVoteResp') !== (this.#role === 'preCandidate')) return;
        this.#votes.set(m.from, !m.reject);
        if (this.#quorumReached()) {
          if (this.#role === 'preCandidate') this.#campaign(false, false);
          else this.#becomeLeader();
        } else if (this.#quorumLost()) {
          this.#becomeFollower(this.#term, '');
        }
        return;
      }
      default:
        return;
    }
  }

  #stepLeader(m: Message): void {
    const pr = this.#progress.get(m.from);
    if (pr === undefined) return;
    pr.recentActive = true;
    switch (m.type) {
      case 'appendResp':
        this.#handleAppendResponse(m, pr);
        return;
      case 'heartbeatResp':
        if (m.context !== undefined) this.#confirmRead(m.context, m.from);
        // The peer is alive: a probe whose append was lost may go again, and a full window whose appends
        // were lost frees a slot, so replication never stalls on dropped messages.
        pr.paused = false;
        if (pr.state === 'replicate' && pr.inflight.length >= this.#c.inflightMsgsMax) {
          pr.inflightBytes -= pr.inflight.shift()?.bytes ?? 0;
        }
        if (pr.match < this.log.lastIndex()) this.#sendAppend(m.from, pr);
        else if (m.from === this.#transferee)
          // The transfer target is up to date and still a follower: its TimeoutNow was lost; send it again.
          this.#send({ type: 'timeoutNow', from: this.id, to: m.from, term: this.#term });
        return;
      case 'snapshotResp':
        if (pr.snapshot !== undefined && pr.snapshot.snap.meta.index === m.index && m.offset > 0) {
          pr.snapshot.offset = Math.min(m.offset, pr.snapshot.snap.data.length);
          if (pr.snapshot.offset < pr.snapshot.snap.data.length) this.#sendSnapshotChunk(m.from, pr);
        } else if (pr.snapshot !== undefined && pr.snapshot.snap.meta.index === m.index) {
          // The follower holds nothing of this snapshot (it restarted, or the first chunk was lost).
          pr.snapshot.offset = 0;
          this.#sendSnapshotChunk(m.from, pr);
        }
        return;
      default:
        return;
    }
  }

  /** Starts sending the latest snapshot to a peer whose next entry was compacted away. */
  #startSnapshot(to: PeerId, pr: Progress): void {
    let snap: Snapshot;
    try {
      snap = this.log.storage.snapshot();
    } catch (err) {
      if (err instanceof SnapshotUnavailableError) return; // Being written: the next heartbeat round retries.
      throw err;
    }
    assert(snap.meta.index >= pr.next - 1, 'the snapshot covers what the log no longer holds', {
      snapshot: snap.meta.index,
      next: pr.next,
    });
    pr.state = 'snapshot';
    pr.snapshot = { snap, offset: 0, rounds: 0 };
    pr.inflight = [];
    pr.inflightBytes = 0;
    pr.paused = false;
    this.#sendSnapshotChunk(to, pr);
  }

  #sendSnapshotChunk(to: PeerId, pr: Progress): void {
    const s = pr.snapshot;
    if (s === undefined) return;
    const total = s.snap.data.length;
    const data = s.snap.data.subarray(s.offset, Math.min(total, s.offset + this.#c.snapshotChunkBytes));
    s.rounds = 0;
    this.#send({
      type: 'snapshot',
      from: this.id,
      to,
      term: this.#term,
      index: s.snap.meta.index,
      snapTerm: s.snap.meta.term,
      conf: s.snap.meta.conf,
      offset: s.offset,
      total,
      data,
      done: s.offset + data.length === total,
    });
  }

  /** A chunk of InstallSnapshot: collect it; on the last one, install the snapshot (§7). */
  #handleSnapshot(m: SnapshotChunk): void {
    const ack = (offset: number): void =>
      this.#send({
        type: 'snapshotResp',
        from: this.id,
        to: m.from,
        term: this.#term,
        index: m.index,
        offset,
      });
    const installed = (index: number): void =>
      this.#send({
        type: 'appendResp',
        from: this.id,
        to: m.from,
        term: this.#term,
        reject: false,
        index,
        hintIndex: 0,
        hintTerm: 0,
      });
    if (m.index <= this.log.committed) {
      // Already hold (and committed) everything it covers.
      this.#incoming = undefined;
      installed(this.log.committed);
      return;
    }
    let inc = this.#incoming;
    if (inc === undefined || inc.index !== m.index || inc.term !== m.snapTerm) {
      if (m.offset !== 0 || m.total > incomingSnapshotBytesMax) {
        ack(0);
        return;
      }
      inc = { index: m.index, term: m.snapTerm, total: m.total, chunks: [], received: 0 };
      this.#incoming = inc;
    }
    if (m.offset !== inc.received || m.total !== inc.total) {
      ack(inc.received); // A duplicate or out-of-order chunk: say where we are.
      return;
    }
    // Copied: the transport may reuse the buffer the chunk was decoded from.
    inc.chunks.push(m.data.slice());
    inc.received += m.data.length;
    if (!m.done) {
      ack(inc.received);
      return;
    }
    this.#incoming = undefined;
    const data = new Uint8Array(inc.total);
    let at = 0;
    for (const c of inc.chunks) {
      data.set(c, at);
      at += c.length;
    }
    if (this.log.matchTerm(m.index, m.snapTerm)) {
      // Our log already holds the snapshot's last entry: the prefix matches, only the commit moves.
      this.log.commitTo(m.index);
    } else {
      this.log.restore({ meta: { index: m.index, term: m.snapTerm, conf: m.conf }, data });
      if (m.conf.voters.length > 0) this.#setConf(m.conf);
    }
    installed(m.index);
  }

  /** A quorum confirmed our leadership after this read was asked: it and every earlier read are ready. */
  #confirmRead(context: string, from: PeerId): void {
    const at = this.#reads.findIndex((r) => r.context === context);
    if (at < 0) return;
    const read = this.#reads[at] as { context: string; index: number; acks: Set<PeerId> };
    if (this.#voters.has(from)) read.acks.add(from);
    if (read.acks.size < this.#quorum()) return;
    for (const r of this.#reads.splice(0, at + 1))
      this.#readStates.push({ context: r.context, index: r.index });
  }

  #handleAppend(m: AppendRequest): void {
    if (m.prevIndex < this.log.committed) {
      // Already have (and committed) past prevIndex: acknowledge what we hold.
      this.#send({
        type: 'appendResp',
        from: this.id,
        to: m.from,
        term: this.#term,
        reject: false,
        index: this.log.committed,
        hintIndex: 0,
        hintTerm: 0,
      });
      return;
    }
    if (this.log.matchTerm(m.prevIndex, m.prevTerm)) {
      const last = this.log.appendAfter(m.prevIndex, m.entries);
      this.log.commitTo(Math.min(m.commit, last));
      this.#send({
        type: 'appendResp',
        from: this.id,
        to: m.from,
        term: this.#term,
        reject: false,
        index: last,
        hintIndex: 0,
        hintTerm: 0,
      });
      return;
    }
    // Conflict: hint the highest index at or below min(prevIndex, lastIndex) whose term is <= prevTerm, so the
    // leader can skip every entry of a term we do not share in one round trip.
    let hintIndex = Math.min(m.prevIndex, this.log.lastIndex());
    while (hintIndex > this.log.committed && (this.log.term(hintIndex) ?? 0) > m.prevTerm) hintIndex--;
    this.#send({
      type: 'appendResp',
      from: this.id,
      to: m.from,
      term: this.#term,
      reject: true,
      index: m.prevIndex,
      hintIndex,
      hintTerm: this.log.term(hintIndex) ?? 0,
    });
  }

  #handleAppendResponse(m: AppendResponse, pr: Progress): void {
    if (pr.state === 'snapshot') {
      // Only the acknowledgement of the installed snapshot (or anything newer) ends the snapshot state.
      if (m.reject || pr.snapshot === undefined || m.index < pr.snapshot.snap.meta.index) return;
      pr.state = 'probe';
      pr.snapshot = undefined;
      pr.next = m.index + 1;
    }
    if (m.reject) {
      // Stale rejections are ignored: one for an index already known to match, or, while probing, one that
      // does not answer the probe just sent.
      if (m.index <= pr.match) return;
      if (pr.state === 'probe' && m.index !== pr.next - 1) return;
      let next = Math.min(m.index, m.hintIndex + 1);
      // Leader-side step (etcd's findConflictByTerm): skip our own entries of terms above the hint's term.
      while (next - 1 > pr.match && (this.log.term(next - 1) ?? 0) > m.hintTerm) next--;
      pr.next = Math.max(pr.match + 1, next);
      pr.state = 'probe';
      pr.inflight = [];
      pr.inflightBytes = 0;
      pr.paused = false;
      this.#sendAppend(m.from, pr);
      return;
    }
    pr.paused = false;
    if (m.index > pr.match) {
      pr.match = m.index;
      pr.next = Math.max(pr.next, m.index + 1);
      if (pr.state === 'probe') pr.state = 'replicate';
      while (pr.inflight.length > 0 && (pr.inflight[0]?.index ?? 0) <= m.index) {
        pr.inflightBytes -= pr.inflight.shift()?.bytes ?? 0;
      }
      this.#maybeCommit();
    }
    if (m.from === this.#transferee && pr.match === this.log.lastIndex()) {
      this.#send({ type: 'timeoutNow', from: this.id, to: m.from, term: this.#term });
    }
    while (pr.next <= this.log.lastIndex() && this.#canSend(pr)) this.#sendAppend(m.from, pr);
  }

  #canSend(pr: Progress): boolean {
    if (pr.state === 'snapshot') return false;
    if (pr.state === 'probe') return !pr.paused;
    return pr.inflight.length < this.#c.inflightMsgsMax && pr.inflightBytes < this.#c.inflightBytesMax;
  }

  #sendAppend(to: PeerId, pr: Progress): void {
    if (!this.#canSend(pr)) return;
    const prevIndex = pr.next - 1;
    const prevTerm = this.log.term(prevIndex);
    if (prevTerm === undefined || pr.next < this.log.firstIndex()) {
      // The entries this peer needs were compacted into a snapshot.
      this.#startSnapshot(to, pr);
      return;
    }
    // A probe goes again on every heartbeat answer (each tick) until the follower accepts one, so it carries
    // little: a full one (512 KiB over NATS) every 20 ms to a follower catching up after a restart kept the
    // leader's event loop encoding for seconds (the multi-second failovers of the chaos runs). Once a probe
    // is accepted, the replicate state sends full appends under the in-flight window.
    const probing = pr.state === 'probe';
    const entries =
      pr.next <= this.log.lastIndex()
        ? this.log.slice(
            pr.next,
            Math.min(
              this.log.lastIndex() + 1,
              pr.next + (probing ? probeAppendEntriesMax : entriesPerMessageMax),
            ),
            probing ? Math.min(this.#c.msgBytesMax, probeAppendBytesMax) : this.#c.msgBytesMax,
          )
        : [];
    this.#send({
      type: 'append',
      from: this.id,
      to,
      term: this.#term,
      prevIndex,
      prevTerm,
      entries,
      commit: this.log.committed,
    });
    if (pr.state === 'probe') pr.paused = true;
    else if (entries.length > 0) {
      const last = (entries[entries.length - 1] as Entry).index;
      const bytes = entries.reduce((n, e) => n + e.data.length, 0);
      pr.inflight.push({ index: last, bytes });
      pr.inflightBytes += bytes;
      pr.next = last + 1;
    }
  }

  #appendAsLeader(entries: readonly Entry[]): void {
    this.log.append(entries);
    const self = this.#progress.get(this.id);
    if (self !== undefined) {
      self.match = this.log.lastIndex();
      self.next = self.match + 1;
    }
    for (const [p, pr] of this.#progress) if (p !== this.id) this.#sendAppend(p, pr);
    this.#maybeCommit();
  }

  /** Commits the highest index a quorum holds, if it is of the current term (§5.4.2: never count older terms). */
  #maybeCommit(): void {
    const matches: number[] = [];
    for (const [p, pr] of this.#progress) if (this.#voters.has(p)) matches.push(pr.match);
    matches.sort((a, b) => b - a);
    const candidate = matches[this.#quorum() - 1] ?? 0;
    if (candidate > this.log.committed && this.log.term(candidate) === this.#term) {
      this.log.commitTo(candidate);
      for (const [p, pr] of this.#progress)
        if (p !== this.id && pr.match < this.log.lastIndex()) this.#sendAppend(p, pr);
    }
  }

  #send(m: Message): void {
    this.#msgs.push(m);
  }
}
