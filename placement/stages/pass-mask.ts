/**
 * The nodes a constraint signature's class verdict passes, as a slot bitset a bucket scan ANDs with the bucket's
 * bits (IndexReader.scanBucketMasked), so a constrained walk never visits a node of a failing class.
 *
 * Counted on the bench's batch of 5,000 on 10,000 nodes, 7,858 of the class walks' 13,680 fresh visits were nodes
 * of failing classes (`zone = z-a` passes one node in four of every page), and each of a signature's ~7 shapes
 * made its own. A slot's class changes only with its spec, which changes the index's class membership, so a mask
 * is kept with the signature's facts (request.ts: shared by every batch against the same membership) and filled
 * page by page on first use: one pass over a page's slots per signature and membership.
 */

import { assert } from '../../src/lib/assert.js';
import { type IndexReader, maskWordsPerPage, pageShift, pageSize, type SlotMask } from '../cluster-index.js';
import { classVerdict, verdictPass } from './feasibility.js';
import type { CompiledRequest, SignatureFacts } from './request.js';

export class PassMask implements SlotMask {
  readonly words: Uint32Array;
  /** Per page: 1 once its words are filled. */
  readonly #filled: Uint8Array;
  /** During a scan: the index and a request of the signature, to fill pages with. */
  #index: IndexReader | undefined = undefined;
  #req: CompiledRequest | undefined = undefined;

  constructor(readonly pageCount: number) {
    this.words = new Uint32Array(pageCount * maskWordsPerPage);
    this.#filled = new Uint8Array(pageCount);
  }

  /** scanBucketMasked with this mask; `req` must be of the mask's signature (its verdicts fill the pages). */
  scan(
    index: IndexReader,
    req: CompiledRequest,
    bucket: number,
    from: number,
    visit: (slot: number) => boolean,
  ): number {
    this.#index = index;
    this.#req = req;
    const stopped = index.scanBucketMasked(bucket, from, visit, this);
    this.#index = undefined;
    this.#req = undefined;
    return stopped;
  }

  fill(page: number): void {
    if (this.#filled[page] === 1) return;
    const index = this.#index as IndexReader;
    const req = this.#req as CompiledRequest;
    const first = page << pageShift;
    const end = Math.min(first + pageSize, index.slotCount);
    const base = page * maskWordsPerPage;
    const words = this.words;
    for (let slot = first; slot < end; slot++) {
      if (index.isLive(slot) && classVerdict(index, req, index.classOf(slot)) === verdictPass) {
        const w = base + ((slot & (pageSize - 1)) >>> 5);
        words[w] = (words[w] as number) | (1 << (slot & 31));
      }
    }
    this.#filled[page] = 1;
  }
}

/** The signature's pass mask (pass-mask.ts), made on first use; valid while the index's class membership is. */
export function passMaskOf(shared: SignatureFacts, index: IndexReader): PassMask {
  let mask = shared.mask;
  if (mask === undefined) {
    mask = new PassMask(index.pageCount);
    shared.mask = mask;
  }
  // Facts are kept per class membership, and a page is added only by registering a node, which changes it.
  if (mask.pageCount !== index.pageCount)
    assert(false, 'a pass mask covers the pages of its membership', {
      mask: mask.pageCount,
      pages: index.pageCount,
    });
  return mask;
}
