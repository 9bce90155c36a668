/**
 * The placement chain for one request, wired in the order Nomad's stack uses, each stage for a reason:
 *
 * 1. select (stages/select.ts) — decides which nodes are looked at at all, because on a large cluster the
 *    cheapest node check is the one never made;
 * 2. feasibility (stages/feasibility.ts) — drops nodes that cannot take the request, before any scoring cost;
 * 3. scoring (stages/score-*.ts) — rates each feasible node per concern, each scorer knowing only its own;
 * 4. normalisation (stages/normalize.ts) — folds the scores into one comparable number;
 * 5. pick (stages/pick.ts) — keeps the best, with a deterministic tie-break.
 * Only when nothing is feasible does diagnose.ts visit every node to explain why.
 *
 * Runs: a batch holds many identical requests in a row (same shape, constraints, GPU need, preferences and
 * image). After one of them lands on node N, the next is placed on N without a new candidate walk when N is
 * still feasible and still beats every other candidate of the last walk. That is the walk's own answer: only
 * N changed (its free capacity shrank, so it can only move to an earlier bucket of the walk), so a new walk
 * would stop no later and visit a subset of the same other nodes plus N — N, beating them all, would win.
 * If N became infeasible or lost, the walk runs again. Requests with spread or anti-affinity rules never
 * run (a placement changes their group counts on other nodes), nor spread-strategy requests (their walk
 * starts at a seeded random page).
 */
import type { Rng } from '../src/lib/prng.js';
import type { IndexBuilder } from './cluster-index.js';
import { diagnose } from './diagnose.js';
import { feasible, pickGpuDevices } from './stages/feasibility.js';
import { scoreNode, scoreWithStrategy } from './stages/normalize.js';
import { BestNode, beats } from './stages/pick.js';
import type { CompiledRequest } from './stages/request.js';
import { type BinpackScorer, binpackOf, type NodeNumbers, nodeNumbers } from './stages/score-binpack.js';
import { type SelectLimits, selectNode } from './stages/select.js';
import type { PlacementRequest, Rejection } from './types.js';

/** The planner's memory of the last placement, for runs of identical requests. One per batch. */
export class RunState {
  /** The last request placed by a full walk or a run step, when it may start a run; else undefined. */
  prev: PlacementRequest | undefined = undefined;
  /** The request class (classes.ts) of `prev`: a request may step the run only when its class is the same. */
  prevClass = -1;
  slot = -1;
  /** The candidates of the last full walk, with their scores. */
  readonly best = new BestNode();
  /** Requests placed by a run step (for benchmarks and tests). */
  steps = 0;
  /** The outcome of the last placeOne: score and devices when placed, the rejection otherwise. */
  score = 0;
  devices: readonly { readonly device: number; readonly milli: number }[] = [];
  rejection: Rejection | undefined = undefined;

  /** Forgets the run: the next request walks. */
  clear(): void {
    this.prev = undefined;
    this.prevClass = -1;
    this.slot = -1;
  }
}

/**
 * Places one request on `builder` (allocating it there) and returns the node's slot, or -1 when no node can
 * take it; the score and devices, or the rejection, are left in `run` (no result object per request).
 */
export function placeOne(
  builder: IndexBuilder,
  req: CompiledRequest,
  binpack: BinpackScorer,
  limits: SelectLimits,
  rng: Rng,
  run: RunState,
  classId: number,
): number {
  let slot = -1;
  let score = 0;
  const runnable = mayRun(req);
  if (runnable && run.prev !== undefined && run.prevClass === classId && feasible(builder, req, run.slot)) {
    const s = scoreNode(builder, req, run.slot, binpack);
    if (stillBest(run.best, run.slot, s)) {
      slot = run.slot;
      score = s;
      run.steps++;
    }
  }
  if (slot < 0) {
    const best = selectNode(builder, req, binpack, limits, rng, run.best.reset());
    if (!best.found) {
      run.clear();
      run.rejection = diagnose(builder, req);
      return -1;
    }
    slot = best.slot;
    score = best.score;
  }
  if (runnable) {
    run.prev = req.req;
    run.prevClass = classId;
    run.slot = slot;
  } else run.clear();
  const gpuDevices =
    req.gpu === undefined ? noDevices : (pickGpuDevices(builder, slot, req.gpu) ?? noDevices);
  builder.allocateSlot(slot, req.allocation(gpuDevices));
  run.score = score;
  run.devices = gpuDevices;
  return slot;
}

const noDevices: readonly { readonly device: number; readonly milli: number }[] = Object.freeze([]);

/** Where placeFollowers records each placement (planBatch's flat result arrays). */
export interface PlacementSink {
  add(request: number, slot: number, score: number, devices: readonly never[]): void;
}

/**
 * Identical requests in one step: after `req` was placed on `run.slot`, places the requests that follow it in
 * batch order (`order[from]`, `order[from + 1]`, ...) on the same node while each is identical to it (mayFollow),
 * fits what the node has left after the ones before it and still beats every other candidate of the last walk —
 * exactly the run step placeOne makes per request. Here the node's numbers after m more placements are computed
 * rather than written (the named scorers are pure functions of them, score-binpack.ts), each placement goes to
 * `sink`, and the whole run is allocated as one write. Returns how many were placed (0: none).
 */
export function placeFollowers(
  builder: IndexBuilder,
  req: CompiledRequest,
  binpack: BinpackScorer,
  run: RunState,
  grouped: Uint8Array,
  order: readonly number[],
  classOf: Int32Array,
  from: number,
  sink: PlacementSink,
): number {
  if (typeof binpack !== 'string' || req.gpu !== undefined || run.prev !== req.req) return 0;
  // Most placements are followed by a different request: check that before reading the node.
  const cls = run.prevClass;
  if (from >= order.length || !mayFollow(cls, classOf, grouped, order[from] as number)) return 0;
  const slot = run.slot;
  const n = nodeNumbers(builder, slot, numbers);
  let m = 0;
  for (; from + m < order.length; m++) {
    const i = order[from + m] as number;
    if (!mayFollow(cls, classOf, grouped, i)) break;
    if (req.cpu > n.freeCpu || req.memory > n.freeMem || req.disk > n.freeDisk) break;
    const score = scoreWithStrategy(builder, req, slot, binpackOf(binpack, req, n));
    if (!stillBest(run.best, slot, score)) break;
    sink.add(i, slot, score, noFollowerDevices);
    n.freeCpu -= req.cpu;
    n.freeMem -= req.memory;
    n.freeDisk -= req.disk;
  }
  if (m > 0) {
    builder.allocateSlotTimes(slot, req.allocation(noDevices), m);
    run.steps += m;
  }
  return m;
}

const noFollowerDevices: readonly never[] = Object.freeze([]);
const numbers: NodeNumbers = { capCpu: 0, capMem: 0, capDisk: 0, freeCpu: 0, freeMem: 0, freeDisk: 0 };

/**
 * True when request `i` may follow a request of class `cls` placed by a binpack walk or run step: of the same
 * request class (classes.ts: shape, GPU need, constraints, preferences, image, pin and strategy, so of a kind that
 * runs when the first one did — no pin, no GPU, binpack) and without group rules of its own (see mayRun); GPU
 * requests are left to placeOne, which picks devices per placement.
 */
function mayFollow(cls: number, classOf: Int32Array, grouped: Uint8Array, i: number): boolean {
  return classOf[i] === cls && grouped[i] === 0;
}

function mayRun(req: CompiledRequest): boolean {
  return (
    req.strategy === 'binpack' &&
    req.spread === undefined &&
    req.antiAffinity === undefined &&
    req.pinnedSlot === undefined
  );
}

/** True when `slot`, scoring `score`, beats every other candidate of the last walk. */
function stillBest(best: BestNode, slot: number, score: number): boolean {
  const slots = best.offeredSlots;
  const scores = best.offeredScores;
  for (let i = 0; i < best.offeredCount; i++) {
    const other = slots[i] as number;
    if (other !== slot && beats(other, scores[i] as number, slot, score)) return false;
  }
  return true;
}
