/**
 * The scheduler's Raft commands: their schemas (zod, so the static types and the run-time check cannot
 * drift), and the versioned msgpack codec every entry goes through. A replica decodes each committed
 * entry with `commandCodec.decode`, so an entry written by a newer or a broken proposer is refused as a
 * CodecError rather than misapplied.
 *
 * Every command carries `atMs`, the leader's clock when it was proposed: `apply` reads time only from
 * there, so every replica computes the same state.
 */
import { z } from 'zod';
import {
  constraintsPerRequestMax,
  gpuDevicesPerNodeMax,
  gpuMilliPerDevice,
  resourceAmountMax,
} from '../../placement/index.js';
import { createCodec } from '../../src/lib/codec.js';
import { idLengthMax } from '../../src/lib/ids.js';
import { zodDecoder } from '../../src/lib/validate.js';
import { nodeHeldStates, sandboxStates } from './lifecycle.js';

/** Items one place, status or heartbeat command may carry. */
export const commandItemsMax = 100_000;
/** Largest encoded command, in bytes: a full batch of specs fits comfortably. */
export const commandBytesMax = 64 << 20;
/** Longest free-text field (image names, failure reasons, label values). */
export const textLengthMax = 256;
/**
 * Sandboxes one node's reconcile report may list. A node holding more is refused whole rather than
 * reconciled in part (a partial report would make its missing sandboxes look lost).
 */
export const reconcileReportMax = 10_000;
/** Labels one sandbox may carry. */
export const sandboxLabelsMax = 32;

export const idSchema = z
  .string()
  .min(1)
  .max(idLengthMax)
  .regex(/^[A-Za-z0-9_-]+$/, "may contain only letters, digits, '_' and '-'");
const text = z.string().min(1).max(textLengthMax);
const amount = z.int().min(0).max(resourceAmountMax);
const timeMs = z.int().min(0);

export const resourcesSchema = z.strictObject({ cpu: amount, memory: amount, disk: amount });

const gpuRequestSchema = z.strictObject({
  count: z.int().min(0).max(gpuDevicesPerNodeMax).optional(),
  milli: z
    .int()
    .min(0)
    .max(gpuMilliPerDevice - 1)
    .optional(),
  model: text.optional(),
});

const constraintSchema = z.union([
  z.strictObject({ label: text, op: z.literal('eq'), value: text }),
  z.strictObject({ label: text, op: z.enum(['in', 'notIn']), values: z.array(text).min(1).max(64) }),
  z.strictObject({ label: text, op: z.literal('exists') }),
]);

/** What a caller asks for when creating a sandbox. Unknown fields are refused, not ignored. */
export const sandboxSpecSchema = z.strictObject({
  tenant: idSchema,
  resources: resourcesSchema,
  gpu: gpuRequestSchema.optional(),
  image: text.optional(),
  priority: z.int().min(-1_000_000).max(1_000_000).optional(),
  constraints: z.array(constraintSchema).max(constraintsPerRequestMax).optional(),
  antiAffinity: z.strictObject({ group: idSchema, maxPerNode: z.int().min(1).max(1_000_000) }).optional(),
  spread: z
    .strictObject({ label: text, maxSkew: z.int().min(1).max(1_000_000), group: idSchema.optional() })
    .optional(),
  strategy: z.enum(['binpack', 'spread']).optional(),
  /** What to do on resume when the node holding the snapshot is gone or full. Default `wait`. */
  resumePolicy: z.enum(['wait', 'move', 'fail']).optional(),
  /** A stateless sandbox may be re-placed elsewhere when its node dies instead of being marked lost. */
  stateless: z.boolean().optional(),
  labels: z
    .record(text, text)
    .refine((r) => Object.keys(r).length <= sandboxLabelsMax, `at most ${sandboxLabelsMax} labels`)
    .optional(),
});
export type SandboxSpec = z.output<typeof sandboxSpecSchema>;

export const nodeStateSchema = z.enum(['ready', 'draining', 'cordoned', 'down']);

/** A node as registered. Its deeper rules (label counts, GPU models) are checked by placement's validator. */
export const nodeSpecSchema = z.strictObject({
  id: idSchema,
  capacity: resourcesSchema,
  gpu: z.strictObject({ model: text, count: z.int().min(0).max(gpuDevicesPerNodeMax) }).optional(),
  labels: z.record(text, text).readonly(),
  state: nodeStateSchema,
  images: z.array(text).max(1024).readonly().optional(),
});

const gpuDevicesSchema = z
  .array(
    z.strictObject({
      device: z
        .int()
        .min(0)
        .max(gpuDevicesPerNodeMax - 1),
      milli: z.int().min(1).max(gpuMilliPerDevice),
    }),
  )
  .max(gpuDevicesPerNodeMax);

/** One placement the leader decided: the sandbox, its spec and the node it goes to. */
export const placeItemSchema = z.strictObject({
  requestId: idSchema,
  sandboxId: idSchema,
  spec: sandboxSpecSchema,
  nodeId: idSchema,
  gpuDevices: gpuDevicesSchema,
  /** The spec's digest (state.ts `specDigest`), computed once by the leader for the dedup table. */
  specDigest: z.string().regex(/^[0-9a-f]{16}$/),
});
export type PlaceItem = z.output<typeof placeItemSchema>;

/**
 * A request the leader could place nowhere yet, recorded so that any later leader keeps waiting for room
 * for it: the sandbox is committed `pending`, with the reason and the leader-clock deadline after which it
 * fails. A later `place` item with the same request id takes it from `pending` to `placed`.
 */
export const pendItemSchema = z.strictObject({
  requestId: idSchema,
  sandboxId: idSchema,
  spec: sandboxSpecSchema,
  specDigest: z.string().regex(/^[0-9a-f]{16}$/),
  reason: text,
  deadlineMs: timeMs,
});
export type PendItem = z.output<typeof pendItemSchema>;

// One list of states, owned by the lifecycle table.
const sandboxStateSchema = z.enum(sandboxStates);

export const quotaSchema = z.strictObject({
  cpu: amount.optional(),
  memory: amount.optional(),
  disk: amount.optional(),
  sandboxes: z.int().min(0).max(resourceAmountMax).optional(),
});
export type Quota = z.output<typeof quotaSchema>;

/**
 * What a returning node says it holds: each sandbox once, in the state it is in on the node. Duplicates
 * are refused (with the path of the second one), since two states for one sandbox cannot both be true.
 */
export const reconcileReportSchema = z
  .array(z.strictObject({ sandboxId: idSchema, state: z.enum(nodeHeldStates) }))
  .max(reconcileReportMax)
  .superRefine((items, ctx) => {
    const seen = new Set<string>();
    for (const [i, item] of items.entries()) {
      if (seen.has(item.sandboxId)) {
        ctx.addIssue({
          code: 'custom',
          path: [i, 'sandboxId'],
          message: `sandbox ${item.sandboxId} is listed twice`,
        });
        return;
      }
      seen.add(item.sandboxId);
    }
  });
export type ReconcileReport = z.output<typeof reconcileReportSchema>;
/** One sandbox in a reconcile report: its id and the state it is in on the node. */
export type ReconcileEntry = ReconcileReport[number];

/**
 * The caller's request id on a mutating command (terminate, suspend, resume, quota and node commands): the
 * state machine remembers it with the first outcome, so a retry returns that outcome instead of applying
 * twice, and a retry with other arguments is refused (state.ts `commandDigest`, `dedupEntriesMax`).
 * Optional: the leader's own commands (pend, status, replace, heartbeats) and entries written before it
 * existed carry none.
 */
const requestIdField = idSchema.optional();

/** One node's report of one sandbox's state. */
export const statusItemSchema = z.strictObject({
  sandboxId: idSchema,
  state: sandboxStateSchema,
  reason: text.optional(),
  /** The reporting node: a report from a node the sandbox is not on is refused for that item. */
  nodeId: idSchema.optional(),
});

export const commandSchema = z.discriminatedUnion('type', [
  z.strictObject({
    type: z.literal('node.register'),
    atMs: timeMs,
    requestId: requestIdField,
    spec: nodeSpecSchema,
  }),
  z.strictObject({
    type: z.literal('node.update'),
    atMs: timeMs,
    requestId: requestIdField,
    spec: nodeSpecSchema,
  }),
  z.strictObject({
    type: z.literal('node.state'),
    atMs: timeMs,
    requestId: requestIdField,
    nodeId: idSchema,
    state: nodeStateSchema,
  }),
  z.strictObject({
    type: z.literal('node.remove'),
    atMs: timeMs,
    requestId: requestIdField,
    nodeId: idSchema,
  }),
  z.strictObject({
    /** A returning node's report of what it holds, reconciled against state (see state.ts `reconcile`). */
    type: z.literal('node.reconcile'),
    atMs: timeMs,
    requestId: requestIdField,
    nodeId: idSchema,
    running: reconcileReportSchema,
  }),
  z.strictObject({
    type: z.literal('node.heartbeat'),
    atMs: timeMs,
    nodeIds: z.array(idSchema).max(commandItemsMax),
  }),
  z.strictObject({
    type: z.literal('place'),
    atMs: timeMs,
    items: z.array(placeItemSchema).max(commandItemsMax),
  }),
  z.strictObject({
    type: z.literal('pend'),
    atMs: timeMs,
    items: z.array(pendItemSchema).max(commandItemsMax),
  }),
  z.strictObject({
    type: z.literal('status'),
    atMs: timeMs,
    items: z.array(statusItemSchema).max(commandItemsMax),
  }),
  z.strictObject({
    type: z.literal('terminate'),
    atMs: timeMs,
    requestId: requestIdField,
    sandboxId: idSchema,
  }),
  z.strictObject({
    type: z.literal('suspend'),
    atMs: timeMs,
    requestId: requestIdField,
    sandboxId: idSchema,
  }),
  z.strictObject({
    type: z.literal('resume'),
    atMs: timeMs,
    requestId: requestIdField,
    sandboxId: idSchema,
    /** The node the leader chose; absent when it found none (the sandbox's policy then decides). */
    nodeId: idSchema.optional(),
    gpuDevices: gpuDevicesSchema.optional(),
  }),
  z.strictObject({
    type: z.literal('quota.set'),
    atMs: timeMs,
    requestId: requestIdField,
    tenant: idSchema,
    quota: quotaSchema,
  }),
  z.strictObject({
    /** Stateless sandboxes lost with their node, placed again where the leader found room. */
    type: z.literal('replace'),
    atMs: timeMs,
    items: z
      .array(z.strictObject({ sandboxId: idSchema, nodeId: idSchema, gpuDevices: gpuDevicesSchema }))
      .max(commandItemsMax),
  }),
]);
export type Command = z.output<typeof commandSchema>;
export type CommandType = Command['type'];

/** The codec of Raft entries: `['trellis.scheduler.command', 1, command]`. */
export const commandCodec = createCodec<Command>({
  kind: 'trellis.scheduler.command',
  version: 1,
  frameBytesMax: commandBytesMax,
  decoders: { 1: zodDecoder(commandSchema) },
});
