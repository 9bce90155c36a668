/** The node worker's defaults and bounds that `trellis worker` declares its flags with, without loading the worker. */

export const workerDefaults = {
  bootsConcurrentMax: 2,
  bootQueueMax: 1024,
  execsConcurrentMax: 16,
  statusFlushMs: 20,
  statusBatchMax: 256,
  statusPendingMax: 65_536,
  tombstonesMax: 100_000,
} as const;

/** Highest boot concurrency a worker takes (`--boots-concurrent`): its boot queue is the useful bound beyond. */
export const bootsConcurrentLimit = 4_096;
