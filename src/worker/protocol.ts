/**
 * What a node worker is told and what it tells back, independent of the transport: commands (validated
 * with zod at the boundary, so the NATS binding and in-process callers share one definition), replies, and
 * the status reports the worker batches.
 */
import { z } from 'zod';
import type { StatusItem } from '../../scheduler/api.js';
import { idSchema, reconcileReportMax, resourcesSchema, textLengthMax } from '../../scheduler/commands.js';
import type { SandboxState } from '../../scheduler/lifecycle.js';
import type { SandboxId } from '../lib/ids.js';
import { execArgBytesMax, execArgsMax, execOutputBytesMax, execTimeoutMsMax } from './driver.js';

/**
 * The states a worker reports for a sandbox: the scheduler's lifecycle (`sandboxStates`) without the ones
 * only the scheduler decides (pending, placed, lost). `satisfies` keeps it a subset of that lifecycle.
 */
export const workerSandboxStates = [
  'starting',
  'running',
  'suspending',
  'suspended',
  'resuming',
  'terminating',
  'terminated',
  'failed',
] as const satisfies readonly SandboxState[];
export type WorkerSandboxState = (typeof workerSandboxStates)[number];

/** Sandbox ids one stop-orphans command may carry (as many as a reconcile report may list). */
export const orphansMax = reconcileReportMax;

const sandbox = idSchema.transform((s) => s as SandboxId);

/** Commands one `batch` carries, at most (the dispatcher's batches are smaller). */
export const workerBatchMax = 4_096;

const createSchema = z.strictObject({
  type: z.literal('create'),
  sandboxId: sandbox,
  resources: resourcesSchema,
  image: z.string().min(1).max(textLengthMax).default('default'),
});
const terminateSchema = z.strictObject({ type: z.literal('terminate'), sandboxId: sandbox });
const suspendSchema = z.strictObject({ type: z.literal('suspend'), sandboxId: sandbox });
const resumeSchema = z.strictObject({ type: z.literal('resume'), sandboxId: sandbox });

/** The lifecycle commands the dispatcher sends, alone or in a batch. */
export const lifecycleCommandSchema = z.discriminatedUnion('type', [
  createSchema,
  terminateSchema,
  suspendSchema,
  resumeSchema,
]);
export type LifecycleCommand = z.output<typeof lifecycleCommandSchema>;

export const workerCommandSchema = z.discriminatedUnion('type', [
  createSchema,
  terminateSchema,
  suspendSchema,
  resumeSchema,
  /**
   * Many lifecycle commands for this node in one message (the dispatcher's batch): each is carried out and
   * answered on its own, in order, so one refusal does not refuse the others.
   */
  z.strictObject({
    type: z.literal('batch'),
    commands: z.array(lifecycleCommandSchema).min(1).max(workerBatchMax),
  }),
  z.strictObject({
    type: z.literal('exec'),
    sandboxId: sandbox,
    command: z.array(z.string().max(execArgBytesMax)).min(1).max(execArgsMax),
    stdin: z.instanceof(Uint8Array).optional(),
    timeoutMs: z.int().min(1).max(execTimeoutMsMax).optional(),
    outputBytesMax: z.int().min(0).max(execOutputBytesMax).optional(),
    /** Names this exec: a retry with the same id gets the first run's result (src/worker/exec-cache.ts). */
    requestId: idSchema.optional(),
  }),
  z.strictObject({ type: z.literal('stop-orphans'), sandboxIds: z.array(sandbox).max(orphansMax) }),
]);
export type WorkerCommand = z.output<typeof workerCommandSchema>;
export type WorkerCommandInput = z.input<typeof workerCommandSchema>;

/** One sandbox's state change on this node. `reason` is set for `failed` (the driver's reason). */
export interface StatusReport {
  readonly sandboxId: SandboxId;
  readonly state: WorkerSandboxState;
  readonly reason?: string;
  readonly atMs: number;
}

/** Where batches of status reports go (the NATS binding publishes them on the node's status subject). */
export type StatusSink = (batch: readonly StatusReport[]) => Promise<void>;

/**
 * A worker's report as the scheduler takes it: named by its node (the scheduler ignores a report about a
 * sandbox not on it) and with the reason cut to the command's text bound, so one long driver message
 * cannot get a whole batch refused.
 */
export function statusItemOf(nodeId: string, r: StatusReport): StatusItem {
  const base = { sandboxId: r.sandboxId, state: r.state, nodeId };
  return r.reason === undefined || r.reason === ''
    ? base
    : { ...base, reason: r.reason.slice(0, textLengthMax) };
}
