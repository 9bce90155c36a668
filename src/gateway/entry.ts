/**
 * What one entry of the Redis request stream must look like, and what the gateway writes back. Redis
 * stream entries are flat lists of string fields and values, which is what a client in any language (or
 * `redis-cli`) writes most easily, so requests are flat too:
 *
 *   XADD trellis:requests * id req-1 type create reply app:replies spec '{"tenant":"t1",...}'
 *   XADD trellis:requests * id req-2 type terminate reply app:replies sandbox <sandbox id>
 *
 * - `id`: the request id, the idempotency key (a retry with the same id is applied at most once);
 * - `type`: create | terminate | suspend | resume;
 * - `reply`: the stream the outcome is appended to;
 * - `spec` (create): the sandbox spec as JSON; `sandbox` (terminate, suspend, resume): the sandbox id.
 *
 * Parsing is pure and total: every input yields either a request or a dead-letter reason (`deadReasons`),
 * so nothing a client writes can throw past the gateway. The sandbox spec itself is validated by the
 * scheduler behind it, whose ValidationError comes back as a `rejected` outcome with its field path.
 */
import { isId } from '../lib/ids.js';

/** Fields one request entry may carry (the four above, plus one spare so a typo is named, not counted). */
export const entryFieldsMax = 8;
/** Longest value of any field but `spec`, in bytes. */
export const entryValueBytesMax = 1_024;
/** Longest `spec` JSON, in bytes: far above a real spec, far below what would hurt the leader. */
export const specBytesMax = 64 << 10;
/** Longest reply stream name. */
export const streamNameBytesMax = 256;
/** How much of a malformed entry the dead-letter stream keeps, in bytes of JSON. */
export const deadLetterCopyBytesMax = 4_096;

export const requestTypes = ['create', 'terminate', 'suspend', 'resume'] as const;
export type RequestType = (typeof requestTypes)[number];

/** Why an entry went to the dead-letter stream; a bounded set, so it can label a metric. */
export const deadReasons = [
  'missing-field',
  'bad-field',
  'unknown-field',
  'too-large',
  'bad-type',
  'bad-json',
  'bad-reply-stream',
] as const;
export type DeadReason = (typeof deadReasons)[number];

export type GatewayRequest =
  | {
      readonly type: 'create';
      readonly id: string;
      readonly reply: string;
      readonly spec: unknown;
    }
  | {
      readonly type: 'terminate' | 'suspend' | 'resume';
      readonly id: string;
      readonly reply: string;
      readonly sandboxId: string;
    };

export type ParsedEntry =
  | { readonly ok: true; readonly request: GatewayRequest }
  | { readonly ok: false; readonly reason: DeadReason; readonly detail: string };

/**
 * A reply stream name: printable ASCII without spaces (Redis accepts any bytes; a name a log line or a
 * shell cannot show is refused), and never one of the gateway's own streams, so a request cannot make the
 * gateway write into its request, events or dead-letter stream.
 */
const streamNamePattern = /^[A-Za-z0-9_.:{}/-]+$/;

const dead = (reason: DeadReason, detail: string): ParsedEntry => ({ ok: false, reason, detail });

/** Parses one entry's field list (as XREADGROUP returns it: name, value, name, value, …). */
export function parseEntry(fields: readonly string[], reserved: ReadonlySet<string>): ParsedEntry {
  if (fields.length % 2 !== 0) return dead('bad-field', 'odd number of field names and values');
  if (fields.length / 2 > entryFieldsMax)
    return dead('too-large', `${fields.length / 2} fields, at most ${entryFieldsMax}`);
  const map = new Map<string, string>();
  for (let i = 0; i < fields.length; i += 2) {
    const name = fields[i] as string;
    const value = fields[i + 1] as string;
    const limit = name === 'spec' ? specBytesMax : entryValueBytesMax;
    if (Buffer.byteLength(value) > limit)
      return dead('too-large', `${short(name)} is ${Buffer.byteLength(value)} bytes, at most ${limit}`);
    if (map.has(name)) return dead('bad-field', `${short(name)} given twice`);
    map.set(name, value);
  }
  const id = map.get('id');
  const type = map.get('type');
  const reply = map.get('reply');
  if (id === undefined) return dead('missing-field', 'no id');
  if (type === undefined) return dead('missing-field', 'no type');
  if (reply === undefined) return dead('missing-field', 'no reply');
  if (!isId(id)) return dead('bad-field', "id must be 1..128 letters, digits, '_' or '-'");
  if (!(requestTypes as readonly string[]).includes(type))
    return dead('bad-type', `type ${short(type)} is not one of ${requestTypes.join(', ')}`);
  const replyProblem = checkStreamName(reply, reserved);
  if (replyProblem !== undefined) return dead('bad-reply-stream', replyProblem);
  const allowed = type === 'create' ? ['id', 'type', 'reply', 'spec'] : ['id', 'type', 'reply', 'sandbox'];
  for (const name of map.keys()) {
    if (!allowed.includes(name)) return dead('unknown-field', `${type} takes no field ${short(name)}`);
  }
  return type === 'create' ? parseCreate(id, reply, map.get('spec')) : parseOnSandbox(type, id, reply, map);
}

function parseCreate(id: string, reply: string, specText: string | undefined): ParsedEntry {
  if (specText === undefined) return dead('missing-field', 'create needs spec');
  let spec: unknown;
  try {
    spec = JSON.parse(specText);
  } catch (err) {
    return dead('bad-json', `spec is not JSON: ${(err as Error).message.slice(0, 200)}`);
  }
  if (typeof spec !== 'object' || spec === null || Array.isArray(spec))
    return dead('bad-json', 'spec must be a JSON object');
  return { ok: true, request: { type: 'create', id, reply, spec } };
}

function parseOnSandbox(
  type: string,
  id: string,
  reply: string,
  map: ReadonlyMap<string, string>,
): ParsedEntry {
  const sandboxId = map.get('sandbox');
  if (sandboxId === undefined) return dead('missing-field', `${type} needs sandbox`);
  if (!isId(sandboxId)) return dead('bad-field', "sandbox must be 1..128 letters, digits, '_' or '-'");
  return {
    ok: true,
    request: { type: type as 'terminate' | 'suspend' | 'resume', id, reply, sandboxId },
  };
}

/** Why `name` cannot be a reply stream, or undefined when it can. */
export function checkStreamName(name: string, reserved: ReadonlySet<string>): string | undefined {
  if (name.length === 0 || Buffer.byteLength(name) > streamNameBytesMax)
    return `reply stream name must be 1..${streamNameBytesMax} bytes`;
  if (!streamNamePattern.test(name))
    return 'reply stream name may contain only letters, digits and _ . : { } / -';
  if (reserved.has(name)) return `reply stream ${name} is one of the gateway's own streams`;
  return undefined;
}

/** A field name or value cut for a message: client input never makes a long log line. */
function short(s: string): string {
  return JSON.stringify(s.length > 40 ? `${s.slice(0, 40)}…` : s);
}

/** A JSON copy of a malformed entry's fields for the dead-letter stream, cut to `deadLetterCopyBytesMax`. */
export function copyOfFields(fields: readonly string[]): string {
  const pairs: [string, string][] = [];
  let bytes = 0;
  for (let i = 0; i + 1 < fields.length && bytes < deadLetterCopyBytesMax; i += 2) {
    const name = (fields[i] as string).slice(0, 128);
    const value = (fields[i + 1] as string).slice(0, deadLetterCopyBytesMax);
    pairs.push([name, value]);
    bytes += name.length + value.length;
  }
  const text = JSON.stringify(Object.fromEntries(pairs));
  return text.length <= deadLetterCopyBytesMax ? text : `${text.slice(0, deadLetterCopyBytesMax)}…`;
}
