/**
 * The scheduler's API protocol: versioned msgpack frames (src/lib/codec.ts envelopes, zod-validated bodies,
 * bounded sizes) that any transport carries. NATS is the first adapter (nats-server.ts, client.ts).
 *
 * - A request is `['trellis.api.request', 1, { id, deadline, call }]`: `id` is the request id (a retry
 *   sends the same one, so a mutation applies at most once), `deadline` the caller's deadline in the form of
 *   src/lib/deadline.ts (absolute time and remaining budget; a stalled request is dropped, a forwarded one
 *   only shrinks it), `call` one operation.
 * - A reply is `['trellis.api.reply', 1, { ok, by, leader?, result | error }]`: `by` the replica that
 *   answered, `leader` the leader it knows of (a routing hint), `error` a wire error (errors.ts).
 * - Committed events go out on `trellis.<cluster>.watch` as `['trellis.api.events', 1, { prev, events }]`:
 *   `prev` is the log position just before the frame's first event, so a follower notices a lost or
 *   foreign frame and catches up with the `events` call (see docs/api.md, "watch").
 *
 * Fields the scheduler validates itself (sandbox and node specs, quotas, reconcile reports) travel as
 * opaque values here and are validated behind the server, so a remote caller gets the very ValidationError
 * (with its path) an embedded caller gets. Results are validated on the client before it sees them.
 * Reply schemas are tolerant readers (unknown fields are dropped), so a newer server can add fields.
 */
import { z } from 'zod';
import { sandboxStates } from '../../scheduler/lifecycle.js';
import type { SchedulerEvent } from '../../scheduler/types.js';
import { createCodec } from '../lib/codec.js';
import { deadlineBudgetMsMax, deadlineWireSchema } from '../lib/deadline.js';
import { ValidationError } from '../lib/errors.js';
import { zodDecoder } from '../lib/validate.js';
import { eventSchema } from '../nats/events.js';
import type { WireError } from './errors.js';
import { nodeItemsMax } from './limits.js';

/** Largest request or reply frame, in bytes: nats-server's default max_payload (1 MiB). */
export const apiFrameBytesMax = 1 << 20;
/** Longest deadline a caller may give one request. */
export const requestTimeoutMsMax = deadlineBudgetMsMax;
/** Sandboxes or nodes one list/nodes reply carries; the client pages through the rest. */
export const pageSizeMax = 1_000;
/** Events one catch-up reply or one published frame carries. */
export const eventsPerFrameMax = 1_000;
export { nodeItemsMax };

/** Longest string field a request carries before the scheduler validates it (ids, tenants, states). */
const wireStringMax = 1_024;

export const apiSubject = (cluster: string): string => `trellis.${cluster}.api`;
export const apiReplicaSubject = (cluster: string, replica: string): string =>
  `trellis.${cluster}.api.${replica}`;
export const watchSubject = (cluster: string): string => `trellis.${cluster}.watch`;
/**
 * A node worker's own API subject: its NATS user may publish here and nowhere else in the API, and the
 * replicas take from it only the node-side calls about that very node (`nodeScopedCall`).
 */
export const apiNodeSubject = (cluster: string, nodeId: string): string =>
  `trellis.${cluster}.api.node.${nodeId}`;
/** The wildcard the replicas' queue group serves node subjects on. */
export const apiNodeWildcard = (cluster: string): string => `trellis.${cluster}.api.node.*`;
/** The queue group replicas share on the API subject: one of them takes each request. */
export const apiQueueGroup = 'replicas';

const str = z.string().max(wireStringMax);
const requestIdSchema = z
  .string()
  .min(1)
  .max(128)
  .regex(/^[A-Za-z0-9_-]+$/, "may contain only letters, digits, '_' and '-'");
const opaque = z.unknown();
const stale = z.boolean().optional();

/**
 * A position in the stream of committed events: every event of entries before `index` and the first `count`
 * events of entry `index`. Positions are the same on every replica, since events are derived from the log.
 */
export const cursorSchema = z.strictObject({ index: z.int().min(0), count: z.int().min(0) });
export type Cursor = z.output<typeof cursorSchema>;

export const callSchema = z.discriminatedUnion('op', [
  z.strictObject({
    op: z.literal('create'),
    spec: opaque,
    wait: z.enum(['placed', 'running']).optional(),
    /** With wait `running`: how long the server waits for it (it also ends a little before the deadline). */
    runningWaitMs: z.int().min(1).max(deadlineBudgetMsMax).optional(),
  }),
  z.strictObject({ op: z.literal('terminate'), sandboxId: str }),
  z.strictObject({ op: z.literal('suspend'), sandboxId: str }),
  z.strictObject({ op: z.literal('resume'), sandboxId: str }),
  z.strictObject({ op: z.literal('get'), sandboxId: str, stale }),
  z.strictObject({
    op: z.literal('list'),
    filter: z.strictObject({ tenant: str.optional(), nodeId: str.optional(), state: str.optional() }),
    /** The page starts after this sandbox id (list order is by id). */
    after: str.optional(),
    limit: z.int().min(1).max(pageSizeMax),
    stale,
  }),
  z.strictObject({
    op: z.literal('nodes'),
    after: str.optional(),
    limit: z.int().min(1).max(pageSizeMax),
    stale,
  }),
  z.strictObject({ op: z.literal('stats') }),
  /** `digest`: also answer a hash of this replica's state (costly on a large state; for tests and audits). */
  z.strictObject({ op: z.literal('status'), digest: z.boolean().optional() }),
  z.strictObject({ op: z.literal('quota.set'), tenant: str, quota: opaque }),
  z.strictObject({ op: z.literal('node.register'), spec: opaque }),
  z.strictObject({ op: z.literal('node.state'), nodeId: str, state: str }),
  z.strictObject({ op: z.literal('node.remove'), nodeId: str }),
  z.strictObject({ op: z.literal('node.heartbeat'), nodeIds: z.array(str).max(nodeItemsMax) }),
  z.strictObject({ op: z.literal('node.status'), items: z.array(opaque).max(nodeItemsMax) }),
  z.strictObject({ op: z.literal('node.reconcile'), nodeId: str, running: opaque }),
  /** The replica group's membership (answered by the leader, after a ReadIndex). */
  z.strictObject({ op: z.literal('members') }),
  z.strictObject({ op: z.literal('member.add'), id: str, learner: z.boolean() }),
  z.strictObject({ op: z.literal('member.remove'), id: str }),
  z.strictObject({ op: z.literal('member.transfer'), to: str }),
  z.strictObject({
    op: z.literal('exec'),
    sandboxId: str,
    command: z
      .array(z.string().max(64 << 10))
      .min(1)
      .max(256),
    timeoutMs: z.int().min(1).optional(),
    outputBytesMax: z.int().min(0).optional(),
    stdin: z.instanceof(Uint8Array).optional(),
  }),
  z.strictObject({
    op: z.literal('events'),
    /** Events after this position; absent: none, only the server's current end (to start a watch "now"). */
    after: cursorSchema.optional(),
    limit: z.int().min(1).max(eventsPerFrameMax),
  }),
]);
export type Call = z.output<typeof callSchema>;
export type Op = Call['op'];

/**
 * A call that arrived on node `nodeId`'s subject, checked: only register, heartbeat, status, reconcile (and
 * the nodes list, to see whether it was marked down) are taken there, each only about `nodeId` itself.
 * Status items are stamped with the node, so the scheduler ignores what it says about sandboxes elsewhere.
 * Throws ValidationError naming the field for anything else.
 */
export function nodeScopedCall(call: Call, nodeId: string): Call {
  const mustBe = (path: string, id: unknown): void => {
    if (id !== nodeId) throw new ValidationError(path, `node ${nodeId} may only speak for itself`);
  };
  switch (call.op) {
    case 'node.register':
      mustBe('spec.id', (call.spec as { id?: unknown } | null)?.id);
      return call;
    case 'node.heartbeat':
      for (const [i, id] of call.nodeIds.entries()) mustBe(`nodeIds.${i}`, id);
      return call;
    case 'node.reconcile':
      mustBe('nodeId', call.nodeId);
      return call;
    case 'node.status':
      return {
        ...call,
        items: call.items.map((it) => (typeof it === 'object' && it !== null ? { ...it, nodeId } : it)),
      };
    case 'nodes':
    case 'stats':
      return call;
    default:
      throw new ValidationError('call.op', `${call.op} is not a node-side call`);
  }
}

export const requestSchema = z.strictObject({
  id: requestIdSchema,
  deadline: deadlineWireSchema,
  call: callSchema,
});
export type ApiRequest = z.output<typeof requestSchema>;

export const requestCodec = createCodec<ApiRequest>({
  kind: 'trellis.api.request',
  version: 1,
  frameBytesMax: apiFrameBytesMax,
  decoders: { 1: zodDecoder(requestSchema) },
});

const wireErrorSchema = z.object({
  code: z.string().min(1).max(128),
  name: z.string().max(128),
  message: z.string().max(4_096),
  details: z.record(z.string(), z.unknown()),
  path: z.string().max(wireStringMax).optional(),
  reason: z.string().max(64).optional(),
});

export type ApiReply =
  | { readonly ok: true; readonly by: string; readonly leader?: string; readonly result: unknown }
  | { readonly ok: false; readonly by: string; readonly leader?: string; readonly error: WireError };

const replySchema = z.union([
  z.object({ ok: z.literal(true), by: str, leader: str.optional(), result: z.unknown() }),
  z.object({ ok: z.literal(false), by: str, leader: str.optional(), error: wireErrorSchema }),
]);

export const replyCodec = createCodec<ApiReply>({
  kind: 'trellis.api.reply',
  version: 1,
  frameBytesMax: apiFrameBytesMax,
  decoders: { 1: zodDecoder(replySchema) as (b: unknown) => ApiReply },
});

// Results, validated by the client.
const amount = z.int().min(0);
const resources = z.object({ cpu: amount, memory: amount, disk: amount });
const gpuShares = z.array(z.object({ device: z.int().min(0), milli: z.int().min(0) })).max(64);
const labels = z.record(z.string(), z.string());

export const sandboxSchema = z.object({
  id: z.string(),
  requestId: z.string(),
  tenant: z.string(),
  spec: z.looseObject({ tenant: z.string(), resources }),
  state: z.enum(sandboxStates),
  nodeId: z.string().optional(),
  gpuDevices: gpuShares,
  snapshotNodeId: z.string().optional(),
  lostFrom: z.object({ nodeId: z.string(), gpuDevices: gpuShares }).optional(),
  reason: z.string().optional(),
  pendingUntilMs: z.int().optional(),
  createdAtMs: z.int(),
  updatedAtMs: z.int(),
});

const nodeSpecResult = z.object({
  id: z.string(),
  capacity: resources,
  gpu: z.object({ model: z.string(), count: amount }).optional(),
  labels,
  state: z.enum(['ready', 'draining', 'cordoned', 'down']),
  images: z.array(z.string()).optional(),
});

export const nodeViewSchema = z.object({
  id: z.string(),
  spec: nodeSpecResult,
  state: z.enum(['ready', 'draining', 'cordoned', 'down']),
  allocated: resources,
  free: resources,
  gpuFree: z.array(z.int()).max(64),
  version: z.int(),
});

export const pageSchema = <T extends z.ZodType>(item: T) =>
  z.object({ items: z.array(item).max(pageSizeMax), more: z.boolean() });

export const statsSchema = z.object({
  leader: z.int().optional(),
  applied: amount,
  nodes: amount,
  sandboxes: amount,
  pending: amount,
  batches: amount,
  meanBatch: z.number(),
  meanBatchLatencyMs: z.number(),
  placed: amount,
  rejected: amount,
  replans: amount,
  rejectReasons: z.record(z.string(), amount),
});

/** What `status` answers: the replica that was asked, the leader it knows, its Raft positions, and stats. */
export const statusSchema = z.object({
  replica: z.string(),
  role: z.string(),
  leader: z.string().optional(),
  term: amount,
  commit: amount,
  /** Term of the entry at `commit`: a failover is over once a survivor's is past the old leader's term. */
  commitTerm: amount.optional(),
  applied: amount,
  replicas: z.array(z.string()),
  stats: statsSchema,
  /** With `digest: true`: a hash of the replica's state at `digestApplied`; equal logs give equal hashes. */
  digest: z.string().optional(),
  digestApplied: amount.optional(),
});
export type ReplicaStatus = z.output<typeof statusSchema>;

export const reconcileResultSchema = z.object({
  restored: z.array(z.object({ sandboxId: z.string(), state: z.enum(sandboxStates) })),
  lost: z.array(z.string()),
  failed: z.array(z.string()),
  orphans: z.array(z.object({ sandboxId: z.string(), reason: z.string() })),
});

/** A catch-up reply: events after the asked position, the position after them, and whether more remain. */
export const eventsResultSchema = z.object({
  events: z.array(eventSchema).max(eventsPerFrameMax),
  next: cursorSchema,
  more: z.boolean(),
  /** The answering replica's end: every event before it is held there (or was returned). */
  end: cursorSchema,
});

export const voidResultSchema = z.null();

/** What the membership calls answer: the group's voters and learners after the call. */
export const membersSchema = z.object({ voters: z.array(z.string()), learners: z.array(z.string()) });
/** An exec's outcome (scheduler/dispatch.ts `NodeExecResult`). */
export const execResultSchema = z.object({
  exitCode: z.int().nullable(),
  signal: z.string().max(64).nullable(),
  stdout: z.instanceof(Uint8Array),
  stderr: z.instanceof(Uint8Array),
  stdoutTruncated: z.boolean(),
  stderrTruncated: z.boolean(),
  timedOut: z.boolean(),
});

/** A frame of committed events on the watch subject. */
export interface EventsFrame {
  /** The publishing replica: it holds every event up to this frame, so a follower catches up from it. */
  readonly by: string;
  /** The position just before the first event: the publisher's end after its previous frame. */
  readonly prev: Cursor;
  readonly events: readonly SchedulerEvent[];
}

export const eventsFrameCodec = createCodec<EventsFrame>({
  kind: 'trellis.api.events',
  version: 1,
  frameBytesMax: apiFrameBytesMax,
  decoders: {
    1: zodDecoder(
      z.strictObject({
        by: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/),
        prev: cursorSchema,
        events: z.array(eventSchema).min(1).max(eventsPerFrameMax),
      }),
    ) as (b: unknown) => EventsFrame,
  },
});

/** Orders two positions. */
export function compareCursor(a: Cursor, b: Cursor): number {
  return a.index !== b.index ? a.index - b.index : a.count - b.count;
}

/** The position just after `event`, which follows position `at`. */
export function advance(at: Cursor, event: { readonly index: number }): Cursor {
  return event.index === at.index
    ? { index: at.index, count: at.count + 1 }
    : { index: event.index, count: 1 };
}

/** The position of `event` itself (the position before it), which follows position `at`. */
export function positionOf(at: Cursor, event: { readonly index: number }): Cursor {
  return event.index === at.index ? at : { index: event.index, count: 0 };
}
