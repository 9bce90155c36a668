import { OrderedMap } from 'immutable';
import { describe, expect, it } from 'vitest';
import type { Command } from '../../scheduler/commands.js';
import { DispatchCore, type DispatchOptions, type Ticket } from '../../scheduler/core/dispatch.js';
import { decodeSnapshotV5, encodeSnapshotV5 } from '../../scheduler/snapshot.js';
import { applyCommand, cleanupsMax, SchedulerState, withCleanup } from '../../scheduler/state.js';
import { createRng } from '../../src/lib/prng.js';
import { node, placeCmd, spec } from './fixtures.js';

const opts: DispatchOptions = {
  batchMax: 2,
  retryBaseMs: 100,
  retryMaxMs: 1_000,
  inFlightPerNodeMax: 1,
  refusedAttemptsMax: 3,
};

/** A committed state and a dispatch core fed every change, as the leader's shell feeds it. */
class World {
  state = SchedulerState.empty();
  core: DispatchCore;
  constructor(seed = 1, o: DispatchOptions = opts) {
    this.core = new DispatchCore(o, createRng(seed));
  }
  apply(cmd: Command, nowMs = 0): void {
    const applied = applyCommand(this.state, cmd, this.state.applied + 1);
    this.state = applied.state;
    for (const e of applied.events)
      if (e.kind === 'sandbox')
        this.core.observe(
          e.sandboxId,
          this.state.sandbox(e.sandboxId),
          this.state.cleanups.get(e.sandboxId),
          nowMs,
        );
  }
  /** A resync from the whole committed state, as the shell does at the start of a term and periodically. */
  resync(nowMs = 0): void {
    const state = this.state;
    this.core.retain((id) => state.sandboxes.has(id) || state.cleanups.has(id));
    for (const sb of state.sandboxes.values()) this.core.observe(sb.id, sb, undefined, nowMs);
    for (const [id, nodeId] of state.cleanups) this.core.observe(id, undefined, nodeId, nowMs);
  }
  /** A new leader: a fresh core resynced from the whole committed state, nothing of the old one kept. */
  newLeader(seed: number): void {
    this.core = new DispatchCore(opts, createRng(seed));
    this.resync();
  }
  /** Every due ticket, flattened, with its node. */
  due(nowMs = 0): [string, Ticket[]][] {
    return [...this.core.due(nowMs)].flatMap(([n, bs]) => bs.map((b) => [n, b] as [string, Ticket[]]));
  }
  ackAll(batches: [string, Ticket[]][], nowMs = 0): void {
    for (const [n, b] of batches)
      this.core.settle(
        n,
        b,
        b.map(() => ({ ok: true })),
        nowMs,
      );
  }
}

function summary(batches: [string, Ticket[]][]): string[] {
  return batches.flatMap(([n, b]) => b.map((t) => `${t.cmd.kind}:${t.cmd.sandboxId}@${n}`)).sort();
}

function setup(): World {
  const w = new World();
  w.apply({ type: 'node.register', atMs: 1, spec: node('n1') });
  w.apply({ type: 'node.register', atMs: 1, spec: node('n2') });
  return w;
}

describe('scheduler dispatch - pure core', () => {
  it('scheduler dispatch - a placement owes its node one create, batched per node and bounded in flight', () => {
    // Three sandboxes on n1 and one on n2 with batches of 2 and one batch in flight per node: the first
    // round sends [2 on n1] and [1 on n2]; the third n1 create waits until n1's batch is settled.
    const w = setup();
    w.apply(
      placeCmd([
        ['a', spec(), 'n1'],
        ['b', spec(), 'n1'],
        ['c', spec(), 'n1'],
        ['d', spec(), 'n2'],
      ]),
    );
    const first = w.due();
    expect(first.map(([n, b]) => [n, b.length]).sort()).toEqual([
      ['n1', 2],
      ['n2', 1],
    ]);
    expect(first.every(([n, b]) => b.every((t) => t.cmd.kind === 'create' && t.cmd.nodeId === n))).toBe(true);
    expect(w.due()).toEqual([]);
    w.ackAll(first);
    expect(summary(w.due())).toEqual(['create:c@n1']);
    const create = first[0]?.[1][0]?.cmd;
    expect(create?.resources).toEqual(spec().resources);
    expect(create?.image).toBe('default');
  });

  it('scheduler dispatch - an acknowledged command is not sent again; a refused one is retried after a backoff', () => {
    const w = setup();
    w.apply(placeCmd([['a', spec(), 'n1']]));
    const [batch] = w.due(0);
    expect(batch).toBeDefined();
    w.core.settle('n1', batch?.[1] ?? [], [{ ok: false, code: 'WORKER_BUSY' }], 0);
    // The first retry waits 100 ms ±20%: nothing at 79 ms, the create again by 121 ms.
    expect(w.due(79)).toEqual([]);
    const again = w.due(121);
    expect(summary(again)).toEqual(['create:a@n1']);
    w.ackAll(again, 121);
    expect(w.due(10_000)).toEqual([]);
    expect(w.core.owedCount).toBe(0);
    // A repeated commit of the same state (a resync) does not bring the acknowledged create back.
    w.core.observe('a', w.state.sandbox('a'), undefined, 20_000);
    expect(w.due(20_000)).toEqual([]);
    expect(w.core.counts).toMatchObject({ acked: 1, retried: 1 });
  });

  it('scheduler dispatch - a new leader resends every command not past its transitional state', () => {
    // a: create acknowledged, worker has not reported yet (still placed) → resent.
    // b: starting (the worker reported) → nothing. c: terminating, acknowledged → resent.
    // d: suspending → suspend resent. e: running → nothing.
    const w = setup();
    w.apply(
      placeCmd([
        ['a', spec(), 'n1'],
        ['b', spec(), 'n1'],
        ['c', spec(), 'n2'],
        ['d', spec(), 'n2'],
        ['e', spec(), 'n2'],
      ]),
    );
    w.ackAll(w.due());
    w.ackAll(w.due());
    w.apply({
      type: 'status',
      atMs: 2,
      items: [
        { sandboxId: 'b', state: 'starting' },
        { sandboxId: 'c', state: 'running' },
        { sandboxId: 'd', state: 'running' },
        { sandboxId: 'e', state: 'running' },
      ],
    });
    w.apply({ type: 'terminate', atMs: 3, sandboxId: 'c' });
    w.apply({ type: 'suspend', atMs: 3, sandboxId: 'd' });
    w.ackAll(w.due());
    expect(w.due()).toEqual([]);
    w.newLeader(2);
    expect(summary(w.due())).toEqual(['create:a@n1', 'suspend:d@n2', 'terminate:c@n2']);
  });

  it('scheduler dispatch - an outcome for a command the sandbox has moved past is ignored', () => {
    const w = setup();
    w.apply(placeCmd([['a', spec(), 'n1']]));
    const out = w.due();
    // While the create is out, the sandbox is terminated (placed → terminated): the late refusal of the
    // create must not schedule a create retry, and the cleanup terminate is owed instead.
    w.apply({ type: 'terminate', atMs: 2, sandboxId: 'a' });
    w.core.settle('n1', out[0]?.[1] ?? [], [{ ok: false, code: 'WORKER_BUSY' }], 0);
    expect(w.core.counts.stale).toBe(1);
    const next = w.due(10_000);
    expect(summary(next)).toEqual(['terminate:a@n1']);
    w.ackAll(next);
    expect(w.core.owedCount).toBe(0);
  });

  it('scheduler dispatch - a suspended sandbox terminated owes the snapshot node a cleanup terminate', () => {
    const w = setup();
    w.apply(placeCmd([['a', spec(), 'n2']]));
    w.apply({ type: 'status', atMs: 2, items: [{ sandboxId: 'a', state: 'running' }] });
    w.apply({ type: 'suspend', atMs: 3, sandboxId: 'a' });
    w.apply({ type: 'status', atMs: 4, items: [{ sandboxId: 'a', state: 'suspended' }] });
    w.ackAll(w.due());
    w.apply({ type: 'terminate', atMs: 5, sandboxId: 'a' });
    expect(summary(w.due())).toEqual(['terminate:a@n2']);
  });

  it('scheduler dispatch - a cleanup terminate the old leader never sent is resent by the next leader, from committed state', () => {
    // a: placed on n1 and terminated at once (placed → terminated); b: suspended on n2, then terminated.
    // Neither sandbox is in the state any more, and the leader that saw the changes dies before sending:
    // the cleanups are committed (state.cleanups), so a new leader owes them too.
    const w = setup();
    w.apply(
      placeCmd([
        ['a', spec(), 'n1'],
        ['b', spec(), 'n2'],
      ]),
    );
    w.apply({ type: 'status', atMs: 2, items: [{ sandboxId: 'b', state: 'running', nodeId: 'n2' }] });
    w.apply({ type: 'suspend', atMs: 3, sandboxId: 'b' });
    w.apply({ type: 'status', atMs: 4, items: [{ sandboxId: 'b', state: 'suspended', nodeId: 'n2' }] });
    w.apply({ type: 'terminate', atMs: 5, sandboxId: 'a' });
    w.apply({ type: 'terminate', atMs: 5, sandboxId: 'b' });
    expect(w.state.sandbox('a')).toBeUndefined();
    expect([...w.state.cleanups]).toEqual([
      ['a', 'n1'],
      ['b', 'n2'],
    ]);
    w.newLeader(3);
    const resent = w.due();
    expect(summary(resent)).toEqual(['terminate:a@n1', 'terminate:b@n2']);
    // Acknowledged: a resync in the same term does not send them again.
    w.ackAll(resent);
    w.resync(10_000);
    expect(w.due(10_000)).toEqual([]);

    // n1's worker reports a terminated (it ended it): the debt is gone from committed state. A report from
    // another node does not clear b's.
    w.apply({ type: 'status', atMs: 6, items: [{ sandboxId: 'a', state: 'terminated', nodeId: 'n1' }] });
    const stray = applyCommand(
      w.state,
      { type: 'status', atMs: 6, items: [{ sandboxId: 'b', state: 'terminated', nodeId: 'n1' }] },
      w.state.applied + 1,
    );
    expect(stray.result).toMatchObject({ ok: true, itemErrors: [{ code: 'SCHED_UNKNOWN_SANDBOX' }] });
    expect([...w.state.cleanups]).toEqual([['b', 'n2']]);
    w.newLeader(4);
    expect(summary(w.due())).toEqual(['terminate:b@n2']);

    // The cleanups survive a snapshot (a follower restored from one leads next).
    const restored = decodeSnapshotV5(encodeSnapshotV5(w.state));
    expect([...restored.cleanups]).toEqual([['b', 'n2']]);

    // n2 reconciles (it stops whatever it holds that is not placed there): nothing is owed any more.
    w.apply({ type: 'node.reconcile', atMs: 7, nodeId: 'n2', running: [] });
    expect(w.state.cleanups.size).toBe(0);
    w.newLeader(5);
    expect(w.due()).toEqual([]);
  });

  it('scheduler dispatch - the cleanups owed are bounded; the oldest is dropped first', () => {
    // The bound itself is cleanupsMax (16,384), applied through this helper by every terminate.
    let owed = OrderedMap<string, string>();
    for (const [id, n] of [
      ['a', 'n1'],
      ['b', 'n2'],
      ['c', 'n1'],
    ] as const)
      owed = withCleanup(owed, id, n, 2);
    expect([...owed]).toEqual([
      ['b', 'n2'],
      ['c', 'n1'],
    ]);
    expect(cleanupsMax).toBeGreaterThanOrEqual(1);
  });

  it('scheduler dispatch - a command refused permanently is retried with growing backoff, then given up with the reason', () => {
    // refusedAttemptsMax 3: refused at 0, again after 100 ms ±20%, again after 200 ms ±20%, then given up.
    const w = setup();
    w.apply(placeCmd([['a', spec(), 'n1']]));
    const refuse = (nowMs: number) => {
      const [batch] = w.due(nowMs);
      expect(summary(batch === undefined ? [] : [batch])).toEqual(['create:a@n1']);
      w.core.settle(
        'n1',
        batch?.[1] ?? [],
        [{ ok: false, code: 'DRIVER', message: 'no image "nope"' }],
        nowMs,
      );
    };
    refuse(0);
    expect(w.due(79)).toEqual([]);
    refuse(121);
    expect(w.due(121 + 159)).toEqual([]);
    refuse(121 + 241);
    expect(w.core.takeGivenUp()).toEqual([
      {
        cmd: expect.objectContaining({ kind: 'create', sandboxId: 'a', nodeId: 'n1' }),
        reason: 'node n1 refused create 3 times: DRIVER: no image "nope"',
      },
    ]);
    expect(w.core.takeGivenUp()).toEqual([]);
    // Not sent again in this term, whatever the time or a resync.
    w.resync(100_000);
    expect(w.due(100_000)).toEqual([]);
    expect(w.core.counts).toMatchObject({ givenUp: 1, retried: 2 });
  });

  it('scheduler dispatch - transient failures are retried for as long as the command is owed, the backoff capped', () => {
    const w = setup();
    w.apply(placeCmd([['a', spec(), 'n1']]));
    let now = 0;
    const gaps: number[] = [];
    for (let i = 0; i < 30; i++) {
      const batches = w.due(now);
      expect(summary(batches), `attempt ${i}`).toEqual(['create:a@n1']);
      const code = i % 2 === 0 ? 'WORKER_BUSY' : 'UNAVAILABLE';
      w.core.settle('n1', batches[0]?.[1] ?? [], [{ ok: false, code }], now);
      const next = w.core.nextDueMs() as number;
      gaps.push(next - now);
      now = next;
    }
    expect(w.core.takeGivenUp()).toEqual([]);
    // Doubling from 100 ms to the 1,000 ms cap, each ±20%.
    expect(gaps[0]).toBeGreaterThanOrEqual(80);
    expect(gaps[0]).toBeLessThanOrEqual(120);
    expect(Math.max(...gaps)).toBeLessThanOrEqual(1_200);
    expect(Math.min(...gaps.slice(10))).toBeGreaterThanOrEqual(800);
  });

  it('scheduler dispatch - a status report from a node the sandbox is not on changes nothing', () => {
    // The dispatcher only ever asks the sandbox's own node; a stray copy elsewhere must not speak for it.
    const w = setup();
    w.apply(placeCmd([['a', spec(), 'n1']]));
    const before = w.state.sandbox('a');
    const r = applyCommand(
      w.state,
      { type: 'status', atMs: 2, items: [{ sandboxId: 'a', state: 'failed', reason: 'boom', nodeId: 'n2' }] },
      w.state.applied + 1,
    );
    expect(r.result).toMatchObject({ ok: true, itemErrors: [{ code: 'SCHED_ILLEGAL_TRANSITION' }] });
    expect(r.state.sandbox('a')).toEqual(before);
    const own = applyCommand(
      w.state,
      { type: 'status', atMs: 2, items: [{ sandboxId: 'a', state: 'running', nodeId: 'n1' }] },
      w.state.applied + 1,
    );
    expect(own.state.sandbox('a')?.state).toBe('running');
  });

  it('scheduler dispatch - random histories never send a command to a node the sandbox is not on', () => {
    // A seeded run of random places, status reports, terminates, suspends, resumes, node deaths and
    // re-placements, with random acks, refusals and leader changes. Every command handed out must name
    // the node committed for its sandbox at that moment (or, for a cleanup, the node it just left).
    const seed = Number(process.env.SEED ?? 11);
    const rng = createRng(seed);
    const w = setup();
    w.apply({ type: 'node.register', atMs: 1, spec: node('n3') });
    const nodes = ['n1', 'n2', 'n3'];
    let next = 0;
    let checked = 0;
    for (let step = 0; step < 400; step++) {
      const now = step * 50;
      const ids = [...w.state.sandboxes.keys()];
      const roll = rng.next();
      const id = ids.length === 0 ? undefined : rng.pick(ids);
      const sb = id === undefined ? undefined : w.state.sandbox(id);
      if (roll < 0.25 || sb === undefined) {
        w.apply(placeCmd([[`s${next++}`, spec('t1', 100, 128), rng.pick(nodes)]], now), now);
      } else if (roll < 0.55) {
        const to = rng.pick(['starting', 'running', 'suspended', 'terminated', 'failed'] as const);
        w.apply({ type: 'status', atMs: now, items: [{ sandboxId: sb.id, state: to }] }, now);
      } else if (roll < 0.65) {
        w.apply({ type: 'terminate', atMs: now, sandboxId: sb.id }, now);
      } else if (roll < 0.72) {
        w.apply({ type: 'suspend', atMs: now, sandboxId: sb.id }, now);
      } else if (roll < 0.8) {
        const target = sb.snapshotNodeId ?? rng.pick(nodes);
        w.apply({ type: 'resume', atMs: now, sandboxId: sb.id, nodeId: target, gpuDevices: [] }, now);
      } else if (roll < 0.85) {
        w.apply({ type: 'node.state', atMs: now, nodeId: rng.pick(nodes), state: 'down' }, now);
        for (const n of nodes) w.apply({ type: 'node.state', atMs: now, nodeId: n, state: 'ready' }, now);
      } else if (roll < 0.9 && sb.state === 'lost' && sb.spec.stateless !== true) {
        w.apply({ type: 'terminate', atMs: now, sandboxId: sb.id }, now);
      } else if (roll < 0.93) {
        w.newLeader(seed + step);
      }
      for (const [n, batch] of w.due(now)) {
        for (const t of batch) {
          const committed = w.state.sandbox(t.cmd.sandboxId);
          checked++;
          if (committed === undefined) {
            // Gone from the state: only a committed cleanup terminate, to the node it names.
            expect(t.cmd.kind, `seed ${seed}: ${t.cmd.sandboxId}`).toBe('terminate');
            expect(t.cmd.nodeId, `seed ${seed}: ${t.cmd.sandboxId}`).toBe(
              w.state.cleanups.get(t.cmd.sandboxId),
            );
          }
          if (committed !== undefined && committed.state !== 'terminated' && t.cmd.kind !== 'terminate') {
            expect(committed.nodeId, `seed ${seed}: ${t.cmd.kind} ${t.cmd.sandboxId}`).toBe(n);
          }
          if (committed?.nodeId !== undefined) {
            expect(t.cmd.nodeId, `seed ${seed}: ${t.cmd.sandboxId}`).toBe(committed.nodeId);
          }
          expect(t.cmd.nodeId).toBe(n);
        }
        w.core.settle(
          n,
          batch,
          batch.map(() => (rng.chance(0.7) ? { ok: true } : { ok: false, code: 'WORKER_BUSY' })),
          now,
        );
      }
    }
    expect(checked, `seed ${seed}`).toBeGreaterThan(100);
  });
});
