/**
 * The node worker on NATS: commands arrive as requests on `trellis.<cluster>.node.<nodeId>.cmd` and are
 * answered on the reply subject; status batches are published on `trellis.<cluster>.node.<nodeId>.status`.
 * Every payload is a versioned msgpack envelope (src/lib/codec.ts) validated with zod.
 *
 * Nothing that arrives can crash the worker: a frame that does not decode is counted by reason and dropped
 * (logged once per reason); a command naming another node is refused with a typed error; a command the
 * worker refuses (bad state, busy) is answered with the error's code and message so the dispatcher can
 * decide to retry. NATS permissions (the operations helper's worker users) keep a worker to its own subjects.
 */
import type { NatsConnection, Subscription } from 'nats';
import { z } from 'zod';
import { idSchema } from '../../scheduler/commands.js';
import { createCodec } from '../lib/codec.js';
import { CodecError, TrellisError, ValidationError } from '../lib/errors.js';
import type { SandboxId } from '../lib/ids.js';
import { zodDecoder } from '../lib/validate.js';
import type { Logger } from '../log.js';
import { silentLogger } from '../log.js';
import type { CommandReply, NodeWorker } from './node-worker.js';
import { type StatusReport, workerCommandSchema, workerSandboxStates } from './protocol.js';

export const workerFrameBytesMax = 4 << 20;
/** Longest error message a reply carries (the reply schema's bound). */
export const errorMessageCharsMax = 4096;
/** Status reports one message carries (the worker's batch bound is lower). */
export const statusReportsPerMessageMax = 4_096;

export function nodeCommandSubject(cluster: string, nodeId: string): string {
  return `trellis.${cluster}.node.${nodeId}.cmd`;
}
export function nodeStatusSubject(cluster: string, nodeId: string): string {
  return `trellis.${cluster}.node.${nodeId}.status`;
}

/** A command on the wire: the node it is meant for (checked against the subscriber) and the command. */
export const workerCommandCodec = createCodec({
  kind: 'trellis.worker.cmd',
  version: 1,
  frameBytesMax: workerFrameBytesMax,
  decoders: { 1: zodDecoder(z.strictObject({ nodeId: idSchema, command: workerCommandSchema })) },
});

const replyBodySchema = z.union([
  z.strictObject({ ok: z.literal(true), reply: z.record(z.string(), z.unknown()) }),
  z.strictObject({
    ok: z.literal(false),
    error: z.strictObject({
      code: z.string().max(64),
      name: z.string().max(64),
      message: z.string().max(4096),
    }),
  }),
]);
export type WorkerReplyBody =
  | { readonly ok: true; readonly reply: CommandReply }
  | { readonly ok: false; readonly error: { code: string; name: string; message: string } };

export const workerReplyCodec = createCodec<WorkerReplyBody>({
  kind: 'trellis.worker.reply',
  version: 1,
  frameBytesMax: workerFrameBytesMax,
  decoders: { 1: zodDecoder(replyBodySchema) as (b: unknown) => WorkerReplyBody },
});

export const workerStatusCodec = createCodec<{ nodeId: string; reports: readonly StatusReport[] }>({
  kind: 'trellis.worker.status',
  version: 1,
  frameBytesMax: workerFrameBytesMax,
  decoders: {
    1: zodDecoder(
      z.strictObject({
        nodeId: idSchema,
        reports: z
          .array(
            z.strictObject({
              sandboxId: idSchema.transform((id) => id as SandboxId),
              state: z.enum(workerSandboxStates),
              reason: z.string().max(4096).optional(),
              atMs: z.number().min(0),
            }),
          )
          .max(statusReportsPerMessageMax),
      }),
    ) as (b: unknown) => { nodeId: string; reports: readonly StatusReport[] },
  },
});

/** A status sink publishing on the node's status subject (pass it to the NodeWorker). */
export function natsStatusSink(nc: NatsConnection, cluster: string, nodeId: string) {
  const subject = nodeStatusSubject(cluster, nodeId);
  return async (reports: readonly StatusReport[]): Promise<void> => {
    if (nc.isClosed()) throw new Error('NATS connection closed');
    nc.publish(subject, workerStatusCodec.encode({ nodeId, reports }));
  };
}

export interface WorkerBinding {
  readonly subscription: Subscription;
  /** Frames dropped because they did not decode, by CodecError reason. */
  readonly dropped: () => Readonly<Record<string, number>>;
  /** Decoded commands the worker refused (wrong node, bad state, busy), by error code. */
  readonly refused: () => Readonly<Record<string, number>>;
  stop(): Promise<void>;
}

/** Serves `worker` on its command subject until `stop()`. */
export function serveWorker(
  nc: NatsConnection,
  cluster: string,
  worker: NodeWorker,
  logger: Logger = silentLogger(),
): WorkerBinding {
  const dropped: Record<string, number> = {};
  const refused: Record<string, number> = {};
  const logged = new Set<string>();
  const subscription = nc.subscribe(nodeCommandSubject(cluster, worker.nodeId), {
    callback: (err, msg) => {
      if (err !== null) return;
      let decoded: ReturnType<typeof workerCommandCodec.decode>;
      try {
        decoded = workerCommandCodec.decode(msg.data);
      } catch (e) {
        const reason = e instanceof CodecError ? e.reason : 'malformed';
        dropped[reason] = (dropped[reason] ?? 0) + 1;
        if (!logged.has(reason)) {
          logged.add(reason);
          logger.warn(
            { reason, err: e instanceof Error ? e.message : String(e) },
            'dropped an undecodable worker command',
          );
        }
        return;
      }
      const answer = (body: WorkerReplyBody): void => {
        if (msg.reply === undefined || msg.reply === '' || nc.isClosed()) return;
        try {
          msg.respond(workerReplyCodec.encode(body));
        } catch (e) {
          // A reply that cannot be encoded (too large) or sent must not take the worker down.
          dropped.reply = (dropped.reply ?? 0) + 1;
          logger.warn({ err: e instanceof Error ? e.message : String(e) }, 'could not send a worker reply');
        }
      };
      const refuse = (e: unknown): void => {
        const error =
          e instanceof TrellisError
            ? { code: e.code, name: e.name, message: e.message }
            : { code: 'INTERNAL', name: 'Error', message: e instanceof Error ? e.message : String(e) };
        refused[error.code] = (refused[error.code] ?? 0) + 1;
        answer({ ok: false, error: { ...error, message: error.message.slice(0, errorMessageCharsMax) } });
      };
      if (decoded.nodeId !== worker.nodeId) {
        refuse(new ValidationError('nodeId', `this is node ${worker.nodeId}, not ${decoded.nodeId}`));
        return;
      }
      // answer and refuse never throw, so no rejection escapes this callback.
      worker.handle(decoded.command).then((reply) => answer({ ok: true, reply }), refuse);
    },
  });
  return {
    subscription,
    dropped: () => ({ ...dropped }),
    refused: () => ({ ...refused }),
    stop: async () => {
      subscription.unsubscribe();
    },
  };
}
