/**
 * Stage 4b — the bin-packing walk of one request class, kept for the whole batch instead of redone per request.
 *
 * A bin-packing walk visits the ready nodes in walk order — free-capacity bucket ascending from the request's
 * own, then slot ascending — and offers the first `candidateLimit` feasible ones. Which nodes those are depends
 * only on the request's walk class: shape, GPU need and constraints (feasibility with no group rule reads
 * nothing else), and on the nodes' numbers. So a class keeps, across the requests of one batch:
 *
 * - `frontier`: a walk position; every node before it has been visited;
 * - the candidates: exactly the feasible nodes before the frontier, in walk order, at most `candidateLimit`,
 *   each with the node version it was checked at (and, once asked, its score for a plain request).
 *
 * Within a batch only placements write, and a write bumps the node's version. A node can come to sit before
 * the frontier only by entering a bucket, which the builder logs (IndexBuilder.bucketEntries). So before each
 * request of the class, the candidates whose version moved and the nodes that entered a bucket up to the
 * frontier's since the class last looked are re-checked: each leaves the list, and re-enters at its current
 * position when it is feasible and before the frontier (past the limit, the last candidate drops back behind a
 * frontier moved onto it). Then the walk resumes at the frontier until the list is full or the buckets end.
 * The list is then what a fresh walk on the current index would offer, so a batch places each request where
 * planning it alone would; but each node is visited about once per class per batch rather than once per
 * request, and a run of requests of one class costs the re-checks and the scores of changed nodes only.
 *
 * A fresh walk has no `visitAfterFirstMax` bound here (the bound counted visits, which move as nodes move
 * between buckets, so it cannot be kept incrementally); the frontier bounds the cost instead: a class visits
 * each node at most once per batch plus once per change. The list is valid only for a builder that does
 * nothing but allocate (planBatch's), which never removes a node or reuses its slot.
 */
import { bucketCount, bucketOf, capacityKey, type IndexReader, nodesMax } from '../cluster-index.js';
import type { GpuRequest } from '../types.js';
import { feasible } from './feasibility.js';
import { passMaskOf } from './pass-mask.js';
import type { CompiledRequest } from './request.js';

/** A walk position: bucket, then slot. Slots are below nodesMax, so the pair packs into one safe integer. */
function positionOf(bucket: number, slot: number): number {
  return bucket * nodesMax + slot;
}

/**
 * Bucket entries a class re-checks to catch up before it walks afresh instead. A re-check costs about as much
 * as a visit; a fresh walk visits at least `candidateLimit` nodes (more when many fail the class or do not
 * fit), so catching up pays only while few nodes moved since the class last looked.
 */
export const catchUpEntriesMax = 64;

/** The walk position past every bucket: the walk is exhausted. */
const positionEnd = positionOf(bucketCount, 0);

export class ClassWalk {
  /** Candidates [0, count): feasible slots before the frontier, in walk order. */
  slots: Int32Array;
  count = 0;
  /** Per candidate: its walk position, and the node version it was checked at. */
  #positions: Float64Array;
  #versions: Int32Array;
  /** Per candidate: its strategy score (score-binpack.ts) for the class, NaN until asked; see select.ts. */
  fitScores: Float64Array;
  #frontier = 0;
  /** Per bucket: how many of the builder's entries into it this class has taken in. */
  readonly #entriesRead = new Int32Array(bucketCount);
  #low = 0;
  #limit = 0;
  /** Nodes to re-check, reused between requests. */
  readonly #stale: number[] = [];
  readonly #visit: (slot: number) => boolean;
  #req: CompiledRequest | undefined = undefined;
  #index: IndexReader | undefined = undefined;

  /** The walk class's shape (with its signature, which the batch cache keys on). */
  memory = 0;
  disk = 0;
  gpu: GpuRequest | undefined = undefined;

  constructor(index: IndexReader, req: CompiledRequest, limit: number) {
    const size = ClassWalk.#size(index, limit);
    this.slots = new Int32Array(size);
    this.#positions = new Float64Array(size);
    this.#versions = new Int32Array(size);
    this.fitScores = new Float64Array(size);
    this.#visit = (slot) => this.#visitNext(slot);
    this.reset(index, req, limit);
  }

  /** One spare entry: an insertion into a full list overflows by one before the last drops out. */
  static #size(index: IndexReader, limit: number): number {
    // The list never holds more than every slot (a limit may be "unbounded" in tests).
    return Math.min(limit, index.slotCount) + 1;
  }

  /**
   * Makes this walk a fresh one for `req`'s class, reusing its arrays when they are large enough: batches take
   * their walks from a pool (request.ts), because ~100 walks of four typed arrays each per batch made each
   * scavenge sweep hundreds of array buffers.
   */
  reset(index: IndexReader, req: CompiledRequest, limit: number): this {
    this.memory = req.memory;
    this.disk = req.disk;
    this.gpu = req.gpu;
    this.#low = bucketOf(capacityKey(req.cpu, req.memory, req.disk));
    this.#limit = Math.min(limit, index.slotCount);
    const size = ClassWalk.#size(index, limit);
    if (this.slots.length < size) {
      this.slots = new Int32Array(size);
      this.#positions = new Float64Array(size);
      this.#versions = new Int32Array(size);
      this.fitScores = new Float64Array(size);
    }
    this.#req = undefined;
    this.#index = undefined;
    this.#restart(index);
    return this;
  }

  /**
   * Brings the candidates up to date with the index; afterwards [0, count) of `slots` are the first `limit`
   * feasible nodes in walk order (fewer only when the walk reached the end). `req` must be of this walk class.
   */
  refresh(index: IndexReader, req: CompiledRequest): void {
    // The list is reused with a count: `length = 0` would drop its backing store every request.
    const stale = this.#stale;
    let staleCount = 0;
    for (let i = 0; i < this.count; i++) {
      const slot = this.slots[i] as number;
      if (index.versionOf(slot) !== this.#versions[i]) stale[staleCount++] = slot;
    }
    const last = Math.min(bucketCount - 1, Math.floor(this.#frontier / nodesMax));
    let behind = 0;
    for (let b = this.#low; b <= last; b++)
      behind += index.bucketEntries(b).length - (this.#entriesRead[b] as number);
    if (behind > catchUpEntriesMax) {
      // A class last used many placements ago: walking afresh costs less than re-checking every node that
      // moved since, and gives the same list.
      this.#restart(index);
      staleCount = 0;
    }
    for (let b = this.#low; b <= last; b++) {
      const entries = index.bucketEntries(b);
      for (let j = this.#entriesRead[b] as number; j < entries.length; j++)
        stale[staleCount++] = entries[j] as number;
      this.#entriesRead[b] = entries.length;
    }
    for (let i = 0; i < staleCount; i++) this.#retake(index, req, stale[i] as number);
    if (this.count < this.#limit && this.#frontier < positionEnd) this.#resume(index, req);
  }

  /** Forgets the list: the walk starts again from the request's own bucket. */
  #restart(index: IndexReader): void {
    this.count = 0;
    this.#frontier = positionOf(this.#low, 0);
    for (let b = 0; b < bucketCount; b++) this.#entriesRead[b] = index.bucketEntries(b).length;
  }

  /** A changed node leaves the list and re-enters at its current position if feasible and before the frontier. */
  #retake(index: IndexReader, req: CompiledRequest, slot: number): void {
    for (let i = 0; i < this.count; i++) {
      if (this.slots[i] === slot) {
        this.#remove(i);
        break;
      }
    }
    const bucket = index.bucketOfSlot(slot);
    if (bucket < 0) return;
    const position = positionOf(bucket, slot);
    if (position >= this.#frontier || !feasible(index, req, slot)) return;
    let i = this.count;
    while (i > 0 && (this.#positions[i - 1] as number) > position) {
      this.#move(i - 1, i);
      i--;
    }
    this.#set(i, slot, position, index.versionOf(slot));
    this.count++;
    if (this.count > this.#limit) {
      // The last candidate is no longer among the first `limit`: it sits at the frontier, to be found again.
      this.count--;
      this.#frontier = this.#positions[this.count] as number;
    }
  }

  #set(i: number, slot: number, position: number, version: number): void {
    this.slots[i] = slot;
    this.#positions[i] = position;
    this.#versions[i] = version;
    this.fitScores[i] = Number.NaN;
  }

  #move(from: number, to: number): void {
    this.slots[to] = this.slots[from] as number;
    this.#positions[to] = this.#positions[from] as number;
    this.#versions[to] = this.#versions[from] as number;
    this.fitScores[to] = this.fitScores[from] as number;
  }

  #remove(at: number): void {
    for (let i = at + 1; i < this.count; i++) this.#move(i, i - 1);
    this.count--;
  }

  #visitNext(slot: number): boolean {
    const index = this.#index as IndexReader;
    const req = this.#req as CompiledRequest;
    if (!feasible(index, req, slot)) return false;
    this.#set(this.count, slot, positionOf(index.bucketOfSlot(slot), slot), index.versionOf(slot));
    this.count++;
    return this.count >= this.#limit;
  }

  /** Walks on from the frontier until the list is full or the buckets end. */
  #resume(index: IndexReader, req: CompiledRequest): void {
    this.#index = index;
    this.#req = req;
    // A constrained class scans through its signature's pass mask (pass-mask.ts): only nodes of passing classes
    // are visited, and a page holding none costs its mask words, not a visit per node.
    const mask =
      req.constraints.length > 0 || req.gpu !== undefined ? passMaskOf(req.shared, index) : undefined;
    let bucket = Math.floor(this.#frontier / nodesMax);
    let from = this.#frontier - bucket * nodesMax;
    for (; bucket < bucketCount; bucket++, from = 0) {
      // The scan sees the bucket as it is now, entries so far included.
      this.#entriesRead[bucket] = index.bucketEntries(bucket).length;
      const stopped =
        mask === undefined
          ? index.scanBucketFrom(bucket, from, this.#visit)
          : mask.scan(index, req, bucket, from, this.#visit);
      if (stopped >= 0) {
        this.#frontier = positionOf(bucket, stopped + 1);
        break;
      }
    }
    if (bucket >= bucketCount) this.#frontier = positionEnd;
    this.#index = undefined;
    this.#req = undefined;
  }
}
