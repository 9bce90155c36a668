/**
 * Versioned, validated msgpack payloads. Everything that crosses a process boundary (Raft messages, API
 * requests, worker commands, log entries) is encoded as a msgpack envelope `[kind, version, body]`:
 *
 * - `kind` names the payload type, so a frame meant for another subject is refused rather than misread;
 * - `version` is the schema version; a decoder exists for every version still accepted, and each returns
 *   the current in-memory shape (that is where old payloads are migrated);
 * - `body` is validated before anyone sees it. Nothing that arrives over the network reaches the caller
 *   without passing `decode`, and `decode` throws only `CodecError`.
 *
 * Decoding is bounded: the frame size and every string, binary, array and map length are capped, so a
 * hostile frame cannot make the decoder allocate without limit.
 */
import { Decoder, Encoder } from '@msgpack/msgpack';
import { assert } from './assert.js';
import { CodecError, TrellisError } from './errors.js';

export interface CodecSpec<T> {
  /** Payload type name, e.g. `raft.message`. */
  readonly kind: string;
  /** The version `encode` writes; must have a decoder. */
  readonly version: number;
  /** Largest frame `decode` accepts and `encode` produces, in bytes. */
  readonly frameBytesMax: number;
  /** One validating decoder per accepted version; each returns the current shape or throws. */
  readonly decoders: Readonly<Record<number, (body: unknown) => T>>;
  /** Turns a value into the body to encode; identity when absent. */
  readonly toBody?: (value: T) => unknown;
}

export interface Codec<T> {
  readonly kind: string;
  readonly version: number;
  encode(value: T): Uint8Array;
  /** Decodes and validates a frame; throws CodecError (and nothing else) on any bad input. */
  decode(bytes: Uint8Array): T;
}

/** Per-element limits applied while decoding; generous for real payloads, fatal for hostile ones. */
export const decodeLimits = {
  strLengthMax: 1 << 20,
  binLengthMax: 16 << 20,
  arrayLengthMax: 1 << 20,
  mapLengthMax: 1 << 16,
  extLengthMax: 1 << 10,
} as const;

const sharedEncoder = new Encoder({ ignoreUndefined: true });

function createDecoder(): Decoder {
  return new Decoder({
    maxStrLength: decodeLimits.strLengthMax,
    maxBinLength: decodeLimits.binLengthMax,
    maxArrayLength: decodeLimits.arrayLengthMax,
    maxMapLength: decodeLimits.mapLengthMax,
    maxExtLength: decodeLimits.extLengthMax,
  });
}
const sharedDecoder = createDecoder();

/** Builds a codec from its spec. */
export function createCodec<T>(spec: CodecSpec<T>): Codec<T> {
  assert(spec.kind.length > 0, 'codec kind must not be empty');
  assert(Number.isInteger(spec.version) && spec.version >= 1, 'codec version must be a positive integer', {
    version: spec.version,
  });
  assert(spec.decoders[spec.version] !== undefined, 'the written version must have a decoder', {
    kind: spec.kind,
    version: spec.version,
  });
  const toBody = spec.toBody ?? ((v: T): unknown => v);
  return {
    kind: spec.kind,
    version: spec.version,
    encode(value) {
      const bytes = sharedEncoder.encode([spec.kind, spec.version, toBody(value)]);
      if (bytes.byteLength > spec.frameBytesMax) {
        throw new CodecError(
          'too-large',
          `${spec.kind}: frame of ${bytes.byteLength} bytes exceeds ${spec.frameBytesMax}`,
        );
      }
      return bytes;
    },
    decode(bytes) {
      if (!(bytes instanceof Uint8Array))
        throw new CodecError('malformed', `${spec.kind}: frame is not bytes`);
      if (bytes.byteLength > spec.frameBytesMax) {
        throw new CodecError(
          'too-large',
          `${spec.kind}: frame of ${bytes.byteLength} bytes exceeds ${spec.frameBytesMax}`,
        );
      }
      let raw: unknown;
      try {
        raw = sharedDecoder.decode(bytes);
      } catch (cause) {
        throw new CodecError('malformed', `${spec.kind}: not a msgpack frame`, { cause });
      }
      if (!Array.isArray(raw) || raw.length !== 3) {
        throw new CodecError('envelope', `${spec.kind}: frame is not a [kind, version, body] envelope`);
      }
      const [kind, version, body] = raw as [unknown, unknown, unknown];
      if (kind !== spec.kind) {
        throw new CodecError(
          'kind',
          `expected a ${spec.kind} frame, got ${JSON.stringify(String(kind)).slice(0, 80)}`,
        );
      }
      const decoder = typeof version === 'number' ? spec.decoders[version] : undefined;
      if (decoder === undefined) {
        throw new CodecError('version', `${spec.kind}: unsupported version ${String(version).slice(0, 20)}`, {
          details: { supported: Object.keys(spec.decoders).map(Number) },
        });
      }
      try {
        return decoder(body);
      } catch (cause) {
        const detail = cause instanceof TrellisError ? cause.message : 'invalid body';
        throw new CodecError('shape', `${spec.kind} v${version}: ${detail}`, { cause });
      }
    },
  };
}
