/**
 * What the main thread and a replica's worker thread post to each other (scheduler/threads/group.ts is the
 * main side, replica-worker.ts the worker). Raft traffic is frames (raft/transport/ports.ts); the rest is a
 * small set of plain objects, each checked on arrival by shape (`toWorkerOf`, `fromWorkerOf`): anything else
 * posted to a port is dropped and counted, never thrown. Requests a replica serves for callers (create,
 * command, ReadIndex, heartbeat) travel as the forward codec's bytes (scheduler/forward.ts), validated there.
 */
import type { PipelineOptions } from '../pipeline/leader.js';

/** Pipeline settings a worker's pipeline takes (plain data: functions cannot cross a thread boundary). */
export type WorkerPipelineOptions = Partial<Omit<PipelineOptions, 'now' | 'every' | 'metrics'>>;

/** A worker's start-up settings (`workerData`). */
export interface ReplicaWorkerData {
  readonly index: number;
  readonly voters: readonly string[];
  /** The replica's storage directory (file storage); memory storage when absent. */
  readonly dir?: string;
  readonly fsync: boolean;
  readonly tickMs: number;
  readonly snapshotEntries: number;
  readonly seed: number;
  readonly electionTicks: number;
  /** How much lower than the main thread's this worker's scheduling priority is (nice; 0: the same). */
  readonly niceDelta: number;
  readonly pipeline: WorkerPipelineOptions;
  /** One Int32 per replica, 1 while that replica is up: the answer to Raft's leader probe, read in place. */
  readonly liveness: SharedArrayBuffer;
}

/** Calls the main thread makes on a worker; each is answered by a `reply` with its `id`. */
export type WorkerCall =
  | { readonly op: 'handle'; readonly bytes: Uint8Array }
  | { readonly op: 'digest' }
  | { readonly op: 'campaign' }
  | { readonly op: 'transfer'; readonly to: string }
  | { readonly op: 'dropped' }
  /** The worker thread's time on a core and waiting for one so far, in ms (Linux schedstat; zeros elsewhere). */
  | { readonly op: 'cpu' }
  /** Fault injection for tests: throw on the worker's loop, exit its thread, or post garbage to the main thread. */
  | { readonly op: 'fault'; readonly kind: WorkerFault }
  | { readonly op: 'close' };

export type WorkerFault = 'throw' | 'exit' | 'garbage';

export type ToWorker =
  | { readonly type: 'raft'; readonly frames: unknown }
  | { readonly type: 'call'; readonly id: number; readonly call: WorkerCall };

export interface WorkerStatus {
  readonly type: 'status';
  readonly leaderId: string | null;
  readonly leaderTerm: number | null;
  readonly applied: number;
}

export type FromWorker =
  | { readonly type: 'ready' }
  | { readonly type: 'raft'; readonly frames: unknown }
  | WorkerStatus
  | { readonly type: 'reply'; readonly id: number; readonly ok: true; readonly value: unknown }
  | { readonly type: 'reply'; readonly id: number; readonly ok: false; readonly message: string };

/** Call ids wrap here (far beyond the calls a worker can have outstanding). */
export const callIdMax = 2 ** 31 - 1;
/** Longest error message or id a posted value may carry. */
const textMax = 4096;

const isObject = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null;
const isText = (x: unknown): x is string => typeof x === 'string' && x.length <= textMax;
const isId = (x: unknown): x is number =>
  Number.isInteger(x) && (x as number) >= 0 && (x as number) <= callIdMax;

function callOf(x: unknown): WorkerCall | undefined {
  if (!isObject(x)) return undefined;
  switch (x.op) {
    case 'handle':
      return x.bytes instanceof Uint8Array ? { op: 'handle', bytes: x.bytes } : undefined;
    case 'digest':
    case 'campaign':
    case 'dropped':
    case 'cpu':
    case 'close':
      return { op: x.op };
    case 'fault':
      return x.kind === 'throw' || x.kind === 'exit' || x.kind === 'garbage'
        ? { op: 'fault', kind: x.kind }
        : undefined;
    case 'transfer':
      return isText(x.to) ? { op: 'transfer', to: x.to } : undefined;
    default:
      return undefined;
  }
}

/** A value posted to a worker, checked; undefined for anything that is not one of `ToWorker`. */
export function toWorkerOf(x: unknown): ToWorker | undefined {
  if (!isObject(x)) return undefined;
  if (x.type === 'raft') return { type: 'raft', frames: x.frames };
  if (x.type !== 'call' || !isId(x.id)) return undefined;
  const call = callOf(x.call);
  return call === undefined ? undefined : { type: 'call', id: x.id, call };
}

/** A value posted by a worker, checked; undefined for anything that is not one of `FromWorker`. */
export function fromWorkerOf(x: unknown): FromWorker | undefined {
  if (!isObject(x)) return undefined;
  switch (x.type) {
    case 'ready':
      return { type: 'ready' };
    case 'raft':
      return { type: 'raft', frames: x.frames };
    case 'status': {
      const okLeader = x.leaderId === null || isText(x.leaderId);
      const okTerm = x.leaderTerm === null || isId(x.leaderTerm);
      const okApplied = Number.isSafeInteger(x.applied) && (x.applied as number) >= 0;
      if (!okLeader || !okTerm || !okApplied) return undefined;
      return {
        type: 'status',
        leaderId: x.leaderId as string | null,
        leaderTerm: x.leaderTerm as number | null,
        applied: x.applied as number,
      };
    }
    case 'reply':
      if (!isId(x.id)) return undefined;
      if (x.ok === true) return { type: 'reply', id: x.id, ok: true, value: x.value };
      if (x.ok === false && isText(x.message))
        return { type: 'reply', id: x.id, ok: false, message: x.message };
      return undefined;
    default:
      return undefined;
  }
}
