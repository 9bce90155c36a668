/**
 * How a long-running command (`trellis server`, `trellis worker`) stops: on the first SIGTERM or SIGINT it
 * closes what it holds, but never waits longer than its stop timeout, because with nats-server gone a drain
 * never finishes and a process must still exit when told to. Later signals are ignored, so a second Ctrl-C
 * cannot cut a shutdown short and leave machines or a half-closed log behind; the timeout bounds it instead.
 */
import type { Logger } from '../log.js';

/** Resolves on the first SIGTERM or SIGINT; later ones are ignored. */
export function stopSignal(): Promise<void> {
  return new Promise<void>((resolve) => {
    process.on('SIGTERM', () => resolve());
    process.on('SIGINT', () => resolve());
  });
}

/** Runs `close` but gives up after `timeoutMs`, logging which of the two ended it. */
export async function stopWithin(timeoutMs: number, log: Logger, close: () => Promise<void>): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<'expired'>((resolve) => {
    timer = setTimeout(() => resolve('expired'), timeoutMs);
  });
  const outcome = await Promise.race([
    close().then(
      () => 'closed' as const,
      (err: unknown) => {
        log.warn({ err: String(err) }, 'error while stopping');
        return 'closed' as const;
      },
    ),
    expired,
  ]);
  clearTimeout(timer);
  if (outcome === 'expired')
    log.warn({ stopTimeoutMs: timeoutMs }, 'could not close cleanly in time; exiting');
}

/** Exits once the log lines written so far have reached stderr (pino writes asynchronously). */
export function exitNow(log: Logger, code: number): never {
  log.flush();
  process.exit(code);
}
