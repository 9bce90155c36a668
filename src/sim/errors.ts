/**
 * The simulator's own failure modes. Schema problems in a cluster or workload spec are `ValidationError`s
 * (src/lib/errors.ts) with the dotted path of the field; these classes cover what a schema cannot say.
 */
import { TrellisError, type TrellisErrorOptions } from '../lib/errors.js';

/** A spec file could not be read or is not YAML/JSON at all; `line` and `column` are 1-based when known. */
export class SpecParseError extends TrellisError {
  override readonly name = 'SpecParseError';
  readonly code = 'SPEC_PARSE';
}

/** A trace row is malformed: `line` is the 1-based line of the file, `column` the column's name. */
export class TraceFormatError extends TrellisError {
  override readonly name = 'TraceFormatError';
  readonly code = 'TRACE_FORMAT';
  readonly line: number;
  readonly column: string;
  constructor(line: number, column: string, message: string, options: TrellisErrorOptions = {}) {
    super(`line ${line}, column ${column}: ${message}`, {
      ...options,
      details: { ...options.details, line, column },
    });
    this.line = line;
    this.column = column;
  }
}

/** A sizing search cannot answer: even the largest count tried leaves too much rejected. */
export class SizingError extends TrellisError {
  override readonly name = 'SizingError';
  readonly code = 'SIZING';
}
