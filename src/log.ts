/**
 * Structured logging on pino (well kept, fast, JSON lines that log shippers read as they are). Every process
 * logs one JSON object per line to stderr, so stdout stays free for a command's own output.
 *
 * `TRELLIS_LOG_LEVEL` (trace|debug|info|warn|error|fatal|silent) sets the level; default `info`.
 */
import { pino } from 'pino';

export type Logger = pino.Logger;

const levels = new Set(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']);

/** Creates a logger for one component; `bindings` are added to every line (e.g. replica id, cluster). */
export function createLogger(component: string, bindings: Record<string, string | number> = {}): Logger {
  const wanted = process.env.TRELLIS_LOG_LEVEL ?? 'info';
  const level = levels.has(wanted) ? wanted : 'info';
  return pino({ level, base: { component, ...bindings } }, pino.destination({ dest: 2, sync: false }));
}

/** A logger that drops everything, for libraries embedded without logging and for tests. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}

/** Lines one throttled message writes per window; past it, the window ends with one summary line. */
export const throttledLinesPerWindowMax = 20;
export const throttledWindowMsDefault = 10_000;

/**
 * A warning that anyone on the network can cause (a refused frame, a dropped message) is written at most
 * `throttledLinesPerWindowMax` times per window, then counted by its `reason` and summed up in one line when
 * the window ends: a peer sending garbage at 600 frames a second wrote 1.8 MB of log in 45 s per replica.
 */
export function throttledWarn(
  log: Logger,
  msg: string,
  windowMs = throttledWindowMsDefault,
): (fields: { readonly reason: string; readonly [k: string]: unknown }) => void {
  let written = 0;
  let suppressed: Record<string, number> = {};
  let timer: NodeJS.Timeout | undefined;
  const flush = (): void => {
    timer = undefined;
    const total = Object.values(suppressed).reduce((a, b) => a + b, 0);
    if (total > 0) log.warn({ suppressed: total, byReason: suppressed }, `${msg}: ${total} more not logged`);
    written = 0;
    suppressed = {};
  };
  return (fields) => {
    if (timer === undefined) {
      timer = setTimeout(flush, windowMs);
      timer.unref();
    }
    if (written < throttledLinesPerWindowMax) {
      written++;
      log.warn(fields, msg);
    } else suppressed[fields.reason] = (suppressed[fields.reason] ?? 0) + 1;
  };
}
