/**
 * A small replicated key-value state machine: what `trellis server` runs until the scheduler's state machine
 * replaces it, and what the Raft simulation checks for linearizability. Deterministic: `apply` reads only the
 * entry and its own state, never a clock. Commands are versioned, validated msgpack (src/lib/codec.ts); a
 * command that does not decode is answered with an error result and changes nothing, so a bad proposal
 * cannot stop the log.
 *
 * Client sessions (Raft thesis §6.3) make a retried command take effect once. A mutating command may carry
 * `session: { client, seq, issuedMs }`; each client numbers its commands 1, 2, 3… and sends one at a time,
 * retrying a command with the same number. The machine keeps, per client, the last number applied and its
 * result (`KvSessionTable`):
 *
 * - `seq` equal to the last: a duplicate; it returns the first outcome and changes nothing;
 * - `seq` below the last: an old attempt overtaken by a newer command; refused (`stale-request`), no effect;
 * - `seq` above the last, or a client not in the table: applied, and its result remembered.
 *
 * The table is bounded (`kvSessionsMax` clients, `kvSessionResultBytesMax` of cached results; the least
 * recently used client goes first) and expires a client idle for `kvSessionIdleMsMax`. Time is the
 * machine's own clock: the largest `stampMs` the leader wrote into a committed entry when it proposed it,
 * so every replica expires the same clients at the same entry. A forgotten client's late duplicate must not
 * look new: the table keeps `forgottenIssuedMs`, the largest `issuedMs` (the client's own clock when it
 * started the command, the same on every retry) of any client it forgot, and refuses a command from an
 * unknown client issued at or before it (`session-expired`). A client's `issuedMs` never decreases, so every
 * attempt of a forgotten client's commands is at or before that mark, whatever the clocks of other
 * machines; a new client whose clock lags the forgotten ones' is refused too (liveness, not safety).
 */
import { decode } from '@msgpack/msgpack';
import { z } from 'zod';
import { assert } from '../src/lib/assert.js';
import { createCodec } from '../src/lib/codec.js';
import { CodecError } from '../src/lib/errors.js';
import { parseWith, zodDecoder } from '../src/lib/validate.js';
import type { Entry } from './core/types.js';
import type { StateMachine } from './state-machine.js';

export const kvKeyLengthMax = 1_024;
export const kvValueLengthMax = 64 * 1_024;
/** Keys one store holds; a put beyond it is refused. */
export const kvKeysMax = 1_000_000;
/** Clients the session table remembers; beyond it the least recently used is forgotten. */
export const kvSessionsMax = 10_000;
/** Bytes of cached results (previous values) the session table keeps, for all clients together. */
export const kvSessionResultBytesMax = 32 << 20;
/** A client with no command for this long (machine clock: leader stamps) is forgotten. */
export const kvSessionIdleMsMax = 60 * 60_000;
/** Longest client id. */
export const kvClientIdLengthMax = 64;
/** A snapshot, at most. */
export const kvSnapshotBytesMax = 1 << 30;

const key = z.string().min(1).max(kvKeyLengthMax);
const value = z.string().max(kvValueLengthMax);
const sessionSchema = z.strictObject({
  client: z.string().min(1).max(kvClientIdLengthMax),
  seq: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER),
  issuedMs: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
});
/** A command's place in its client's session. */
export type KvSessionRef = z.output<typeof sessionSchema>;
export { sessionSchema as kvSessionRefSchema };

const ops = {
  put: { op: z.literal('put'), key, value },
  delete: { op: z.literal('delete'), key },
  cas: { op: z.literal('cas'), key, expected: value.nullable(), value },
};
/** Version 1: the bare operation. */
const commandSchemaV1 = z.discriminatedUnion('op', [
  z.strictObject(ops.put),
  z.strictObject(ops.delete),
  z.strictObject(ops.cas),
]);
/** Version 2: the operation, its client session (optional) and the proposing leader's clock. */
const meta = {
  session: sessionSchema.optional(),
  stampMs: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).optional(),
};
const commandSchema = z.discriminatedUnion('op', [
  z.strictObject({ ...ops.put, ...meta }),
  z.strictObject({ ...ops.delete, ...meta }),
  z.strictObject({ ...ops.cas, ...meta }),
]);
export type KvCommand = z.output<typeof commandSchema>;

export const kvCommandCodec = createCodec<KvCommand>({
  kind: 'trellis.kv.command',
  version: 2,
  frameBytesMax: 2 * kvValueLengthMax + 1_024,
  decoders: { 1: zodDecoder(commandSchemaV1), 2: zodDecoder(commandSchema) },
});

export type KvResult =
  | { readonly ok: true; readonly previous: string | null }
  | {
      readonly ok: false;
      readonly error: 'bad-command' | 'full' | 'cas-mismatch' | 'stale-request' | 'session-expired';
      readonly current?: string | null;
    };

interface Session {
  readonly lastSeq: number;
  readonly lastIssuedMs: number;
  /** Machine clock when the client's last command was applied (its place in the LRU order). */
  readonly lastActiveMs: number;
  readonly result: KvResult;
}

/** What the table says about a command before it is applied. */
export type SessionVerdict =
  | { readonly kind: 'new' }
  | { readonly kind: 'answered'; readonly result: KvResult };

/** Bytes a cached result is charged for: its strings (previous or current value) plus a fixed overhead. */
function resultBytes(r: KvResult): number {
  const held = r.ok ? r.previous : (r.current ?? null);
  return 64 + (held === null ? 0 : held.length * 2);
}

/** The session table: the rules are in the module comment. Deterministic: time is the entries' stamps. */
export class KvSessionTable {
  /** Least recently active first: a Map keeps insertion order, and a touch re-inserts at the end. */
  #sessions = new Map<string, Session>();
  #resultBytes = 0;
  /** The machine clock: the largest leader stamp applied. */
  #clockMs = 0;
  /** The largest `issuedMs` of any client forgotten; 0 while none has been. */
  #forgottenIssuedMs = 0;

  get size(): number {
    return this.#sessions.size;
  }
  get clockMs(): number {
    return this.#clockMs;
  }
  get forgottenIssuedMs(): number {
    return this.#forgottenIssuedMs;
  }
  get resultBytes(): number {
    return this.#resultBytes;
  }
  has(client: string): boolean {
    return this.#sessions.has(client);
  }

  /** Moves the clock to a committed entry's stamp (never backwards: leaders' clocks may disagree). */
  advance(stampMs: number): void {
    if (stampMs > this.#clockMs) this.#clockMs = stampMs;
    this.#expire();
  }

  /** Judges a command before it is applied; see the module comment. */
  check(ref: KvSessionRef): SessionVerdict {
    const s = this.#sessions.get(ref.client);
    if (s === undefined) {
      return ref.issuedMs <= this.#forgottenIssuedMs
        ? { kind: 'answered', result: { ok: false, error: 'session-expired' } }
        : { kind: 'new' };
    }
    if (ref.seq === s.lastSeq) return { kind: 'answered', result: s.result };
    if (ref.seq < s.lastSeq) return { kind: 'answered', result: { ok: false, error: 'stale-request' } };
    return { kind: 'new' };
  }

  /** Remembers the result of a command `check` called new, then enforces the bounds. */
  record(ref: KvSessionRef, result: KvResult): void {
    const old = this.#sessions.get(ref.client);
    assert(old === undefined || ref.seq > old.lastSeq, 'a session records only newer commands', {
      client: ref.client,
      seq: ref.seq,
      lastSeq: old?.lastSeq,
    });
    if (old !== undefined) this.#drop(ref.client, old, false);
    const s: Session = {
      lastSeq: ref.seq,
      lastIssuedMs: Math.max(ref.issuedMs, old?.lastIssuedMs ?? 0),
      lastActiveMs: this.#clockMs,
      result,
    };
    this.#sessions.set(ref.client, s);
    this.#resultBytes += resultBytes(result);
    while (this.#sessions.size > kvSessionsMax || this.#resultBytes > kvSessionResultBytesMax) {
      const [client, lru] = this.#sessions.entries().next().value as [string, Session];
      this.#drop(client, lru, true);
    }
  }

  #drop(client: string, s: Session, forget: boolean): void {
    this.#sessions.delete(client);
    this.#resultBytes -= resultBytes(s.result);
    if (forget && s.lastIssuedMs > this.#forgottenIssuedMs) this.#forgottenIssuedMs = s.lastIssuedMs;
  }

  /** Forgets clients idle too long; the LRU order is by activity, so only the head need be looked at. */
  #expire(): void {
    for (;;) {
      const head = this.#sessions.entries().next();
      if (head.done === true) return;
      const [client, s] = head.value;
      if (s.lastActiveMs + kvSessionIdleMsMax >= this.#clockMs) return;
      this.#drop(client, s, true);
    }
  }

  /** The table as plain data, in LRU order. */
  toSnapshot(): SessionsSnapshot {
    return {
      clockMs: this.#clockMs,
      forgottenIssuedMs: this.#forgottenIssuedMs,
      clients: [...this.#sessions].map(([client, s]) => [
        client,
        s.lastSeq,
        s.lastIssuedMs,
        s.lastActiveMs,
        s.result,
      ]),
    };
  }

  static fromSnapshot(snap: SessionsSnapshot): KvSessionTable {
    const t = new KvSessionTable();
    t.#clockMs = snap.clockMs;
    t.#forgottenIssuedMs = snap.forgottenIssuedMs;
    for (const [client, lastSeq, lastIssuedMs, lastActiveMs, result] of snap.clients) {
      t.#sessions.set(client, { lastSeq, lastIssuedMs, lastActiveMs, result: result as KvResult });
      t.#resultBytes += resultBytes(result as KvResult);
    }
    return t;
  }
}

const resultSchema = z.union([
  z.strictObject({ ok: z.literal(true), previous: value.nullable() }),
  z.strictObject({
    ok: z.literal(false),
    error: z.enum(['bad-command', 'full', 'cas-mismatch', 'stale-request', 'session-expired']),
    current: value.nullable().optional(),
  }),
]);
const ms = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const sessionsSnapshotSchema = z.strictObject({
  clockMs: ms,
  forgottenIssuedMs: ms,
  clients: z
    .array(
      z.tuple([z.string().min(1).max(kvClientIdLengthMax), z.number().int().min(1), ms, ms, resultSchema]),
    )
    .max(kvSessionsMax),
});
type SessionsSnapshot = z.output<typeof sessionsSnapshotSchema>;
const pairsSchema = z.array(z.tuple([key, value])).max(kvKeysMax);
const snapshotSchema = z.strictObject({ pairs: pairsSchema, sessions: sessionsSnapshotSchema });

/**
 * Snapshot format, version 2: the sorted key/value pairs and the session table. Version 1 (before
 * sessions) was the bare msgpack array of pairs, without an envelope; `restore` still reads it.
 */
const kvSnapshotCodec = createCodec<z.output<typeof snapshotSchema>>({
  kind: 'trellis.kv.snapshot',
  version: 2,
  frameBytesMax: kvSnapshotBytesMax,
  decoders: { 2: zodDecoder(snapshotSchema) },
});

export class KvStateMachine implements StateMachine<KvResult> {
  #data = new Map<string, string>();
  #sessions = new KvSessionTable();

  /** Reads the applied state; callers make it linearizable with a ReadIndex barrier first. */
  get(k: string): string | null {
    return this.#data.get(k) ?? null;
  }

  get size(): number {
    return this.#data.size;
  }

  /** The client session table, for inspection (status, tests). */
  get sessions(): KvSessionTable {
    return this.#sessions;
  }

  apply(entry: Entry): KvResult {
    let cmd: KvCommand;
    try {
      cmd = kvCommandCodec.decode(entry.data);
    } catch {
      return { ok: false, error: 'bad-command' };
    }
    if (cmd.stampMs !== undefined) this.#sessions.advance(cmd.stampMs);
    if (cmd.session === undefined) return this.#execute(cmd);
    const verdict = this.#sessions.check(cmd.session);
    if (verdict.kind === 'answered') return verdict.result;
    const result = this.#execute(cmd);
    this.#sessions.record(cmd.session, result);
    return result;
  }

  #execute(cmd: KvCommand): KvResult {
    const previous = this.#data.get(cmd.key) ?? null;
    switch (cmd.op) {
      case 'put':
        if (previous === null && this.#data.size >= kvKeysMax) return { ok: false, error: 'full' };
        this.#data.set(cmd.key, cmd.value);
        return { ok: true, previous };
      case 'delete':
        this.#data.delete(cmd.key);
        return { ok: true, previous };
      case 'cas':
        if (previous !== cmd.expected) return { ok: false, error: 'cas-mismatch', current: previous };
        if (previous === null && this.#data.size >= kvKeysMax) return { ok: false, error: 'full' };
        this.#data.set(cmd.key, cmd.value);
        return { ok: true, previous };
    }
  }

  snapshot(): Uint8Array {
    // Sorted, so equal states give byte-equal snapshots on every replica.
    const pairs = [...this.#data].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    return kvSnapshotCodec.encode({ pairs, sessions: this.#sessions.toSnapshot() });
  }

  /** Reads both snapshot formats; throws CodecError (and changes nothing) on anything else. */
  restore(data: Uint8Array): void {
    let raw: unknown;
    try {
      raw = decode(data);
    } catch (cause) {
      throw new CodecError('malformed', 'kv snapshot: not msgpack', { cause });
    }
    if (Array.isArray(raw) && typeof raw[0] === 'string') {
      const snap = kvSnapshotCodec.decode(data);
      this.#data = new Map(snap.pairs);
      this.#sessions = KvSessionTable.fromSnapshot(snap.sessions);
      return;
    }
    let pairs: [string, string][];
    try {
      pairs = parseWith(pairsSchema, raw, 'snapshot');
    } catch (cause) {
      throw new CodecError('shape', 'kv snapshot (v1): not a list of key/value pairs', { cause });
    }
    this.#data = new Map(pairs);
    this.#sessions = new KvSessionTable();
  }
}
