/**
 * Bounds of the placement engine's inputs, in a module of their own: the CLI declares its flags with them
 * without loading the engine (and `immutable`) at start-up.
 */

/** Largest amount of any scalar resource on one node or request (2^31 - 1 fits the Int32 columns). */
export const resourceAmountMax = 0x7fffffff;

/** Requests one batch may carry. */
export const batchRequestsMax = 100_000;
