/**
 * Argument parsers shared by every `trellis` command: commander calls one per flag value, and a value that
 * does not parse becomes commander's InvalidArgumentError, which the top-level handler in main.ts prints as
 * one `error: … (USAGE)` line with exit code 2. Numbers are parsed strictly (the whole string, decimal
 * digits only): `Number.parseInt('1.5')` is 1 and `Number.parseInt('abc')` is NaN, and both used to run.
 */
import { accessSync, closeSync, constants, openSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { InvalidArgumentError } from 'commander';
import { ConfigError } from '../lib/errors.js';

/** The largest count a flag takes: far above any sane cluster, small enough to stay an exact integer. */
export const countMax = 1_000_000_000;
/** The longest duration a flag takes: one day. */
export const durationMsMax = 86_400_000;
export const portMax = 65_535;

const digits = /^\d+$/;

function integerIn(raw: string, min: number, max: number, what: string): number {
  const s = raw.trim();
  if (!digits.test(s)) {
    throw new InvalidArgumentError(`${JSON.stringify(raw)} is not ${what} in ${min}..${max}`);
  }
  const n = Number(s);
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw new InvalidArgumentError(`${JSON.stringify(raw)} is not ${what} in ${min}..${max}`);
  }
  return n;
}

/** 1, 2, 3 … (a count of nodes, requests, entries). */
export function positiveInt(raw: string): number {
  return integerIn(raw, 1, countMax, 'a positive integer');
}

/** 0, 1, 2 … (a seed, a count that may be zero). */
export function nonNegativeInt(raw: string): number {
  return integerIn(raw, 0, countMax, 'a non-negative integer');
}

const durationUnitsMs: Readonly<Record<string, number>> = { ms: 1, s: 1_000, m: 60_000 };

/** An integer parser for `min..max`, for a flag whose own limit is tighter than `countMax`. */
export function intBetween(min: number, max: number): (raw: string) => number {
  return (raw) => integerIn(raw, min, max, 'an integer');
}

/** A duration in milliseconds: `250`, `250ms`, `5s` or `2m`; at least 1 ms, at most a day. */
export function durationMs(raw: string): number {
  const m = /^(\d+)(ms|s|m)?$/.exec(raw.trim());
  const unit = durationUnitsMs[m?.[2] ?? 'ms'];
  if (m === null || unit === undefined) {
    throw new InvalidArgumentError(`${JSON.stringify(raw)} is not a duration (e.g. 500, 500ms, 5s, 2m)`);
  }
  const n = Number(m[1]) * unit;
  if (!Number.isSafeInteger(n) || n < 1 || n > durationMsMax) {
    throw new InvalidArgumentError(`${JSON.stringify(raw)} is not a duration between 1 ms and 1 day`);
  }
  return n;
}

/** A TCP port, 1..65535. */
export function port(raw: string): number {
  return integerIn(raw, 1, portMax, 'a TCP port');
}

/** `host:port` with a port in range (a listen address). */
export function hostPort(raw: string): string {
  const m = /^([A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\]):(\d+)$/.exec(raw.trim());
  if (m === null) throw new InvalidArgumentError(`${JSON.stringify(raw)} is not host:port`);
  port(m[2] ?? '');
  return raw.trim();
}

const natsSchemes = new Set(['nats:', 'tls:', 'ws:', 'wss:']);

/**
 * One or more NATS server URLs, comma-separated: `nats://host:port`, `tls://…`, or a bare `host:port`
 * (nats.js reads it as `nats://`). Checked here so a typo is a usage error at once, not a silent wait.
 */
export function natsUrls(raw: string): string {
  const urls = raw.split(',').map((u) => u.trim());
  for (const u of urls) {
    const full = /^[a-z]+:\/\//.test(u) ? u : `nats://${u}`;
    let parsed: URL;
    try {
      parsed = new URL(full);
    } catch {
      throw new InvalidArgumentError(`${JSON.stringify(u)} is not a NATS URL (e.g. nats://127.0.0.1:4222)`);
    }
    if (!natsSchemes.has(parsed.protocol) || parsed.hostname === '') {
      throw new InvalidArgumentError(`${JSON.stringify(u)} is not a NATS URL (e.g. nats://127.0.0.1:4222)`);
    }
    if (parsed.port !== '') port(parsed.port);
  }
  return urls.join(',');
}

/** A comma-separated list of non-empty items (spaces around commas are ignored). */
export function commaList(raw: string): string[] {
  return raw
    .split(',')
    .map((x) => x.trim())
    .filter((x) => x !== '');
}

function errCode(err: unknown): string {
  return (err as NodeJS.ErrnoException).code ?? (err as Error).message;
}

/**
 * A file a command will write its report to (`--json FILE`, `--html FILE`), checked when the flag is parsed:
 * its directory exists and is writable, and the path is not a directory. A run of minutes (a simulation, a
 * load benchmark) used to fail only at its end, with the report lost and a stack trace.
 */
export function outputFile(raw: string): string {
  if (raw.trim() === '') throw new InvalidArgumentError('an empty path');
  const path = resolve(raw);
  let isDir = false;
  try {
    isDir = statSync(path).isDirectory();
  } catch {
    // Absent: the file is created, so its directory must exist and be writable (below).
  }
  if (isDir) throw new InvalidArgumentError(`${JSON.stringify(raw)} is a directory`);
  const dir = dirname(path);
  try {
    if (!statSync(dir).isDirectory())
      throw new InvalidArgumentError(`${JSON.stringify(dir)} is not a directory`);
    accessSync(dir, constants.W_OK);
  } catch (err) {
    if (err instanceof InvalidArgumentError) throw err;
    throw new InvalidArgumentError(`cannot write ${JSON.stringify(raw)}: ${errCode(err)}`);
  }
  return raw;
}

/** Writes a report file; a failure (the directory removed since, a full disk) is a typed error, not a crash. */
export function writeOutput(path: string, text: string): void {
  writeOutputs([[path, text]]);
}

/**
 * Writes report files in order. When one fails, the regular files already written (and the part of the
 * failed one) are removed, so no report is left behind by a command that exits with an error. Devices and
 * pipes (`/dev/stdout`) are never removed.
 */
export function writeOutputs(files: readonly (readonly [path: string, text: string])[]): void {
  const written: string[] = [];
  for (const [path, text] of files) {
    try {
      // Opened first: a file that cannot be opened was not touched, and is not removed below.
      const fd = openSync(path, 'w');
      written.push(path);
      try {
        writeFileSync(fd, text);
      } finally {
        closeSync(fd);
      }
    } catch (err) {
      for (const p of written) {
        try {
          if (statSync(p).isFile()) unlinkSync(p);
        } catch {
          // Already gone, or never created.
        }
      }
      throw new ConfigError(`cannot write ${path}: ${errCode(err)}`);
    }
  }
}
