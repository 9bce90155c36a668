/**
 * The dispatcher's two ways to reach node workers (`NodeCommandSink`, scheduler/dispatch.ts):
 *
 * - `natsCommandSink`: one request per batch on the node's command subject
 *   (`trellis.<cluster>.node.<nodeId>.cmd`), a `batch` worker command; the worker answers each command on
 *   its own. No answer within the timeout (no worker listening, a slow one) rejects, so the whole batch is
 *   retried; the worker is idempotent on sandbox id, so a batch that did arrive is harmless to resend.
 * - `localCommandSink`: calls in-process `NodeWorker`s directly (the embedded scheduler with workers).
 */
import { ErrorCode, type NatsConnection, NatsError } from 'nats';
import type {
  DispatchOutcome,
  NodeCommand,
  NodeCommandSink,
  NodeExecRequest,
  NodeExecResult,
} from '../../scheduler/dispatch.js';
import { fromWire } from '../api/errors.js';
import { assert } from '../lib/assert.js';
import { OutcomeUnknownError, UnavailableError } from '../lib/errors.js';
import type { SandboxId } from '../lib/ids.js';
import { nodeCommandSubject, workerCommandCodec, workerReplyCodec } from './nats-binding.js';
import type { BatchItemReply, NodeWorker } from './node-worker.js';
import type { LifecycleCommand } from './protocol.js';

/** How long the NATS sink waits for a worker's answer to one batch. */
export const commandTimeoutMsDefault = 5_000;

/** The worker command for one dispatcher command. */
export function toWorkerCommand(cmd: NodeCommand): LifecycleCommand {
  const sandboxId = cmd.sandboxId as SandboxId;
  if (cmd.kind !== 'create') return { type: cmd.kind, sandboxId };
  assert(cmd.resources !== undefined, 'a create carries its resources', { sandboxId });
  return { type: 'create', sandboxId, resources: cmd.resources, image: cmd.image ?? 'default' };
}

function outcomesOf(replies: readonly BatchItemReply[], cmds: readonly NodeCommand[]): DispatchOutcome[] {
  if (replies.length !== cmds.length) throw new UnavailableError('a worker answered a batch partly');
  return replies.map((r, i) => {
    const sent = cmds[i] as NodeCommand;
    if (r.sandboxId !== sent.sandboxId) return { ok: false, code: 'MALFORMED_REPLY' };
    return r.ok ? { ok: true } : { ok: false, code: r.code, message: r.message };
  });
}

export interface NatsCommandSinkOptions {
  readonly timeoutMs?: number;
}

/** Sends each batch as one request on the node's command subject. */
export function natsCommandSink(
  nc: NatsConnection,
  cluster: string,
  options: NatsCommandSinkOptions = {},
): NodeCommandSink {
  const timeout = options.timeoutMs ?? commandTimeoutMsDefault;
  return {
    async send(nodeId, cmds) {
      if (nc.isClosed()) throw new UnavailableError('NATS connection closed');
      const frame = workerCommandCodec.encode({
        nodeId,
        command: { type: 'batch', commands: cmds.map(toWorkerCommand) },
      });
      let data: Uint8Array;
      try {
        data = (await nc.request(nodeCommandSubject(cluster, nodeId), frame, { timeout })).data;
      } catch (err) {
        throw new UnavailableError(`node ${nodeId} did not answer: ${(err as Error).message}`, {
          cause: err,
        });
      }
      const body = workerReplyCodec.decode(data);
      // The whole batch refused (a command for another node, say): each command is refused alike.
      if (!body.ok)
        return cmds.map(() => ({ ok: false, code: body.error.code, message: body.error.message }));
      const reply = body.reply as { type?: unknown; replies?: unknown };
      if (reply.type !== 'batch' || !Array.isArray(reply.replies))
        throw new UnavailableError(`node ${nodeId} answered a batch with ${String(reply.type)}`);
      return outcomesOf(reply.replies as BatchItemReply[], cmds);
    },
    async exec(nodeId, sandboxId, request) {
      if (nc.isClosed()) throw new UnavailableError('NATS connection closed');
      const frame = workerCommandCodec.encode({ nodeId, command: execCommand(sandboxId, request) });
      let data: Uint8Array;
      try {
        // The worker answers when the command ends: its own timeout plus the request's way there and back.
        const wait = request.timeoutMs + timeout;
        data = (await nc.request(nodeCommandSubject(cluster, nodeId), frame, { timeout: wait })).data;
      } catch (err) {
        // Nobody took it: nothing ran. Anything else (a timeout) came after it was sent: it may have run.
        if (err instanceof NatsError && err.code === ErrorCode.NoResponders)
          throw new UnavailableError(`no worker of node ${nodeId} took the exec`, { cause: err });
        throw new OutcomeUnknownError(
          `node ${nodeId} did not answer the exec (${(err as Error).message}); it may have run: retry with the same request id to get its result`,
          { cause: err, details: { nodeId, sandboxId, requestId: request.requestId } },
        );
      }
      const body = workerReplyCodec.decode(data);
      if (!body.ok) throw fromWire({ ...body.error, details: { nodeId, sandboxId } });
      return execResultOf(body.reply, nodeId);
    },
  };
}

function execCommand(sandboxId: string, r: NodeExecRequest) {
  return {
    type: 'exec' as const,
    sandboxId: sandboxId as SandboxId,
    command: [...r.command],
    timeoutMs: r.timeoutMs,
    outputBytesMax: r.outputBytesMax,
    ...(r.stdin === undefined ? {} : { stdin: r.stdin as Uint8Array<ArrayBuffer> }),
    ...(r.requestId === undefined ? {} : { requestId: r.requestId }),
  };
}

/** Checks the worker's exec answer before a caller sees it (the reply schema leaves `reply` open). */
function execResultOf(reply: unknown, nodeId: string): NodeExecResult {
  const r = (reply as { type?: unknown; result?: Record<string, unknown> } | null) ?? {};
  const x = r.result;
  const ok =
    r.type === 'exec' &&
    x !== undefined &&
    (x.exitCode === null || Number.isInteger(x.exitCode)) &&
    (x.signal === null || typeof x.signal === 'string') &&
    x.stdout instanceof Uint8Array &&
    x.stderr instanceof Uint8Array &&
    typeof x.stdoutTruncated === 'boolean' &&
    typeof x.stderrTruncated === 'boolean' &&
    typeof x.timedOut === 'boolean';
  if (!ok) throw new UnavailableError(`node ${nodeId} answered an exec with something else`);
  return x as unknown as NodeExecResult;
}

/** Calls the worker of each node in this process; a node with no worker is unavailable (retried). */
export function localCommandSink(workerOf: (nodeId: string) => NodeWorker | undefined): NodeCommandSink {
  return {
    async send(nodeId, cmds) {
      const worker = workerOf(nodeId);
      if (worker === undefined) throw new UnavailableError(`no worker runs node ${nodeId} in this process`);
      const reply = await worker.handle({ type: 'batch', commands: cmds.map(toWorkerCommand) });
      assert(reply.type === 'batch', 'a batch is answered with a batch', { type: reply.type });
      return outcomesOf(reply.replies, cmds);
    },
    async exec(nodeId, sandboxId, request) {
      const worker = workerOf(nodeId);
      if (worker === undefined) throw new UnavailableError(`no worker runs node ${nodeId} in this process`);
      const reply = await worker.handle(execCommand(sandboxId, request));
      return execResultOf(reply, nodeId);
    },
  };
}
