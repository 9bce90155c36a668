/**
 * An in-process scheduler cluster for tests, users' included: 3 replicas of a real Raft group (memory
 * storage, or fsynced files under `dir`), nodes registered from a seeded generator, and the handles a test
 * needs — move leadership, compare the replicas, close everything. `log: 'in-process'` swaps Raft for the
 * deterministic stand-in log (no timers: for simulations that drive time themselves).
 */

import type { NodeSpec } from '../../placement/index.js';
import { InProcessLog } from '../../scheduler/in-process-log.js';
import type { ReplicatedLog } from '../../scheduler/log.js';
import { RaftGroupLog } from '../../scheduler/raft-group.js';
import { createScheduler, type Scheduler, type SchedulerConfig } from '../../scheduler/scheduler.js';
import { stateDigest } from '../../scheduler/state-machine.js';
import { ThreadedRaftGroup } from '../../scheduler/threads/group.js';
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
  /** `raft` (default): a Raft group; `in-process`: the stand-in log, no elections or timers. */
  readonly log?: 'raft' | 'in-process';
  /** With `log: 'raft'`: keep each replica's WAL and snapshots under this directory (fsync on). */
  readonly dir?: string;
  /**
   * With `log: 'raft'`: replicas 1..N-1 on worker threads (scheduler/threads). Their state is compared by
   * digest (`log.digest(i)`): `converged()` compares digests, and `replicasEqual()` throws.
   */
  readonly threads?: boolean;
  /** With `threads`: nice added to the worker threads (ThreadedGroupOptions.workerNice). */
  readonly workerNice?: number;
}

export interface TestCluster {
  readonly scheduler: Scheduler;
  readonly log: ReplicatedLog;
  readonly nodes: readonly NodeSpec[];
  /**
   * Moves leadership to the next replica (round robin) and returns its index: at once on the in-process
   * log; by Raft leadership transfer (in the background) on a Raft group.
   */
  changeLeader(): number;
  /** True when every replica's committed state is the same. */
  replicasEqual(): boolean;
  /** On a Raft group: resolves once every replica has applied the same state (or rejects after 10 s). */
  converged(): Promise<void>;
  close(): Promise<void>;
}

/** Request ids `<prefix>-1`, `<prefix>-2`, … for calls made without one, so a seeded run replays exactly. */
function countingIds(prefix: string): () => string {
  let n = 0;
  return () => `${prefix}-${++n}`;
}

/** Starts an in-process cluster and registers its nodes. */
export async function startTestCluster(options: TestClusterOptions = {}): Promise<TestCluster> {
  const log =
    options.log === 'in-process'
      ? new InProcessLog(options.replicas ?? 3)
      : options.threads === true
        ? await ThreadedRaftGroup.open({
            replicas: options.replicas ?? 3,
            ...(options.dir === undefined ? {} : { dir: options.dir }),
            seed: options.seed ?? 1,
            ...(options.pipeline === undefined ? {} : { pipeline: options.pipeline }),
            ...(options.workerNice === undefined ? {} : { workerNice: options.workerNice }),
          })
        : await RaftGroupLog.open({
            replicas: options.replicas ?? 3,
            ...(options.dir === undefined ? {} : { dir: options.dir }),
            seed: options.seed ?? 1,
          });
  const scheduler = createScheduler({
    log,
    ...(options.pipeline === undefined ? {} : { pipeline: options.pipeline }),
    ...(options.now === undefined ? {} : { now: options.now }),
    ...(options.every === undefined ? {} : { every: options.every }),
    requestIds: countingIds(`req-${options.seed ?? 1}`),
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
      if (log instanceof InProcessLog) log.changeLeader(next);
      else void log.transferLeadership(next).catch(() => {});
      return next;
    },
    replicasEqual,
    async converged() {
      const deadline = Date.now() + 10_000;
      while (!(await digestsEqual())) {
        if (Date.now() > deadline) throw new Error('replicas did not converge within 10 s');
        await new Promise((r) => setTimeout(r, 5));
      }
    },
    async close() {
      await scheduler.close();
      if (log instanceof RaftGroupLog || log instanceof ThreadedRaftGroup) await log.close();
    },
  };
  function replicasEqual(): boolean {
    if (log instanceof ThreadedRaftGroup)
      throw new Error('the replicas run on worker threads: compare them with converged() (digests)');
    const first = stateDigest(log.machine(0).state);
    for (let r = 1; r < log.size; r++) if (stateDigest(log.machine(r).state) !== first) return false;
    return true;
  }
  async function digestsEqual(): Promise<boolean> {
    if (!(log instanceof ThreadedRaftGroup)) return replicasEqual();
    const all = await Promise.all(Array.from({ length: log.size }, (_, r) => log.digest(r)));
    return all.every((d) => d === all[0]);
  }
}
