/**
 * Ingress: the leader takes requests from the request stream through a consumer group and applies them
 * through the same `SchedulerApi` calls the NATS adapter makes, the entry's request id being the call's
 * idempotency key.
 *
 * Delivery rules, in the order an entry meets them:
 * - Read with XREADGROUP (new entries) and XAUTOCLAIM (entries pending with any consumer, this one
 *   included, for at least `claimIdleMs`: what a previous leader left, or an earlier attempt here whose
 *   outcome was unknown). No more are read than `inFlightMax` minus those in flight, so a slow pipeline
 *   slows the reading instead of piling requests up in memory.
 * - A malformed entry (entry.ts) is acknowledged with a dead-letter record of why: never retried.
 * - A well-formed one is acknowledged only once the scheduler answered, which for a mutation means its
 *   Raft entry committed; the outcome (placed, done, or rejected with the error code) is appended to the
 *   reply stream by the same script that acknowledges it (redis.ts `ackAndAddScript`), so each entry gets
 *   exactly one outcome even when two replicas finish it.
 * - When the outcome is unknown (the leader was lost, the scheduler closed, the pipeline was full, Redis
 *   failed on the way back), the entry is left pending: a later claim retries it with the same request
 *   id, which the scheduler's dedup table makes harmless.
 */
import type { Redis } from 'ioredis';
import type { SchedulerApi } from '../../scheduler/api.js';
import type { SandboxSpec } from '../../scheduler/commands.js';
import { ConfigError, TrellisError } from '../lib/errors.js';
import type { TrellisMetrics } from '../lib/metrics.js';
import type { Logger } from '../log.js';
import type { GatewayConfig } from './config.js';
import { copyOfFields, type DeadReason, type GatewayRequest, parseEntry } from './entry.js';
import { ackAndAdd, entriesOfClaim, entriesOfRead, isNoGroupError, type StreamEntry } from './redis.js';

/** Error codes after which the request may or may not have been applied: left pending, retried later. */
export const outcomeUnknownCodes: ReadonlySet<string> = new Set([
  'SCHED_NOT_LEADER',
  'SCHED_CLOSED',
  'SCHED_OVERLOADED',
  'DEADLINE_EXCEEDED',
  'OUTCOME_UNKNOWN',
  'UNAVAILABLE',
]);
/** Longest pause after a failed read before the loop tries again. */
export const retryDelayMsMax = 1_000;
/** Longest message of a rejection copied into a reply. */
const replyMessageMax = 1_024;

export type ApplyApi = Pick<SchedulerApi, 'create' | 'terminate' | 'suspend' | 'resume'>;

/** What a request came to: fields of the reply entry, or undefined when its outcome is unknown. */
type Outcome = { readonly outcome: 'placed' | 'done' | 'rejected'; readonly fields: string[] } | undefined;

export interface IngressOptions {
  readonly config: GatewayConfig;
  readonly api: ApplyApi;
  /** This replica's consumer name in the group. */
  readonly consumer: string;
  /** Commands (scripts, XAUTOCLAIM, XINFO). */
  readonly redis: Redis;
  /** Blocking reads only, so a blocked XREADGROUP never delays an acknowledgement. */
  readonly reader: Redis;
  readonly metrics: TrellisMetrics;
  readonly log: Logger;
}

/** One leadership term's reading loop; `stop()` ends it and waits for what is in flight. */
export class Ingress {
  readonly #o: IngressOptions;
  readonly #reserved: ReadonlySet<string>;
  readonly #ackAndAdd: ReturnType<typeof ackAndAdd>;
  /** Entries being applied, by stream id: a claim never starts a second copy of one. */
  readonly #inFlight = new Map<string, Promise<void>>();
  #room: (() => void) | undefined;
  #stopped = false;
  readonly #loop: Promise<void>;

  constructor(o: IngressOptions) {
    this.#o = o;
    this.#reserved = new Set([o.config.requests, o.config.events, o.config.deadLetter]);
    this.#ackAndAdd = ackAndAdd(o.redis);
    this.#loop = this.#run();
  }

  get inFlight(): number {
    return this.#inFlight.size;
  }

  async #run(): Promise<void> {
    const c = this.#o.config;
    let groupReady = false;
    let claimCursor = '0-0';
    let nextClaimMs = 0;
    let failures = 0;
    while (!this.#stopped) {
      try {
        if (!groupReady) groupReady = await this.#ensureGroup();
        await this.#waitForRoom();
        if (this.#stopped) break;
        const free = c.inFlightMax - this.#inFlight.size;
        if (Date.now() >= nextClaimMs) {
          const claimed = entriesOfClaim(
            await this.#o.redis.xautoclaim(
              c.requests,
              c.group,
              this.#o.consumer,
              c.claimIdleMs,
              claimCursor,
              'COUNT',
              free,
            ),
          );
          claimCursor = claimed.next;
          // A full scan of the pending list, then a pause: entries claimed now are idle again no sooner.
          if (claimCursor === '0-0') {
            nextClaimMs = Date.now() + Math.max(1, Math.floor(c.claimIdleMs / 2));
            void this.#sampleLag();
          }
          this.#dispatch(claimed.entries, 'claimed');
          if (claimed.entries.length > 0) continue;
        }
        const read = await this.#o.reader.xreadgroup(
          'GROUP',
          c.group,
          this.#o.consumer,
          'COUNT',
          free,
          'BLOCK',
          c.readBlockMs,
          'STREAMS',
          c.requests,
          '>',
        );
        // Read just as leadership ended: left pending, for the next leader to claim.
        if (this.#stopped) break;
        this.#dispatch(entriesOfRead(read), 'new');
        failures = 0;
      } catch (err) {
        if (this.#stopped) break;
        if (isNoGroupError(err)) groupReady = false;
        failures++;
        this.#o.log.warn({ err: String(err), failures }, 'redis gateway: reading requests failed; retrying');
        await new Promise((r) => setTimeout(r, Math.min(retryDelayMsMax, 50 * failures)));
      }
    }
  }

  /** Creates the consumer group (from the stream's start, so requests written before it are served). */
  async #ensureGroup(): Promise<boolean> {
    const c = this.#o.config;
    try {
      await this.#o.redis.xgroup('CREATE', c.requests, c.group, '0', 'MKSTREAM');
    } catch (err) {
      if (!(err instanceof Error && err.message.includes('BUSYGROUP'))) throw err;
    }
    return true;
  }

  async #waitForRoom(): Promise<void> {
    while (!this.#stopped && this.#inFlight.size >= this.#o.config.inFlightMax) {
      await new Promise<void>((r) => {
        this.#room = r;
      });
    }
  }

  #dispatch(entries: readonly StreamEntry[], source: 'new' | 'claimed'): void {
    for (const [id, fields] of entries) {
      this.#o.metrics.gatewayEntriesRead.inc({ source });
      if (this.#inFlight.has(id)) continue;
      const p = this.#handle(id, fields).finally(() => {
        this.#inFlight.delete(id);
        const wake = this.#room;
        this.#room = undefined;
        wake?.();
      });
      this.#inFlight.set(id, p);
    }
  }

  /** Applies one entry and records its outcome; never throws (what fails stays pending). */
  async #handle(entryId: string, fields: readonly string[]): Promise<void> {
    const c = this.#o.config;
    const m = this.#o.metrics;
    try {
      const parsed = parseEntry(fields, this.#reserved);
      if (!parsed.ok) {
        await this.#deadLetter(entryId, fields, parsed.reason, parsed.detail);
        return;
      }
      const request = parsed.request;
      const result = await this.#apply(request);
      if (result === undefined) {
        m.gatewayOutcomesUnknown.inc();
        return;
      }
      const wrote = await this.#ackAndAdd(
        c.requests,
        request.reply,
        c.group,
        entryId,
        c.replyMaxLen,
        ...['request', request.id, 'entry', entryId, 'type', request.type, ...result.fields],
      );
      if (wrote === 1) m.gatewayEntriesAcked.inc({ outcome: result.outcome });
      if (wrote === -1)
        await this.#deadLetter(entryId, fields, 'bad-reply-stream', 'reply key is not a stream');
    } catch (err) {
      // Redis failed on the way back (or the script did): the entry stays pending and is claimed again.
      m.gatewayOutcomesUnknown.inc();
      if (!this.#stopped)
        this.#o.log.warn({ err: String(err), entry: entryId }, 'redis gateway: could not record an outcome');
    }
  }

  /** Acknowledges a malformed entry with a record of why in the dead-letter stream. */
  async #deadLetter(entryId: string, fields: readonly string[], reason: DeadReason, detail: string) {
    const c = this.#o.config;
    const wrote = await this.#ackAndAdd(
      c.requests,
      c.deadLetter,
      c.group,
      entryId,
      c.replyMaxLen,
      ...['entry', entryId, 'reason', reason, 'detail', detail, 'fields', copyOfFields(fields)],
    );
    if (wrote === 1) {
      this.#o.metrics.gatewayDeadLettered.inc({ reason });
      this.#o.metrics.gatewayEntriesAcked.inc({ outcome: 'dead-letter' });
    }
    // The entry then stays pending (and is logged by the caller) until an operator frees the key.
    if (wrote === -1)
      throw new ConfigError(`dead-letter key ${c.deadLetter} holds something other than a stream`);
  }

  async #apply(r: GatewayRequest): Promise<Outcome> {
    const api = this.#o.api;
    const options = { requestId: r.id };
    try {
      switch (r.type) {
        case 'create': {
          const sb = await api.create(r.spec as SandboxSpec, options);
          return {
            outcome: 'placed',
            fields: ['status', 'placed', 'sandbox', sb.id, 'node', sb.nodeId ?? '', 'state', sb.state],
          };
        }
        case 'terminate':
          await api.terminate(r.sandboxId, options);
          break;
        case 'suspend':
          await api.suspend(r.sandboxId, options);
          break;
        case 'resume':
          await api.resume(r.sandboxId, options);
          break;
      }
      return { outcome: 'done', fields: ['status', 'done', 'sandbox', r.sandboxId] };
    } catch (err) {
      if (!(err instanceof TrellisError) || outcomeUnknownCodes.has(err.code)) {
        if (!(err instanceof TrellisError))
          this.#o.log.error({ err: String(err), request: r.id }, 'redis gateway: unexpected failure');
        return undefined;
      }
      const reason = typeof err.details.reason === 'string' ? err.details.reason : '';
      return {
        outcome: 'rejected',
        fields: [
          'status',
          'rejected',
          'code',
          err.code,
          'reason',
          reason,
          'message',
          err.message.slice(0, replyMessageMax),
        ],
      };
    }
  }

  /** Records the group's lag (entries not yet read) and pending count; best effort. */
  async #sampleLag(): Promise<void> {
    try {
      const groups = (await this.#o.redis.xinfo('GROUPS', this.#o.config.requests)) as unknown[];
      for (const g of groups) {
        const info = pairs(g);
        if (info.get('name') !== this.#o.config.group) continue;
        const lag = Number(info.get('lag'));
        if (Number.isFinite(lag)) this.#o.metrics.gatewayRequestLag.set(lag);
        const pending = Number(info.get('pending'));
        if (Number.isFinite(pending)) this.#o.metrics.gatewayRequestsPending.set(pending);
      }
    } catch {
      // Only a metric: the next scan samples again.
    }
  }

  /** Stops reading; resolves once what is in flight settled, or after `waitMs` (it then stays pending). */
  async stop(waitMs: number): Promise<void> {
    this.#stopped = true;
    this.#room?.();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.allSettled([this.#loop, ...this.#inFlight.values()]),
      new Promise((r) => {
        timer = setTimeout(r, waitMs);
      }),
    ]);
    clearTimeout(timer);
  }
}

/** A Redis reply of alternating names and values as a map. */
export function pairs(reply: unknown): Map<string, unknown> {
  const out = new Map<string, unknown>();
  if (!Array.isArray(reply)) return out;
  for (let i = 0; i + 1 < reply.length; i += 2) out.set(String(reply[i]), reply[i + 1]);
  return out;
}
