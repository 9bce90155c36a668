/**
 * The WAL record format and the segment scanner that tells a torn tail from corruption. No I/O: the caller
 * reads a segment's bytes and decides what to do with the scan (FileStorage truncates a torn tail on open;
 * `trellis data check` only reports it).
 *
 * A record is `[u32 length][u32 crc32c][u8 type][payload]` (little-endian; `length` counts type and payload;
 * the CRC covers type and payload, not the length field).
 *
 * Why scanning forward rather than a header checksum: the length field has no checksum of its own, so a
 * damaged length can make a record in the middle of a file look like the unfinished last write (it seems to
 * run past the end of the file). We could give the header its own CRC, but that changes the format (every
 * existing data directory would need a migration) and still leaves a damaged header unexplained: with its
 * length unknown, nothing says where the next record begins. Scanning forward answers the question that
 * matters directly and works on the format as it is: a crash can only tear the last write, so nothing intact
 * can follow a torn tail. If any offset after the damaged point starts a record whose CRC holds, records
 * were written after the damage and the damage is corruption. Only when no intact record follows is it a
 * torn tail. (A record of random bytes passes CRC-32C with probability 2^-32 per offset tried; such a
 * false match errs towards refusing, never towards dropping data.) The scan runs only on the damaged path
 * and stops at the first intact record, so a healthy open pays nothing for it.
 *
 * What this cannot see: damage confined to the last record of the last segment looks exactly like a torn
 * write, so it is truncated. No format can tell those apart without writing something after the record.
 */
import { assert } from '../../src/lib/assert.js';
import { crc32c } from './crc32c.js';

/** The largest record accepted on write or read. */
export const recordBytesMax = 64 << 20;
/** Length and CRC fields. */
export const recordPrefixBytes = 8;
/** Length, CRC and type. */
export const recordHeaderBytes = 9;
export const recEntry = 1;
export const recHardState = 2;
export const recSnapshotMarker = 3;

export function encodeRecord(type: number, payload: Uint8Array): Uint8Array {
  assert(payload.length + 1 <= recordBytesMax, 'record too large', { bytes: payload.length });
  const out = new Uint8Array(recordHeaderBytes + payload.length);
  const view = new DataView(out.buffer);
  out[recordPrefixBytes] = type;
  out.set(payload, recordHeaderBytes);
  view.setUint32(0, payload.length + 1, true);
  view.setUint32(4, crc32c(out, recordPrefixBytes), true);
  return out;
}

/**
 * msgpack's bin header for `n` bytes (bin 8, 16 or 32: the smallest that holds `n`, as @msgpack/msgpack
 * writes it), so a record can carry a byte string it does not copy.
 */
function binHeader(n: number): number[] {
  if (n < 0x100) return [0xc4, n];
  if (n < 0x10000) return [0xc5, n >>> 8, n & 0xff];
  return [0xc6, n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff];
}

/**
 * The record `encodeRecord(type, msgpack([...prefix, tail]))` byte for byte, as two pieces: a head (record
 * header, the array's msgpack up to `tail`'s bin header) and `tail` itself, uncopied. `prefixBody` is the
 * msgpack of `prefix` as an array (its first byte, a fixarray of `prefix.length` elements, is rewritten for
 * one element more). A Raft entry's data is most of a WAL's bytes; this keeps it from being copied twice per
 * save (into the encoder's buffer, then into the record). The caller must not change `tail` afterwards.
 */
export function encodeRecordWithTail(
  type: number,
  prefixBody: Uint8Array,
  tail: Uint8Array,
): [Uint8Array, Uint8Array] {
  const count = (prefixBody[0] as number) - 0x90;
  assert(count >= 0 && count < 15, 'the prefix is a msgpack fixarray of fewer than 15 elements', {
    first: prefixBody[0],
  });
  const bin = binHeader(tail.length);
  const payloadBytes = prefixBody.length + bin.length + tail.length;
  assert(payloadBytes + 1 <= recordBytesMax, 'record too large', { bytes: payloadBytes });
  const head = new Uint8Array(recordHeaderBytes + prefixBody.length + bin.length);
  const view = new DataView(head.buffer);
  head[recordPrefixBytes] = type;
  head.set(prefixBody, recordHeaderBytes);
  head[recordHeaderBytes] = 0x90 + count + 1;
  head.set(bin, recordHeaderBytes + prefixBody.length);
  view.setUint32(0, payloadBytes + 1, true);
  view.setUint32(4, crc32c(tail, 0, tail.length, crc32c(head, recordPrefixBytes)), true);
  return [head, tail];
}

export interface ScannedRecord {
  readonly type: number;
  readonly payload: Uint8Array;
  /** Byte offset of the record in its segment. */
  readonly offset: number;
}

export interface SegmentDamage {
  /** Where the first record that does not check out begins. */
  readonly offset: number;
  readonly reason: string;
  /** The offset of an intact record after the damage, if there is one: then the damage cannot be a torn tail. */
  readonly intactAfter: number | undefined;
}

export interface SegmentScan {
  /** The intact records before any damage, in order. */
  readonly records: readonly ScannedRecord[];
  readonly damage: SegmentDamage | undefined;
}

/** What is wrong with the record at `off`, or undefined when it is intact (its length is then readable). */
function recordProblem(bytes: Uint8Array, view: DataView, off: number): string | undefined {
  if (off + recordHeaderBytes > bytes.length) return 'record header cut short';
  const length = view.getUint32(off, true);
  if (length < 1 || length > recordBytesMax) return `impossible record length ${length}`;
  if (off + recordPrefixBytes + length > bytes.length) return `record of ${length} bytes cut short`;
  if (
    view.getUint32(off + 4, true) !== crc32c(bytes, off + recordPrefixBytes, off + recordPrefixBytes + length)
  )
    return 'checksum mismatch';
  return undefined;
}

/** The first offset after `from` where an intact record starts, if any. */
function intactRecordAfter(bytes: Uint8Array, view: DataView, from: number): number | undefined {
  for (let p = from + 1; p + recordHeaderBytes <= bytes.length; p++) {
    if (recordProblem(bytes, view, p) === undefined) return p;
  }
  return undefined;
}

/** Splits a segment into records up to the first damaged one, and says whether anything intact follows it. */
export function scanSegment(bytes: Uint8Array): SegmentScan {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const records: ScannedRecord[] = [];
  let off = 0;
  while (off < bytes.length) {
    const problem = recordProblem(bytes, view, off);
    if (problem !== undefined) {
      return {
        records,
        damage: { offset: off, reason: problem, intactAfter: intactRecordAfter(bytes, view, off) },
      };
    }
    const length = view.getUint32(off, true);
    records.push({
      type: bytes[off + recordPrefixBytes] as number,
      payload: bytes.subarray(off + recordHeaderBytes, off + recordPrefixBytes + length),
      offset: off,
    });
    off += recordPrefixBytes + length;
  }
  return { records, damage: undefined };
}

/**
 * A torn tail is only what a crash can leave: damage in the last segment with no intact record after it
 * (a write cut short, or zeros the data never reached). Anything else is corruption.
 */
export function isTornTail(damage: SegmentDamage, isLastSegment: boolean): boolean {
  return isLastSegment && damage.intactAfter === undefined;
}
