/**
 * The load harness's defaults and bounds, apart from the harness: `trellis bench load` reads them to build its
 * flags and help text, and every other command of the CLI then does not load the harness (its driver, checker,
 * HDR histograms), which cost each CLI process start-up time.
 */
import type { ChaosOptions } from './chaos.js';
import type { LoadOptions } from './run.js';

/** Bounds on what one run takes: the harness runs on one machine. */
export const loadNodesMax = 10_000;
export const loadSandboxesMax = 1_000_000;
/** What `trellis bench load` runs without flags. */
export const loadDefaults: LoadOptions = {
  nodes: 1_000,
  sandboxes: 100_000,
  replicas: 3,
  wait: 'running',
  exec: true,
  clients: 8,
  inFlight: { create: 1_024, exec: 512, terminate: 1_024 },
  drainMs: 30_000,
  tickMs: 20,
  cpuProf: false,
  cluster: 'load',
  logLevel: 'warn',
};

/** The chaos schedule of `trellis bench load --chaos`. */
export const chaosDefaults: ChaosOptions = {
  leaderKillEveryMs: 5_000,
  leaderKillsMax: 1_000,
  pauseFollower: true,
  pauseMs: 3_000,
  natsRestart: true,
  workerRestart: true,
};
