/**
 * The load run's checker: from every replica's applied state (replicas.ts) and the client's log of what the
 * cluster acknowledged, it counts the failures that must never happen, whatever the faults:
 * - lostAcked: an acknowledged create the cluster no longer knows — a later call on the sandbox was answered
 *   "unknown sandbox", or a replica holds no trace of a sandbox whose terminate was never sent or was refused
 *   (one whose terminate got no answer may have been terminated);
 * - doublePlaced: a sandbox held on another node than the one its create acknowledged (these sandboxes are not
 *   stateless, so nothing may move them), held on different nodes by two replicas, or listed twice;
 * - overCommitted: a node whose held sandboxes (or committed allocation) exceed its capacity on any replica;
 * - stuck: a sandbox still in a non-final state (anything but terminated, which is forgotten, or failed)
 *   after the drain, on the caught-up replica that holds the most of them;
 * - replicasBehind: replicas whose applied index is short of the others' after the drain. Lost and stuck are
 *   judged on the caught-up replicas only (one behind lacks the latest creates and terminates by definition);
 *   placed twice and over capacity on every replica, since they must hold on any prefix of the log;
 * - failovers: each leader kill's time to the next commit, from the chaos schedule.
 *
 * Pure: it reads what it is given and decides; reading the replicas and timing failovers happen elsewhere.
 */
import type { Resources } from '../../placement/index.js';
import { holdsAllocation, type SandboxState } from '../../scheduler/lifecycle.js';
import type { ReplicaView } from './replicas.js';

/** What the client saw acknowledged during the run. */
export interface AckLog {
  /** Sandboxes whose create was acknowledged, with the node the acknowledgement named. */
  readonly created: ReadonlyMap<string, string | undefined>;
  /** Sandboxes whose terminate was acknowledged. */
  readonly terminated: ReadonlySet<string>;
  /** Acknowledged sandboxes a later call found unknown to the cluster. */
  readonly unknownAfterAck: ReadonlySet<string>;
  /**
   * Sandboxes whose terminate was sent but never answered (the driver gave up with its outcome unknown): it
   * may have been applied, so such a sandbox's absence is not a loss. Absent: none.
   */
  readonly terminateUnknown?: ReadonlySet<string>;
}

export interface CheckResult {
  readonly replicasRead: number;
  readonly lostAcked: number;
  readonly doublePlaced: number;
  readonly overCommitted: number;
  readonly stuck: number;
  /** Stuck sandboxes by state, on the replica with the most. */
  readonly stuckByState: Readonly<Record<string, number>>;
  /** Sandboxes left failed (a final state: the driver's failures), on the replica with the most. */
  readonly failedLeft: number;
  /** Each failover's time from the leader's kill to the next commit, in ms. */
  readonly failoversMs: readonly number[];
  /** Replicas whose applied index is behind the most advanced one's, with both indexes. */
  readonly replicasBehind: readonly {
    readonly replica: string;
    readonly applied: number;
    readonly of: number;
  }[];
  /** The longest failover, 0 without any. */
  readonly failoverMaxMs: number;
  /** Up to `examplesMax` ids behind each non-zero count, for the person reading the report. */
  readonly examples: Readonly<Record<string, readonly string[]>>;
}

/** Ids kept per failure kind in `examples`. */
export const examplesMax = 5;

const finalStates: ReadonlySet<SandboxState> = new Set(['terminated', 'failed']);

class Tally {
  readonly ids = new Set<string>();
  add(id: string): void {
    this.ids.add(id);
  }
  get size(): number {
    return this.ids.size;
  }
  examples(): string[] {
    return [...this.ids].slice(0, examplesMax);
  }
}

function exceeds(used: Resources, cap: Resources): boolean {
  return used.cpu > cap.cpu || used.memory > cap.memory || used.disk > cap.disk;
}

export function check(
  replicas: readonly ReplicaView[],
  acks: AckLog,
  failoversMs: readonly number[],
): CheckResult {
  const lost = new Tally();
  const double = new Tally();
  const over = new Tally();
  for (const id of acks.unknownAfterAck) if (acks.created.has(id)) lost.add(id);
  let stuck = 0;
  let stuckByState: Record<string, number> = {};
  let failedLeft = 0;
  const stuckIds = new Tally();
  /** The node each replica holds a sandbox on, to compare replicas. */
  const heldOn = new Map<string, string>();
  const appliedMax = Math.max(0, ...replicas.map((v) => v.status.applied));
  const replicasBehind = replicas
    .filter((v) => v.status.applied < appliedMax)
    .map((v) => ({ replica: v.replica, applied: v.status.applied, of: appliedMax }));
  for (const view of replicas) {
    const caughtUp = view.status.applied === appliedMax;
    const byId = new Map<string, (typeof view.sandboxes)[number]>();
    for (const sb of view.sandboxes) {
      if (byId.has(sb.id)) double.add(sb.id);
      byId.set(sb.id, sb);
    }
    for (const [id, ackedNode] of acks.created) {
      const sb = byId.get(id);
      if (sb === undefined) {
        if (caughtUp && !acks.terminated.has(id) && !acks.terminateUnknown?.has(id)) lost.add(id);
        continue;
      }
      if (holdsAllocation(sb.state) && ackedNode !== undefined && sb.nodeId !== ackedNode) double.add(id);
    }
    const used = new Map<string, Resources>();
    const counts: Record<string, number> = {};
    let n = 0;
    let failed = 0;
    for (const sb of byId.values()) {
      if (sb.state === 'failed') failed++;
      if (!finalStates.has(sb.state)) {
        n++;
        counts[sb.state] = (counts[sb.state] ?? 0) + 1;
        if (caughtUp) stuckIds.add(sb.id);
      }
      if (!holdsAllocation(sb.state) || sb.nodeId === undefined) continue;
      const other = heldOn.get(sb.id);
      if (other !== undefined && other !== sb.nodeId) double.add(sb.id);
      heldOn.set(sb.id, sb.nodeId);
      const u = used.get(sb.nodeId) ?? { cpu: 0, memory: 0, disk: 0 };
      const r = sb.spec.resources;
      used.set(sb.nodeId, { cpu: u.cpu + r.cpu, memory: u.memory + r.memory, disk: u.disk + r.disk });
    }
    for (const node of view.nodes) {
      const u = used.get(node.id);
      if (exceeds(node.allocated, node.spec.capacity) || (u !== undefined && exceeds(u, node.spec.capacity)))
        over.add(node.id);
    }
    if (caughtUp && n > stuck) {
      stuck = n;
      stuckByState = counts;
    }
    if (caughtUp) failedLeft = Math.max(failedLeft, failed);
  }
  return {
    replicasRead: replicas.length,
    lostAcked: lost.size,
    doublePlaced: double.size,
    overCommitted: over.size,
    stuck,
    stuckByState,
    failedLeft,
    replicasBehind,
    failoversMs,
    failoverMaxMs: failoversMs.length === 0 ? 0 : Math.max(...failoversMs),
    examples: {
      ...(lost.size > 0 ? { lostAcked: lost.examples() } : {}),
      ...(double.size > 0 ? { doublePlaced: double.examples() } : {}),
      ...(over.size > 0 ? { overCommitted: over.examples() } : {}),
      ...(stuck > 0 ? { stuck: stuckIds.examples() } : {}),
    },
  };
}

/** The checker's lines for people: each count, and the ids behind any that is not zero. */
export function formatCheck(r: CheckResult): string[] {
  const ms = r.failoversMs.map((x) => `${Math.round(x)}`).join(', ');
  const lines = [
    `checker (${r.replicasRead} replicas read):`,
    `  acknowledged creates lost   ${r.lostAcked}`,
    `  sandboxes placed twice      ${r.doublePlaced}`,
    `  nodes over capacity         ${r.overCommitted}`,
    `  stuck after the drain       ${r.stuck}${r.stuck > 0 ? ` ${JSON.stringify(r.stuckByState)}` : ''}`,
    `  failed (driver) left        ${r.failedLeft}`,
    `  replicas behind             ${r.replicasBehind.length === 0 ? 'none' : r.replicasBehind.map((b) => `${b.replica} at ${b.applied} of ${b.of}`).join(', ')}`,
    `  failovers (kill -> commit)  ${r.failoversMs.length === 0 ? 'none' : `${ms} ms; max ${Math.round(r.failoverMaxMs)} ms (goal <= 500)`}`,
  ];
  for (const [k, ids] of Object.entries(r.examples)) lines.push(`  e.g. ${k}: ${ids.join(', ')}`);
  return lines;
}
