/**
 * The replica-to-replica protocol a follower uses to hand a caller's request to the leader: versioned
 * msgpack envelopes (`trellis.scheduler.forward` v1), validated by zod on decode, so a forwarded request
 * arriving over a network is checked like any other input. Each request carries its deadline in the wire
 * form of src/lib/deadline.ts; the leader drops one that arrives past it (`DeadlineExceededError`) instead
 * of proposing work whose caller has already given up and may have retried.
 *
 * In-process the forwarder calls the other replica's `handle` directly; over NATS the server sends the same
 * bytes on `trellis.<cluster>.api.<leaderId>` and returns the reply's bytes.
 */
import { z } from 'zod';
import { createCodec } from '../src/lib/codec.js';
import { deadlineWireSchema } from '../src/lib/deadline.js';
import { TrellisError } from '../src/lib/errors.js';
import { zodDecoder } from '../src/lib/validate.js';
import { commandBytesMax, idSchema, sandboxSpecSchema } from './commands.js';
import { errorFromResult } from './errors.js';

/** Sends an encoded request to replica `leaderId` and resolves with its encoded reply. */
export type Forwarder = (leaderId: string, request: Uint8Array) => Promise<Uint8Array>;

/** Node ids one forwarded heartbeat may carry. */
export const forwardHeartbeatsMax = 100_000;

/** The request's deadline as src/lib/deadline.ts puts it on the wire (absolute time and budget left). */
const deadline = deadlineWireSchema;

export const forwardRequestSchema = z.discriminatedUnion('op', [
  z.strictObject({ op: z.literal('create'), deadline, requestId: idSchema, spec: sandboxSpecSchema }),
  /** An encoded scheduler command (commands.ts); the leader decodes and validates it on apply. */
  z.strictObject({
    op: z.literal('command'),
    deadline,
    data: z.custom<Uint8Array>((v) => v instanceof Uint8Array, 'bytes'),
  }),
  /** A ReadIndex through the leader (§6.4): the reply's `index` is what the follower must apply first. */
  z.strictObject({ op: z.literal('readIndex'), deadline }),
  z.strictObject({
    op: z.literal('heartbeat'),
    deadline,
    nodeIds: z.array(idSchema).max(forwardHeartbeatsMax),
  }),
]);
export type ForwardRequest = z.output<typeof forwardRequestSchema>;

const errorSchema = z.strictObject({ code: z.string().max(64), message: z.string().max(4096) });

export const forwardReplySchema = z.union([
  z.strictObject({ ok: z.literal(true), value: z.unknown() }),
  z.strictObject({ ok: z.literal(false), error: errorSchema }),
]);
export type ForwardReply = z.output<typeof forwardReplySchema>;

export const forwardRequestCodec = createCodec<ForwardRequest>({
  kind: 'trellis.scheduler.forward',
  version: 1,
  frameBytesMax: commandBytesMax,
  decoders: { 1: zodDecoder(forwardRequestSchema) },
});

export const forwardReplyCodec = createCodec<ForwardReply>({
  kind: 'trellis.scheduler.forward-reply',
  version: 1,
  frameBytesMax: commandBytesMax,
  decoders: { 1: zodDecoder(forwardReplySchema) },
});

/** The reply for an error: typed errors keep their code; anything else is a programmer error and rethrown. */
export function errorReply(err: unknown): ForwardReply {
  if (!(err instanceof TrellisError)) throw err;
  return { ok: false, error: { code: err.code, message: err.message } };
}

/** The value of a reply, or its error as the same typed class. */
export function replyValue(reply: ForwardReply): unknown {
  if (!reply.ok) throw errorFromResult(reply.error);
  return reply.value;
}
