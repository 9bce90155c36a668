/**
 * load - the checker on hand-made replica states: a clean run counts zeros, and each failure it exists to
 * catch — an acknowledged create gone, a sandbox on another node than acknowledged or on two replicas'
 * different nodes, a node held beyond its capacity, a sandbox left in a non-final state — is counted with its
 * id, so the zeros the load test asserts are not zeros by construction.
 */
import { describe, expect, it } from 'vitest';
import type { NodeView } from '../../placement/index.js';
import type { SandboxState } from '../../scheduler/lifecycle.js';
import type { Sandbox } from '../../scheduler/types.js';
import { type AckLog, check } from '../../src/load/checker.js';
import type { ReplicaView } from '../../src/load/replicas.js';

const cap = { cpu: 1_000, memory: 1_000, disk: 1_000 };

function node(id: string, allocated = { cpu: 0, memory: 0, disk: 0 }): NodeView {
  return {
    id,
    spec: { id, capacity: cap, labels: {}, state: 'ready' },
    state: 'ready',
    allocated,
    free: {
      cpu: cap.cpu - allocated.cpu,
      memory: cap.memory - allocated.memory,
      disk: cap.disk - allocated.disk,
    },
    gpuFree: [],
    version: 1,
  };
}

function sandbox(id: string, state: SandboxState, nodeId?: string, cpu = 100): Sandbox {
  return {
    id,
    requestId: id,
    tenant: 't',
    spec: { tenant: 't', resources: { cpu, memory: 100, disk: 100 } },
    state,
    ...(nodeId === undefined ? {} : { nodeId }),
    gpuDevices: [],
    createdAtMs: 0,
    updatedAtMs: 0,
  };
}

function view(
  replica: string,
  sandboxes: Sandbox[],
  nodes: NodeView[] = [node('n1'), node('n2')],
  applied = 9,
): ReplicaView {
  const status = {
    replica,
    role: 'follower',
    term: 2,
    commit: applied,
    applied,
    replicas: ['a', 'b'],
    stats: {},
  };
  return { replica, status: status as unknown as ReplicaView['status'], sandboxes, nodes };
}

function acks(created: [string, string][], terminated: string[] = [], unknown: string[] = []): AckLog {
  return { created: new Map(created), terminated: new Set(terminated), unknownAfterAck: new Set(unknown) };
}

describe('load - checker', () => {
  it('load - a sandbox whose terminate got no answer may be gone without being lost; one never terminated may not', () => {
    const log: AckLog = {
      ...acks([
        ['s1', 'n1'],
        ['s2', 'n1'],
      ]),
      terminateUnknown: new Set(['s1']),
    };
    const r = check([view('a', [])], log, []);
    expect(r.lostAcked).toBe(1);
    expect(r.examples.lostAcked).toEqual(['s2']);
  });

  it('load - a clean end state counts zeros and keeps the failover times', () => {
    const r = check(
      [view('a', [sandbox('s3', 'failed')]), view('b', [sandbox('s3', 'failed')])],
      acks(
        [
          ['s1', 'n1'],
          ['s2', 'n2'],
          ['s3', 'n1'],
        ],
        ['s1', 's2'],
      ),
      [120, 340],
    );
    expect(r).toMatchObject({
      lostAcked: 0,
      doublePlaced: 0,
      overCommitted: 0,
      stuck: 0,
      failedLeft: 1,
      failoverMaxMs: 340,
    });
  });

  it('load - an acknowledged create that is gone, or that a later call found unknown, is lost', () => {
    const r = check(
      [view('a', []), view('b', [sandbox('s1', 'running', 'n1')])],
      acks(
        [
          ['s1', 'n1'],
          ['s2', 'n1'],
        ],
        [],
        ['s2'],
      ),
      [],
    );
    expect(r.lostAcked).toBe(2);
    expect(r.examples.lostAcked).toEqual(['s2', 's1']);
  });

  it('load - a sandbox on another node than acknowledged, or on different nodes on two replicas, is placed twice', () => {
    const moved = check([view('a', [sandbox('s1', 'running', 'n2')])], acks([['s1', 'n1']]), []);
    expect(moved.doublePlaced).toBe(1);
    const split = check(
      [view('a', [sandbox('s1', 'running', 'n1')]), view('b', [sandbox('s1', 'running', 'n2')])],
      acks([]),
      [],
    );
    expect(split.doublePlaced).toBe(1);
  });

  it('load - a node whose held sandboxes or allocation exceed its capacity is over-committed', () => {
    const held = check(
      [view('a', [sandbox('x', 'running', 'n1', 600), sandbox('y', 'placed', 'n1', 600)])],
      acks([]),
      [],
    );
    expect(held.overCommitted).toBe(1);
    const allocated = check([view('a', [], [node('n1', { cpu: 1_001, memory: 0, disk: 0 })])], acks([]), []);
    expect(allocated.overCommitted).toBe(1);
  });

  it('load - sandboxes left in non-final states are stuck, counted on the replica with the most', () => {
    const r = check(
      [
        view('a', [sandbox('x', 'terminating', 'n1')]),
        view('b', [sandbox('x', 'terminating', 'n1'), sandbox('y', 'pending')]),
      ],
      acks([]),
      [],
    );
    expect(r.stuck).toBe(2);
    expect(r.stuckByState).toEqual({ terminating: 1, pending: 1 });
  });

  it('load - a replica behind the others is reported, and its missing or unfinished sandboxes are not counted as lost or stuck', () => {
    const r = check(
      [view('a', [sandbox('s1', 'placed', 'n1')], undefined, 5), view('b', [], undefined, 9)],
      acks(
        [
          ['s1', 'n1'],
          ['s2', 'n1'],
        ],
        ['s1', 's2'],
      ),
      [],
    );
    expect(r.replicasBehind).toEqual([{ replica: 'a', applied: 5, of: 9 }]);
    expect(r).toMatchObject({ lostAcked: 0, stuck: 0 });
  });
});
