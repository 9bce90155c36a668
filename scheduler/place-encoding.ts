/**
 * The frame of a `place` command, byte for byte what `commandCodec.encode` writes, written without encoding the
 * same parts again for every item: each item key's bytes are kept once, each deeply frozen value (the create
 * path's interned specs, the shared empty GPU list) is encoded once and its bytes copied after, and ids go in as ASCII
 * with no UTF-8 pass. msgpack is compositional (a map is its header, then each key's encoding and each value's,
 * in `Object.keys` order), so the pieces concatenate to the library's own output; the frame's head (kind,
 * version, and the command's other fields) is the library's. test/scheduler/place-encoding.test.ts compares
 * the bytes with `commandCodec.encode` on random commands and at every header boundary.
 *
 * Why: the library encoded each of a batch's 4,000 items in full — six key strings, a spec map of nested maps —
 * 7% of the leader's thread in bench:scheduler.
 */
import { Encoder } from '@msgpack/msgpack';
import { isDeepFrozen } from '../src/lib/freeze.js';
import { commandBytesMax, commandCodec, type PlaceItem } from './commands.js';

/** The encoder the codec uses (src/lib/codec.ts), with the same options, for the parts written by the library. */
const library = new Encoder({ ignoreUndefined: true });

/** Bytes of frozen values (they cannot change), by object: a workload's few interned specs. */
const frozenBytes = new WeakMap<object, Uint8Array>();
/** Bytes of each item key seen (the place item's few keys; bounded by `itemKeysMax`). */
const keyBytes = new Map<string, Uint8Array>();
const itemKeysMax = 64;
/** Bytes per item the output buffer starts with; it doubles when a frame needs more. */
const itemBytesGuess = 192;

class Writer {
  bytes: Uint8Array;
  pos = 0;

  constructor(capacity: number) {
    this.bytes = new Uint8Array(capacity);
  }

  #room(n: number): void {
    if (this.pos + n <= this.bytes.length) return;
    const grown = new Uint8Array(Math.max(this.bytes.length * 2, this.pos + n));
    grown.set(this.bytes.subarray(0, this.pos));
    this.bytes = grown;
  }

  u8(v: number): void {
    this.#room(1);
    this.bytes[this.pos++] = v;
  }

  /** A msgpack header: the fixed form below `fixMax`, else the 16- or 32-bit form with their type bytes. */
  header(n: number, fixBase: number, fixMax: number, t16: number, t32: number): void {
    this.#room(5);
    const b = this.bytes;
    if (n < fixMax) b[this.pos++] = fixBase + n;
    else if (n < 0x10000) {
      b[this.pos++] = t16;
      b[this.pos++] = n >>> 8;
      b[this.pos++] = n & 0xff;
    } else {
      b[this.pos++] = t32;
      b[this.pos++] = n >>> 24;
      b[this.pos++] = (n >>> 16) & 0xff;
      b[this.pos++] = (n >>> 8) & 0xff;
      b[this.pos++] = n & 0xff;
    }
  }

  piece(p: Uint8Array): void {
    this.#room(p.length);
    this.bytes.set(p, this.pos);
    this.pos += p.length;
  }

  /** A string as the library writes it; ASCII directly, anything else through the library. */
  string(s: string): void {
    const n = s.length;
    this.#room(n + 5);
    const start = this.pos;
    // The library's string header (fixstr below 32 bytes, str 8 below 256, then str 16 and str 32).
    if (n < 32) this.bytes[this.pos++] = 0xa0 + n;
    else if (n < 0x100) {
      this.bytes[this.pos++] = 0xd9;
      this.bytes[this.pos++] = n;
    } else this.header(n, 0, 0, 0xda, 0xdb);
    const b = this.bytes;
    for (let i = 0; i < n; i++) {
      const c = s.charCodeAt(i);
      if (c >= 0x80) {
        this.pos = start;
        this.piece(library.encode(s));
        return;
      }
      b[this.pos++] = c;
    }
  }

  value(v: unknown): void {
    if (typeof v === 'string') this.string(v);
    else if (typeof v === 'object' && v !== null && Object.isFrozen(v)) {
      let p = frozenBytes.get(v);
      if (p === undefined) {
        p = library.encode(v);
        // Kept only for a deeply frozen value: nothing inside it can change later.
        if (isDeepFrozen(v)) frozenBytes.set(v, p);
      }
      this.piece(p);
    } else this.piece(library.encode(v));
  }
}

function keyOf(k: string): Uint8Array {
  let p = keyBytes.get(k);
  if (p === undefined) {
    p = library.encode(k);
    if (keyBytes.size < itemKeysMax) keyBytes.set(k, p);
  }
  return p;
}

/**
 * The frame `commandCodec.encode(cmd)` writes, for a `place` command of plain items (objects of string keys
 * without `undefined` values, as the fast check vouches for); undefined when `items` is not the command's last
 * key, or the frame would pass `commandBytesMax` (the codec then writes it, or refuses it, itself).
 */
export function encodePlaceFrame(cmd: {
  readonly type: 'place';
  readonly atMs: number;
  readonly items: readonly PlaceItem[];
}): Uint8Array | undefined {
  const keys = Object.keys(cmd);
  if (keys[keys.length - 1] !== 'items') return undefined;
  const head = commandCodec.encode({ ...cmd, items: [] });
  // The head ends with the empty item list's header (fixarray 0), which the real header replaces.
  if (head[head.length - 1] !== 0x90) return undefined;
  const items = cmd.items;
  const w = new Writer(head.length + 4 + items.length * itemBytesGuess);
  w.piece(head.subarray(0, head.length - 1));
  w.header(items.length, 0x90, 16, 0xdc, 0xdd);
  for (const item of items) {
    const o = item as unknown as Record<string, unknown>;
    // The library's map: own enumerable keys in order (`Object.keys`), those holding `undefined` left out.
    let n = 0;
    for (const k in o) if (Object.hasOwn(o, k) && o[k] !== undefined) n++;
    w.header(n, 0x80, 16, 0xde, 0xdf);
    for (const k in o) {
      if (!Object.hasOwn(o, k)) continue;
      const v = o[k];
      if (v === undefined) continue;
      w.piece(keyOf(k));
      w.value(v);
    }
  }
  if (w.pos > commandBytesMax) return undefined;
  return w.bytes.slice(0, w.pos);
}
