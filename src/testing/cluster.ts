/**
 * An in-process scheduler cluster for tests, users' included: 3 replicas over the in-process log, nodes
 * registered from a seeded generator, and the handles a test needs — move leadership, compare the
 * replicas, close everything.
 */

import type { NodeSpec } from '../../placement/index.js';
import { InProcessLog } from '../../scheduler/in-process-log.js';
import { createScheduler, type Scheduler, type SchedulerConfig } from '../../scheduler/scheduler.js';
import { stateDigest } from '../../scheduler/state-machine.js';
import { createRng } from '../lib/prng.js';
import { generateCluster } from './generate.js';

export interface TestClusterOptions {
  /** Replicas. Default 3. */
  readonly replicas?: number;
  /** Nodes to register, generated from `seed` (all ready). Default 50. */
  readonly nodes?: number;
  readonly seed?: number;
  readonly pipeline?: SchedulerConfig['pipeline'];
  readonly now?: () => number;
  readonly every?: SchedulerConfig['every'];
}

export interface TestCluster {
  readonly scheduler: Scheduler;
  readonly log: InProcessLog;
  readonly nodes: readonly NodeSpec[];
  /** Moves leadership to the next replica (round robin) and returns its index. */
  changeLeader(): number;
  /** True when every replica's committed state is the same. */
  replicasEqual(): boolean;
  close(): void;
}

/** Starts an in-process cluster and registers its nodes. */
export async function startTestCluster(options: TestClusterOptions = {}): Promise<TestCluster> {
  const log = new InProcessLog(options.replicas ?? 3);
  const scheduler = createScheduler({
    log,
    ...(options.pipeline === undefined ? {} : { pipeline: options.pipeline }),
    ...(options.now === undefined ? {} : { now: options.now }),
    ...(options.every === undefined ? {} : { every: options.every }),
  });
  const nodes = generateCluster(createRng(options.seed ?? 1), {
    nodes: options.nodes ?? 50,
    notReadyShare: 0,
  });
  await Promise.all(nodes.map((n) => scheduler.registerNode(n)));
  return {
    scheduler,
    log,
    nodes,
    changeLeader() {
      const next = ((log.leader() ?? 0) + 1) % log.size;
      log.changeLeader(next);
      return next;
    },
    replicasEqual() {
      const first = stateDigest(log.machine(0).state);
      for (let r = 1; r < log.size; r++) if (stateDigest(log.machine(r).state) !== first) return false;
      return true;
    },
    close() {
      scheduler.close();
    },
  };
}
