/**
 * A scheduler replica on a worker thread: its Raft node, storage (a write-ahead log with fsync, or memory),
 * state machine and, while it leads, its pipeline, all off the main thread. The main thread
 * (scheduler/threads/group.ts) routes its Raft frames, mirrors its leadership from `status` posts, and sends
 * it callers' requests as forwarded bytes while it leads. Everything posted here is checked first; what is
 * not a known message is dropped and counted.
 */
import { createHash } from 'node:crypto';
import { readFileSync, readlinkSync } from 'node:fs';
import { getPriority, setPriority } from 'node:os';
import { join } from 'node:path';
import { parentPort, workerData } from 'node:worker_threads';
import { FileStorage } from '../../raft/storage/file.js';
import { MemoryStorage } from '../../raft/storage/memory.js';
import type { Storage } from '../../raft/storage/storage.js';
import { PortTransport } from '../../raft/transport/ports.js';
import type { PeerPresence } from '../../raft/transport.js';
import { assert } from '../../src/lib/assert.js';
import { createRng } from '../../src/lib/prng.js';
import { defaultPipelineOptions, everyInterval } from '../pipeline/leader.js';
import { RaftReplicaLog, SchedulerReplica } from '../replica.js';
import { stateDigest } from '../state-machine.js';
import {
  type FromWorker,
  type ReplicaWorkerData,
  toWorkerOf,
  type WorkerCall,
  type WorkerFault,
} from './protocol.js';

const port = parentPort;
assert(port !== null, 'replica-worker.ts runs on a worker thread');
const data = workerData as ReplicaWorkerData;

/**
 * Lowers this thread's scheduling priority by `data.niceDelta` (ThreadedGroupOptions.workerNice). Best
 * effort: Linux sets it per thread (`/proc/thread-self` names the thread's id); elsewhere, or where refused,
 * the worker keeps the process's priority.
 */
function lowerOwnPriority(delta: number): void {
  if (delta <= 0) return;
  try {
    const tid = Number(readlinkSync('/proc/thread-self').split('/').pop());
    if (Number.isInteger(tid) && tid > 0) setPriority(tid, Math.min(19, getPriority(tid) + delta));
  } catch {
    // Not Linux, or not allowed: same priority as the main thread.
  }
}
lowerOwnPriority(data.niceDelta);
const id = `r${data.index}`;
const liveness = new Int32Array(data.liveness);

function post(message: FromWorker, transfer: ArrayBuffer[] = []): void {
  port?.postMessage(message, transfer);
}

/** A peer's presence as the main thread last marked it: 'absent' only once it was stopped or its thread died. */
function presence(peer: string): PeerPresence {
  const i = Number(peer.slice(1));
  if (!/^r\d$/.test(peer) || i >= liveness.length) return 'unknown';
  return Atomics.load(liveness, i) === 1 ? 'present' : 'absent';
}

const storage: Storage =
  data.dir === undefined
    ? new MemoryStorage()
    : await FileStorage.open(join(data.dir), { fsync: data.fsync });
const transport = new PortTransport(
  id,
  (frames, transfer) => post({ type: 'raft', frames }, transfer),
  presence,
);
const log = new RaftReplicaLog({
  id,
  voters: data.voters,
  storage,
  transport,
  rng: createRng(data.seed * 1000 + data.index),
  tickMs: data.tickMs,
  snapshotEntries: data.snapshotEntries,
  core: { electionTicks: data.electionTicks },
});
const replica = new SchedulerReplica(log, {
  pipeline: { ...defaultPipelineOptions, ...data.pipeline, now: Date.now, every: everyInterval },
});
/** Values posted here that were not a known message. */
let dropped = 0;

function postStatus(): void {
  post({
    type: 'status',
    leaderId: log.leaderId() ?? null,
    leaderTerm: log.leaderTerm() ?? null,
    applied: log.machine.state.applied,
  });
}
log.onLeaderChange(postStatus);
log.node.onRoleChange(postStatus);

async function serve(call: WorkerCall): Promise<unknown> {
  switch (call.op) {
    case 'handle':
      return replica.handle(call.bytes);
    case 'digest':
      return createHash('sha256').update(stateDigest(log.machine.state)).digest('hex');
    case 'campaign':
      log.node.campaign();
      return null;
    case 'transfer':
      await log.node.transferLeadership(call.to);
      return null;
    case 'dropped':
      return dropped + transport.dropped;
    case 'cpu':
      return threadSchedMs();
    case 'fault':
      return fault(call.kind);
    case 'close':
      replica.stop();
      await log.close();
      return dropped + transport.dropped;
  }
}

port.on('message', (value: unknown) => {
  const m = toWorkerOf(value);
  if (m === undefined) {
    dropped++;
    return;
  }
  if (m.type === 'raft') {
    transport.receive(m.frames);
    return;
  }
  serve(m.call).then(
    (v) => {
      post({ type: 'reply', id: m.id, ok: true, value: v }, v instanceof Uint8Array ? transferOf(v) : []);
      if (m.call.op === 'close') port.close();
    },
    (err: unknown) =>
      post({
        type: 'reply',
        id: m.id,
        ok: false,
        message: String((err as Error)?.message ?? err).slice(0, 4000),
      }),
  );
});

/** This thread's [on-CPU, waiting] ms from `/proc/thread-self/schedstat` (Linux), else zeros. */
function threadSchedMs(): [number, number] {
  try {
    const [run, wait] = readFileSync('/proc/thread-self/schedstat', 'utf8').split(' ');
    return [Number(run) / 1e6, Number(wait) / 1e6];
  } catch {
    return [0, 0];
  }
}

/** What a test asks this worker to suffer (`ThreadedRaftGroup.injectFault`). */
function fault(kind: WorkerFault): null {
  if (kind === 'throw')
    setImmediate(() => {
      throw new Error(`fault injected into replica ${id}`);
    });
  else if (kind === 'exit') setImmediate(() => process.exit(3));
  else for (const value of hostileValues()) port?.postMessage(value);
  return null;
}

/** Values no main thread should accept from a worker: wrong shapes, wrong types, frames of garbage. */
function hostileValues(): unknown[] {
  const junk = new Uint8Array([0xc1, 0xff, 0x00, 0x93, 0xa1]);
  return [
    null,
    42,
    'raft',
    [],
    { type: 'nope' },
    { type: 'raft', frames: 'x' },
    { type: 'raft', frames: [{ to: 'r0', frame: junk }, { to: 'r0' }, null, { to: 7, frame: junk }] },
    {
      type: 'raft',
      frames: [
        { to: 'r9', frame: junk },
        { to: 'r0'.repeat(100), frame: junk },
      ],
    },
    { type: 'status', leaderId: 5, leaderTerm: -1, applied: 'x' },
    { type: 'reply', id: -1, ok: true, value: 1 },
    { type: 'reply', id: 123_456, ok: true, value: 1 },
    { type: 'reply', id: 0, ok: 'maybe' },
    { type: 'ready', extra: { __proto__: { polluted: true } } },
  ];
}

function transferOf(b: Uint8Array): ArrayBuffer[] {
  const whole = b.byteOffset === 0 && b.byteLength === b.buffer.byteLength && b.buffer instanceof ArrayBuffer;
  return whole ? [b.buffer as ArrayBuffer] : [];
}

post({ type: 'ready' });
postStatus();
