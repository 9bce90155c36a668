/**
 * RaftNode: the asynchronous driver around the pure core. It ticks the core on a timer, feeds it messages from
 * the transport, and carries out each Ready in the order the Ready documents: persist (fsync when asked), then
 * send, then apply committed entries to the state machine, then advance. Proposals resolve with the state
 * machine's result for their own entry, matched by (index, term): an entry replaced by another leader's
 * rejects with ProposalDroppedError, never with someone else's result.
 *
 * `read()` is a ReadIndex barrier for linearizable reads. Not yet: snapshots (the core does not send them; on
 * restart the log is replayed from index 1), membership and leadership transfer.
 */
import { assert } from '../src/lib/assert.js';
import type { Rng } from '../src/lib/prng.js';
import type { Message } from './core/messages.js';
import { RawNode, type RawNodeConfig, type Role } from './core/raw-node.js';
import type { Entry, PeerId } from './core/types.js';
import { NotLeaderError, ProposalDroppedError, RaftClosedError, TimeoutError } from './errors.js';
import type { StateMachine } from './state-machine.js';
import type { Storage } from './storage/storage.js';
import type { Transport } from './transport.js';

/** Proposals waiting for their entry to commit, at most. */
export const pendingProposalsMax = 100_000;

export interface RaftNodeOptions<R> {
  readonly id: PeerId;
  readonly voters: readonly PeerId[];
  readonly storage: Storage;
  readonly transport: Transport<Message>;
  readonly stateMachine: StateMachine<R>;
  readonly rng: Rng;
  /** Milliseconds per core tick. Default 100 (election after 1–2 s with the default 10 ticks). */
  readonly tickMs?: number;
  /** How long a proposal may wait for its commit. Default 10 s. */
  readonly proposalTimeoutMs?: number;
  readonly core?: Partial<Omit<RawNodeConfig, 'id' | 'voters' | 'storage' | 'rng'>>;
}

interface Pending<R> {
  readonly term: number;
  readonly resolve: (r: R) => void;
  readonly reject: (e: Error) => void;
  readonly timer: ReturnType<typeof setTimeout>;
}

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
      timer: ReturnType<typeof setTimeout>;
    }
  >();
  #readSeq = 0;
  readonly #ticker: ReturnType<typeof setInterval>;
  #loop: Promise<void> | undefined;
  #again = false;
  #closed = false;
  /** A fatal storage failure: the node stops, because memory is now ahead of disk. */
  #failure: unknown;

  constructor(options: RaftNodeOptions<R>) {
    this.#o = options;
    this.#core = new RawNode({
      id: options.id,
      voters: options.voters,
      storage: options.storage,
      rng: options.rng,
      ...options.core,
    });
    options.transport.onMessage((m) => {
      if (this.#closed) return;
      this.#core.step(m);
      this.#kick();
    });
    this.#ticker = setInterval(() => {
      this.#core.tick();
      this.#kick();
    }, options.tickMs ?? 100);
    this.#kick();
  }

  status(): { id: PeerId; role: Role; term: number; leader: PeerId; commit: number; applied: number } {
    const log = this.#core.log;
    return {
      id: this.#o.id,
      role: this.#core.role,
      term: this.#core.term,
      leader: this.#core.leader,
      commit: log.committed,
      applied: log.applied,
    };
  }

  /** Proposes one command; resolves with the state machine's result once it is committed and applied. */
  propose(data: Uint8Array): Promise<R> {
    if (this.#closed) return Promise.reject(new RaftClosedError('raft node is closed'));
    if (this.#pending.size >= pendingProposalsMax)
      return Promise.reject(new TimeoutError('too many proposals pending'));
    const r = this.#core.propose([data]);
    if (!r.ok) return Promise.reject(new NotLeaderError(r.leader));
    return new Promise<R>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(r.index);
        reject(
          new TimeoutError(
            `proposal at index ${r.index} not committed within ${this.#o.proposalTimeoutMs ?? 10_000} ms`,
          ),
        );
      }, this.#o.proposalTimeoutMs ?? 10_000);
      this.#pending.set(r.index, { term: r.term, resolve, reject, timer });
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
      const timer = setTimeout(() => {
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
        clearTimeout(r.timer);
        this.#reads.delete(context);
        r.resolve();
      } else if (r.index === undefined && this.#core.role !== 'leader') {
        clearTimeout(r.timer);
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
    this.#loop = this.#run().finally(() => {
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
      try {
        // 1. Persist before anything that depends on it is sent.
        await this.#o.storage.save(
          { entries: rd.entries, ...(rd.hardState === undefined ? {} : { hardState: rd.hardState }) },
          rd.mustSync,
        );
      } catch (err) {
        this.#fail(err);
        return;
      }
      // 2. Send.
      if (rd.messages.length > 0) this.#o.transport.send(rd.messages);
      // 3. Apply, matching each entry to the proposal made for it.
      for (const e of rd.committedEntries) this.#apply(e);
      for (const rs of rd.readStates) {
        const r = this.#reads.get(rs.context);
        if (r !== undefined) r.index = rs.index;
      }
      // 4. Advance; then reads whose index is applied may go.
      this.#core.advance();
      this.#settleReads();
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
      clearTimeout(waiting.timer);
      this.#pending.delete(e.index);
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
    clearTimeout(p.timer);
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
    clearInterval(this.#ticker);
    await this.#loop;
    for (const [index, p] of [...this.#pending])
      this.#settle(
        index,
        p,
        new RaftClosedError('raft node closed', this.#failure === undefined ? {} : { cause: this.#failure }),
      );
    await this.#o.transport.close();
    await this.#o.storage.close();
    assert(this.#pending.size === 0, 'no proposal left pending after close');
  }
}
