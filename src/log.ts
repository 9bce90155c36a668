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
