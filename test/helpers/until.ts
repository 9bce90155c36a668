/** What `until` polls: done when it returns anything but `false` or `undefined` (that value is returned). */
export type UntilCondition<T> = () => T | false | undefined | Promise<T | false | undefined>;

export interface UntilOptions {
  /** Give up after this long. Default 10,000 ms. */
  readonly timeoutMs?: number;
  /** Poll this often. Default 10 ms. */
  readonly pollMs?: number;
  /**
   * Treat an error thrown by the condition as "not yet" (the last one is named on timeout). For conditions
   * that ask a cluster that may be between leaders; off by default, so an assertion thrown inside fails at once.
   */
  readonly retryErrors?: boolean;
  /** More context for the timeout message (e.g. a child process's last stderr). */
  readonly why?: () => string;
}

const untilTimeoutMsDefault = 10_000;
const untilPollMsDefault = 10;

/**
 * Polls `cond` until it holds and returns what it returned; fails naming `what` after the timeout (a number
 * is the timeout in ms). For integration tests only: the one polling loop of the test suite.
 */
export async function until<T>(
  cond: UntilCondition<T>,
  what: string,
  options: number | UntilOptions = {},
): Promise<T> {
  const o: UntilOptions = typeof options === 'number' ? { timeoutMs: options } : options;
  const deadline = Date.now() + (o.timeoutMs ?? untilTimeoutMsDefault);
  let lastError: unknown;
  for (;;) {
    try {
      const v = await cond();
      if (v !== false && v !== undefined) return v;
    } catch (err) {
      if (o.retryErrors !== true) throw err;
      lastError = err;
    }
    if (Date.now() > deadline) {
      const last = lastError === undefined ? '' : ` (last error: ${String(lastError)})`;
      const why = o.why?.() ?? '';
      throw new Error(`timed out waiting for ${what}${last}${why === '' ? '' : `; ${why}`}`);
    }
    await new Promise((r) => setTimeout(r, o.pollMs ?? untilPollMsDefault));
  }
}
