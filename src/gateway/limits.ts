/** The gateway's bounds that `trellis server` declares its `--redis-*` flags with, without loading the gateway. */

/** Largest `--redis-in-flight`: the leader pipeline's pending queue is of this order. */
export const inFlightMaxLimit = 10_000;
