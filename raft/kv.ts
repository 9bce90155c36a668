/**
 * A small replicated key-value state machine: what `trellis server` runs until the scheduler's state machine
 * replaces it, and what the Raft simulation checks for linearizability. Deterministic: `apply` reads only the
 * entry and the map. Commands are versioned, validated msgpack (src/lib/codec.ts); a command that does not
 * decode is answered with an error result and changes nothing, so a bad proposal cannot stop the log.
 */
import { decode, encode } from '@msgpack/msgpack';
import { z } from 'zod';
import { createCodec } from '../src/lib/codec.js';
import { zodDecoder } from '../src/lib/validate.js';
import type { Entry } from './core/types.js';
import type { StateMachine } from './state-machine.js';

export const kvKeyLengthMax = 1_024;
export const kvValueLengthMax = 64 * 1_024;
/** Keys one store holds; a put beyond it is refused. */
export const kvKeysMax = 1_000_000;

const key = z.string().min(1).max(kvKeyLengthMax);
const value = z.string().max(kvValueLengthMax);
const commandSchema = z.discriminatedUnion('op', [
  z.strictObject({ op: z.literal('put'), key, value }),
  z.strictObject({ op: z.literal('delete'), key }),
  z.strictObject({ op: z.literal('cas'), key, expected: value.nullable(), value }),
]);
export type KvCommand = z.output<typeof commandSchema>;

export const kvCommandCodec = createCodec<KvCommand>({
  kind: 'trellis.kv.command',
  version: 1,
  frameBytesMax: 2 * kvValueLengthMax,
  decoders: { 1: zodDecoder(commandSchema) },
});

export type KvResult =
  | { readonly ok: true; readonly previous: string | null }
  | {
      readonly ok: false;
      readonly error: 'bad-command' | 'full' | 'cas-mismatch';
      readonly current?: string | null;
    };

export class KvStateMachine implements StateMachine<KvResult> {
  #data = new Map<string, string>();

  /** Reads the applied state; callers make it linearizable with a ReadIndex barrier first. */
  get(k: string): string | null {
    return this.#data.get(k) ?? null;
  }

  get size(): number {
    return this.#data.size;
  }

  apply(entry: Entry): KvResult {
    let cmd: KvCommand;
    try {
      cmd = kvCommandCodec.decode(entry.data);
    } catch {
      return { ok: false, error: 'bad-command' };
    }
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
    return encode([...this.#data].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)));
  }

  restore(data: Uint8Array): void {
    const pairs = decode(data) as [string, string][];
    this.#data = new Map(pairs);
  }
}
