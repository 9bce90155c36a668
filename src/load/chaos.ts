/**
 * Chaos under load: while the driver runs, the schedule
 * - kills the leader with SIGKILL every `leaderKillEveryMs` (up to `leaderKillsMax`), once its followers have
 *   caught up (or after 10 s), and restarts it once the group has committed again, timing each failover from
 *   the kill to the first commit of a new term;
 * - pauses one follower with SIGSTOP for `pauseMs`, then SIGCONT;
 * - restarts nats-server once (SIGKILL, then the same port), which every process must ride through;
 * - kills one worker process with SIGKILL and restarts it (its nodes reconcile what they still hold).
 * The events are spread so that no two overlap (a failover is not timed across a nats restart). Each event and
 * its time is logged; the failover times go to the checker.
 */

import { setTimeout as sleep } from 'node:timers/promises';
import type { NatsConnection } from 'nats';
import type { ReplicaStatus } from '../api/protocol.js';
import type { LoadCluster, Member } from './cluster.js';
import { pause, resume } from './processes.js';
import { replicaStatus } from './replicas.js';

export { chaosDefaults } from './defaults.js';

export interface ChaosOptions {
  readonly leaderKillEveryMs: number;
  readonly leaderKillsMax: number;
  readonly pauseFollower: boolean;
  readonly pauseMs: number;
  readonly natsRestart: boolean;
  readonly workerRestart: boolean;
}

/** Polls of each survivor's status while waiting for a new leader's first commit, 10 ms apart (30 s at most). */
const failoverPollsMax = 3_000;
const failoverPollMs = 10;
/** Before a kill, polls 100 ms apart (10 s at most) until each follower applied within 64 of the leader's commit. */
const catchUpPollsMax = 100;
const catchUpPollMs = 100;
const catchUpLagEntriesMax = 64;
/** Polls for a leader before a kill, 100 ms apart (5 s), while the group elects one. */
const leaderWaitPollsMax = 50;
const leaderWaitPollMs = 100;

export interface ChaosEvent {
  readonly atMs: number;
  readonly what: string;
}

export interface ChaosLog {
  readonly events: ChaosEvent[];
  /** Each timed failover: kill to the first commit of a later term, in ms. */
  readonly failoversMs: number[];
}

async function statuses(nc: NatsConnection, cluster: LoadCluster, of: readonly Member[]) {
  const out: ReplicaStatus[] = [];
  await Promise.all(
    of.map(async (m) => {
      const s = await replicaStatus(nc, cluster.o.cluster, m.name, 500).catch(() => undefined);
      if (s !== undefined) out.push(s);
    }),
  );
  return out;
}

/** The replica that says it leads, if one answers. */
export async function findLeader(nc: NatsConnection, cluster: LoadCluster): Promise<Member | undefined> {
  const all = await statuses(nc, cluster, cluster.replicas);
  const leader = all.find((s) => s.role === 'leader');
  return leader === undefined ? undefined : cluster.member(leader.replica);
}

/** Runs the schedule until `stopped()` holds; resolves once every process it touched runs again. */
export async function runChaos(
  nc: NatsConnection,
  cluster: LoadCluster,
  o: ChaosOptions,
  stopped: () => boolean,
  log: ChaosLog,
): Promise<void> {
  const t0 = Date.now();
  const note = (what: string): void => void log.events.push({ atMs: Date.now() - t0, what });
  // The wall clock at the start, so the events line up with the processes' logs (pino's epoch ms `time`).
  note(`chaos start (epoch ms ${t0})`);
  /** Sleeps until `atMs` after the start, or returns false if the run ended first. */
  const until = async (atMs: number): Promise<boolean> => {
    while (!stopped() && Date.now() - t0 < atMs) await sleep(Math.min(50, atMs - (Date.now() - t0)));
    return !stopped();
  };
  // One-off events sit between leader kills: pause at 2.5 s, nats at 7.5 s, worker at 12.5 s.
  const oneOffs: { atMs: number; run: () => Promise<void> }[] = [];
  if (o.pauseFollower)
    oneOffs.push({ atMs: o.leaderKillEveryMs / 2, run: () => pauseFollower(nc, cluster, o, note) });
  if (o.natsRestart)
    oneOffs.push({
      atMs: o.leaderKillEveryMs * 1.5,
      run: async () => {
        note('nats-server: SIGKILL');
        await cluster.crash(cluster.nats);
        await cluster.restart(cluster.nats);
        note('nats-server: restarted');
      },
    });
  if (o.workerRestart)
    oneOffs.push({
      atMs: o.leaderKillEveryMs * 2.5,
      run: async () => {
        const w = cluster.workers[0];
        if (w === undefined) return;
        note(`worker ${w.name}: SIGKILL`);
        await cluster.crash(w);
        await cluster.restart(w);
        note(`worker ${w.name}: restarted`);
      },
    });
  const events: { atMs: number; kill?: true; run: () => Promise<void> }[] = [...oneOffs];
  for (let k = 1; k <= o.leaderKillsMax; k++)
    events.push({
      atMs: k * o.leaderKillEveryMs,
      kill: true,
      run: () => killLeader(nc, cluster, note, log, stopped),
    });
  events.sort((a, b) => a.atMs - b.atMs);
  // A kill is at least `leaderKillEveryMs` after the previous victim was restarted. Fired on the fixed
  // schedule, a kill overdue after a slow failover came right after the restart, while the restarted replica
  // was still catching up: the new leader then could commit nothing until it had (failovers of 24-138 s in a
  // 20,000-sandbox run), which measured the catch-up, not the failover.
  let nextKillAtMs = 0;
  for (const e of events) {
    if (!(await until(e.kill === true ? Math.max(e.atMs, nextKillAtMs) : e.atMs))) return;
    await e.run();
    if (e.kill === true) nextKillAtMs = Date.now() - t0 + o.leaderKillEveryMs;
  }
}

async function pauseFollower(
  nc: NatsConnection,
  cluster: LoadCluster,
  o: ChaosOptions,
  note: (what: string) => void,
): Promise<void> {
  const leader = await findLeader(nc, cluster);
  const follower = cluster.replicas.find((r) => r !== leader);
  if (follower === undefined) return;
  note(`follower ${follower.name}: SIGSTOP`);
  await pause(follower.process);
  await sleep(o.pauseMs);
  resume(follower.process);
  note(`follower ${follower.name}: SIGCONT`);
}

/**
 * True when `s` shows a commit of a term after `before`'s: the entry at its commit index is of a later term,
 * so a new leader has committed (its no-op at least). A replica without `commitTerm` (an older build) is
 * judged by the looser test used before it: a later term and a commit index past the old leader's.
 */
export function committedAfter(s: ReplicaStatus, before: ReplicaStatus): boolean {
  if (s.commitTerm !== undefined) return s.commitTerm > before.term;
  return s.term > before.term && s.commit > before.commit && s.leader !== before.replica;
}

/**
 * Waits (at most `catchUpPollsMax × catchUpPollMs`) until every follower has applied within
 * `catchUpLagEntriesMax` of the leader's commit, and notes how long it waited. A kill while the follower that
 * was just paused or restarted is still catching up times that catch-up, not the failover: the new leader's
 * first commit needs both survivors, and in the 2,000 runs such kills took 0.6-3.8 s, of which the election
 * was 0.2-0.5 s (the role logs). The kill still comes; only its moment moves.
 */
async function waitCaughtUp(
  nc: NatsConnection,
  cluster: LoadCluster,
  leader: Member,
  note: (what: string) => void,
  stopped: () => boolean,
): Promise<void> {
  const started = performance.now();
  for (let i = 0; i < catchUpPollsMax && !stopped(); i++) {
    const all = await statuses(nc, cluster, cluster.replicas);
    const lead = all.find((s) => s.replica === leader.name);
    const behind = all.filter(
      (s) =>
        lead !== undefined && s.replica !== lead.replica && s.applied + catchUpLagEntriesMax < lead.commit,
    );
    if (lead !== undefined && all.length === cluster.replicas.length && behind.length === 0) {
      if (i > 0)
        note(`kill waited ${Math.round(performance.now() - started)} ms for the followers to catch up`);
      return;
    }
    await sleep(catchUpPollMs);
  }
  const waitedMs = Math.round(performance.now() - started);
  note(`kill after ${waitedMs} ms: ${stopped() ? 'the run is over' : 'a follower is still behind'}`);
}

/**
 * Polls each survivor on its own (a slow one does not hold back the other's answer), `failoverPollMs`
 * between answers, until one shows a commit of a later term; the time is taken when that answer arrives,
 * so it includes up to one poll interval and a status round trip: an upper bound on the failover, never an
 * under-estimate. Undefined when none does within `failoverPollsMax × failoverPollMs` of the kill.
 */
async function firstCommitAfter(
  nc: NatsConnection,
  cluster: LoadCluster,
  survivors: readonly Member[],
  before: ReplicaStatus,
  killedAt: number,
): Promise<number | undefined> {
  const deadline = killedAt + failoverPollsMax * failoverPollMs;
  let found: number | undefined;
  await Promise.all(
    survivors.map(async (m) => {
      while (found === undefined && performance.now() < deadline) {
        const s = await replicaStatus(nc, cluster.o.cluster, m.name, 500).catch(() => undefined);
        if (s !== undefined && committedAfter(s, before)) {
          found ??= performance.now() - killedAt;
          return;
        }
        await sleep(failoverPollMs);
      }
    }),
  );
  return found;
}

/** Kills the leader, times the failover, and restarts the old leader. */
async function killLeader(
  nc: NatsConnection,
  cluster: LoadCluster,
  note: (what: string) => void,
  log: ChaosLog,
  stopped: () => boolean,
): Promise<void> {
  // A replica that died by itself (reported by the run) leaves two: killing the leader then would leave no
  // quorum, and the run would wait out every failover instead of measuring one.
  const down = cluster.replicas.filter((r) => !cluster.running(r));
  if (down.length > 0) {
    note(`leader kill skipped: ${down.map((r) => r.name).join(', ')} not running`);
    return;
  }
  // Right after a pause or a restart the group may be electing: wait a little for a leader to kill.
  let leader = await findLeader(nc, cluster);
  for (let i = 0; i < leaderWaitPollsMax && leader === undefined && !stopped(); i++) {
    await sleep(leaderWaitPollMs);
    leader = await findLeader(nc, cluster);
  }
  if (leader === undefined) {
    note('leader kill skipped: no replica says it leads');
    return;
  }
  await waitCaughtUp(nc, cluster, leader, note, stopped);
  // The status the failover is measured from. A busy leader (catching a resumed follower up, on a loaded
  // machine) may miss one 500 ms status deadline: ask again rather than skip the kill without a word, which
  // once left a CI run with a pause and no kill.
  let before = (await statuses(nc, cluster, [leader]))[0];
  for (let i = 0; i < leaderWaitPollsMax && before === undefined && !stopped(); i++) {
    await sleep(leaderWaitPollMs);
    before = (await statuses(nc, cluster, [leader]))[0];
  }
  if (before === undefined) {
    note(`leader kill skipped: ${leader.name} did not answer its status`);
    return;
  }
  const killedAt = performance.now();
  const killedAtEpochMs = Date.now();
  await cluster.crash(leader);
  note(
    `leader ${leader.name} (term ${before.term}, commit ${before.commit}): SIGKILL at epoch ms ${killedAtEpochMs}`,
  );
  const survivors = cluster.replicas.filter((r) => r !== leader);
  const failoverMs = await firstCommitAfter(nc, cluster, survivors, before, killedAt);
  if (failoverMs === undefined) {
    // Counted at the bound, so the run's maximum shows it.
    log.failoversMs.push(failoverPollsMax * failoverPollMs);
    note(`no commit within ${(failoverPollsMax * failoverPollMs) / 1_000} s of the kill`);
  } else {
    log.failoversMs.push(failoverMs);
    note(`failover: first commit of a new term ${Math.round(failoverMs)} ms after the kill`);
  }
  // A restarted replica slow to report ready (30 s, at load 20 in a 20,000 run) is noted, not fatal: the
  // run goes on with it starting, a kill waits for all three, and one that dies shows in unexpectedExits.
  try {
    await cluster.restart(leader);
    note(`replica ${leader.name}: restarted`);
  } catch (err) {
    note(`replica ${leader.name}: restarted, not ready in time (${String(err)})`);
  }
}
