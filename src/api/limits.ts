/**
 * Bounds and defaults of the NATS API that the CLI declares its flags with, in a module of their own so that
 * parsing arguments does not load the client, the protocol's schemas and nats.js.
 */

/** Default deadline of one call, retries included. */
export const callTimeoutMsDefault = 10_000;
/** Items one heartbeat or status call carries. */
export const nodeItemsMax = 10_000;
