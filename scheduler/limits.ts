/**
 * Bounds of the scheduler API that callers declare their own options with (the CLI's flags), in a module of
 * their own so that the CLI does not load the scheduler to parse its arguments.
 */

/** How long `create(spec, { wait: 'running' })` waits for running by default. */
export const runningWaitMsDefault = 60_000;
/** Longest wait for running a caller may ask for. */
export const runningWaitMsMax = 10 * 60_000;
/** Longest exec a caller may ask for (the worker's own bound, src/worker/driver.ts `execTimeoutMsMax`). */
export const execTimeoutMsMax = 10 * 60_000;
