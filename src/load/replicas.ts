/**
 * Reads one replica's own view over its per-replica API subject (`trellis.<cluster>.api.<replica>`): its
 * status (role, term, commit and applied index), and — as stale reads, which a replica answers from its own
 * applied state when asked on its own subject — every sandbox and node it holds. This is what the load
 * checker compares across replicas, and how the chaos schedule finds the leader and times failovers.
 */
import { randomUUID } from 'node:crypto';
import type { NatsConnection } from 'nats';
import type { z } from 'zod';
import type { NodeView } from '../../placement/index.js';
import type { Sandbox } from '../../scheduler/types.js';
import { fromWire } from '../api/errors.js';
import {
  apiReplicaSubject,
  type Call,
  nodeViewSchema,
  pageSchema,
  pageSizeMax,
  type ReplicaStatus,
  replyCodec,
  requestCodec,
  sandboxSchema,
  statusSchema,
} from '../api/protocol.js';
import { Deadline } from '../lib/deadline.js';
import { CodecError } from '../lib/errors.js';

/** Pages one listing may take (a million sandboxes at 1,000 a page). */
const pagesMax = 1_000;

/** One replica's applied state, as the checker reads it. */
export interface ReplicaView {
  readonly replica: string;
  readonly status: ReplicaStatus;
  readonly sandboxes: readonly Sandbox[];
  readonly nodes: readonly NodeView[];
}

async function call<S extends z.ZodType>(
  nc: NatsConnection,
  cluster: string,
  replica: string,
  c: Call,
  schema: S,
  timeoutMs: number,
): Promise<z.output<S>> {
  const frame = requestCodec.encode({
    id: randomUUID(),
    deadline: Deadline.after(timeoutMs).toWire(),
    call: c,
  });
  const msg = await nc.request(apiReplicaSubject(cluster, replica), frame, { timeout: timeoutMs });
  const reply = replyCodec.decode(msg.data);
  if (!reply.ok) throw fromWire(reply.error);
  const parsed = schema.safeParse(reply.result);
  if (!parsed.success) throw new CodecError('shape', `${c.op}: replica ${replica} answered off the protocol`);
  return parsed.data;
}

/** The replica's own status; throws when it does not answer within `timeoutMs`. */
export function replicaStatus(
  nc: NatsConnection,
  cluster: string,
  replica: string,
  timeoutMs = 1_000,
): Promise<ReplicaStatus> {
  return call(nc, cluster, replica, { op: 'status' }, statusSchema, timeoutMs);
}

/** Every sandbox and node the replica holds in its applied state, page by page. */
export async function readReplica(
  nc: NatsConnection,
  cluster: string,
  replica: string,
  timeoutMs = 10_000,
): Promise<ReplicaView> {
  const status = await replicaStatus(nc, cluster, replica, timeoutMs);
  const read = (c: NatsConnection, op: Call, schema: z.ZodType) =>
    call(c, cluster, replica, op, schema, timeoutMs) as Promise<{ items: unknown[]; more: boolean }>;
  const sandboxes = (await allPages((after) =>
    read(
      nc,
      { op: 'list', filter: {}, limit: pageSizeMax, stale: true, ...after },
      pageSchema(sandboxSchema),
    ),
  )) as Sandbox[];
  const nodes = (await allPages((after) =>
    read(nc, { op: 'nodes', limit: pageSizeMax, stale: true, ...after }, pageSchema(nodeViewSchema)),
  )) as NodeView[];
  return { replica, status, sandboxes, nodes };
}

/** Reads a paged call to its end (`after` = the last id of the page before), at most `pagesMax` pages. */
async function allPages(
  page: (after: { after?: string }) => Promise<{ items: unknown[]; more: boolean }>,
): Promise<unknown[]> {
  const items: unknown[] = [];
  let after: string | undefined;
  for (let n = 0; n < pagesMax; n++) {
    const r = await page(after === undefined ? {} : { after });
    items.push(...r.items);
    after = (r.items.at(-1) as { id?: string } | undefined)?.id;
    if (!r.more || after === undefined) break;
  }
  return items;
}
