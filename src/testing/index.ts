/**
 * `trellis/testing`: helpers for users' own tests and for Trellis's tests and benchmarks. Real servers on
 * loopback now; the in-process cluster and capacity-simulation helpers join them as they land.
 */

export type { TestCluster, TestClusterOptions } from './cluster.js';
export { startTestCluster } from './cluster.js';
export type { ClusterShape, WorkloadShape } from './generate.js';
export { generateCluster, generateRequests, gpuInstance, instanceTypes, zones } from './generate.js';
export type { NatsCluster, NatsServerOptions, RunningServer } from './servers.js';
export {
  findBinary,
  freePort,
  loopbackHost,
  serverStartTimeoutMs,
  serverStopTimeoutMs,
  startNats,
  startNatsCluster,
  startRedis,
} from './servers.js';
