/**
 * The leader's pure core (scheduler/core/leader.ts), driven directly: no Raft, no timers, no promises. A
 * small world applies the core's proposals to a state with the production `applyCommand`, in the order a
 * log would commit them, and feeds back committed events and results the way the shell (pipeline/leader.ts)
 * does. Time is an argument.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { Command, SandboxSpec } from '../../scheduler/commands.js';
import {
  type Answer,
  LeaderCore,
  type LeaderCoreOptions,
  type LiveRequest,
  type Proposal,
  type Step,
} from '../../scheduler/core/leader.js';
import { QuotaExceededError, RequestIdConflictError } from '../../scheduler/errors.js';
import { applyCommand, SchedulerState } from '../../scheduler/state.js';
import { node, spec } from './fixtures.js';

const defaults: LeaderCoreOptions = {
  pendingTimeoutMs: 1_000,
  replanMax: 3,
  inFlightBatchesMax: 4,
  nodeDownAfterMs: 0,
};

/** One leader core and the committed state it leads, with the batcher and the log reduced to arrays. */
class World {
  state = SchedulerState.empty();
  readonly core: LeaderCore;
  /** The batcher: requests waiting for the next `flush`. */
  queue: LiveRequest[] = [];
  /** Proposed, not yet committed, in proposal order. */
  proposals: Proposal[] = [];
  readonly answers: Answer[] = [];
  nowMs = 0;

  constructor(options: Partial<LeaderCoreOptions> = {}, nodes = [node('n1', 4000, 8192)]) {
    this.core = new LeaderCore({ ...defaults, ...options });
    for (const spec of nodes) this.external({ type: 'node.register', atMs: 0, spec });
    this.run(this.core.start(this.state, this.nowMs));
  }

  run(step: Step): void {
    this.proposals.push(...step.proposals);
    this.answers.push(...step.answers);
    this.queue.push(...step.toBatch);
  }

  /** A command another caller committed (a terminate, a node change): the core sees its events. */
  external(cmd: Command): void {
    const a = applyCommand(this.state, cmd, this.state.applied + 1);
    this.state = a.state;
    this.run(this.core.onCommitted(a.events, this.state, this.nowMs));
  }

  submit(requestId: string, s: SandboxSpec): string {
    const r = this.core.submit(this.state, requestId, s, this.nowMs);
    if (r.kind === 'queued') this.queue.push(r.req);
    return r.kind;
  }

  flush(): void {
    const batch = this.queue;
    this.queue = [];
    if (batch.length > 0) this.run(this.core.onBatch(batch, this.state, this.nowMs));
  }

  /** Commits the oldest proposal: the state machine applies it, then its proposer hears the result. */
  commitNext(): Command {
    const p = this.proposals.shift();
    if (p === undefined) throw new Error('nothing proposed');
    const a = applyCommand(this.state, p.command, this.state.applied + 1);
    this.state = a.state;
    this.run(this.core.onCommitted(a.events, this.state, this.nowMs));
    this.run(this.core.onResult(p.ticket, a.result, this.state, this.nowMs));
    return p.command;
  }

  /** The oldest proposal's fate is unknown: it never commits and its proposer hears an error. */
  failNext(): Command {
    const p = this.proposals.shift();
    if (p === undefined) throw new Error('nothing proposed');
    this.run(this.core.onProposeFailed(p.ticket, this.state, this.nowMs));
    return p.command;
  }

  commitAll(): void {
    while (this.proposals.length > 0) this.commitNext();
  }

  tick(nowMs: number): void {
    this.nowMs = nowMs;
    this.run(this.core.tick(this.state, nowMs));
  }

  answerOf(requestId: string): Answer['kind'][] {
    return this.answers.filter((a) => a.requestId === requestId).map((a) => a.kind);
  }

  stateOf(id: string): string | undefined {
    return this.state.sandbox(id)?.state;
  }
}

const oneCore = (tenant = 't1') => spec(tenant, 1000, 512);

describe('leader core', () => {
  it('leader core - what fits is placed in one entry and every caller hears it committed', () => {
    const w = new World();
    for (const id of ['a', 'b', 'c']) expect(w.submit(id, oneCore())).toBe('queued');
    w.flush();
    expect(w.proposals.map((p) => p.command.type)).toEqual(['place']);
    w.commitAll();
    for (const id of ['a', 'b', 'c']) {
      expect(w.answerOf(id)).toEqual(['committed']);
      expect(w.stateOf(id)).toBe('placed');
    }
    expect(w.core.liveCount).toBe(0);
    expect(w.core.stats.placed).toBe(3);
  });

  it('leader core - with answerWithRequest each answer names the live request it settles, and a retry joins it', () => {
    // Five 1-core creates on a 4-core node with no time to wait: four committed, one refused at once; a retry
    // of an open id is told 'joined' with that very request. Without the option no answer carries a request.
    const w = new World({ answerWithRequest: true, pendingTimeoutMs: 0 });
    const reqs = new Map<string, LiveRequest>();
    for (let i = 0; i < 5; i++) {
      const r = w.core.submit(w.state, `r${i}`, oneCore(), w.nowMs);
      if (r.kind !== 'queued') throw new Error(`r${i} was ${r.kind}`);
      reqs.set(`r${i}`, r.req);
      w.queue.push(r.req);
    }
    const joined = w.core.submit(w.state, 'r0', oneCore(), w.nowMs);
    expect(joined.kind === 'joined' && joined.req).toBe(reqs.get('r0'));
    w.flush();
    w.commitAll();
    expect(w.answers.map((a) => a.kind).sort()).toEqual([
      'committed',
      'committed',
      'committed',
      'committed',
      'no-capacity',
    ]);
    for (const a of w.answers) expect(a.req).toBe(reqs.get(a.requestId));
    const plain = new World({ pendingTimeoutMs: 0 });
    plain.submit('x', oneCore());
    plain.flush();
    plain.commitAll();
    expect(plain.answers.map((a) => a.kind)).toEqual(['committed']);
    expect(plain.answers.every((a) => a.req === undefined)).toBe(true);
  });

  it('leader core - what fits nowhere is recorded pending, woken when room frees and placed', () => {
    // Six 1-core creates on a 4-core node: four placed, two committed `pending` with a reason. A terminate
    // frees one core: the wake re-plans the queue, one is placed, the other stays pending without a second
    // `pend` (it keeps the deadline it was recorded with).
    const w = new World();
    for (let i = 0; i < 6; i++) w.submit(`r${i}`, oneCore());
    w.flush();
    expect(w.proposals.map((p) => p.command.type)).toEqual(['place', 'pend']);
    w.commitAll();
    expect(w.answers).toHaveLength(4);
    expect(w.core.pendingCount).toBe(2);
    expect(w.stateOf('r4')).toBe('pending');
    expect(w.state.sandbox('r5')?.reason).toMatch(/cpu|resources|capacity/i);

    w.nowMs = 100;
    w.external({ type: 'terminate', atMs: 100, sandboxId: 'r0' });
    expect(w.queue.map((r) => r.requestId).sort()).toEqual(['r4', 'r5']);
    w.flush();
    expect(w.proposals.map((p) => p.command.type)).toEqual(['place']);
    w.commitAll();
    const placedNow = ['r4', 'r5'].filter((id) => w.stateOf(id) === 'placed');
    expect(placedNow).toHaveLength(1);
    expect(w.answerOf(placedNow[0] as string)).toEqual(['committed']);
    expect(w.core.pendingCount).toBe(1);
  });

  it('leader core - a pending request fails through a committed status at its deadline, then its caller hears', () => {
    const w = new World();
    for (let i = 0; i < 5; i++) w.submit(`r${i}`, oneCore());
    w.flush();
    w.commitAll();
    w.tick(999);
    expect(w.proposals).toHaveLength(0);
    w.tick(1_000);
    expect(w.proposals.map((p) => p.command.type)).toEqual(['status']);
    expect(w.answerOf('r4')).toEqual([]); // Not before the failure commits.
    w.commitAll();
    expect(w.stateOf('r4')).toBe('failed');
    expect(w.answerOf('r4')).toEqual(['no-capacity']);
    expect(w.core.stats.rejected).toBe(1);
  });

  it('leader core - with no time to wait, what fits nowhere is refused at once and nothing is recorded', () => {
    const w = new World({ pendingTimeoutMs: 0 });
    for (let i = 0; i < 5; i++) w.submit(`r${i}`, oneCore());
    w.flush();
    expect(w.answerOf('r4')).toEqual(['no-capacity']);
    expect(w.proposals.map((p) => p.command.type)).toEqual(['place']);
    w.commitAll();
    expect(w.stateOf('r4')).toBeUndefined();
  });

  it('leader core - a failed status goes back to the queue and the next tick proposes it again', () => {
    const w = new World();
    for (let i = 0; i < 5; i++) w.submit(`r${i}`, oneCore());
    w.flush();
    w.commitAll();
    w.tick(1_000);
    w.failNext();
    expect(w.core.pendingCount).toBe(1);
    w.tick(1_001);
    expect(w.proposals.map((p) => p.command.type)).toEqual(['status']);
    w.commitAll();
    expect(w.answerOf('r4')).toEqual(['no-capacity']);
  });

  it('leader core - bad input is refused with a typed error and changes nothing', () => {
    const w = new World();
    w.external({ type: 'quota.set', atMs: 0, tenant: 't2', quota: { sandboxes: 1 } });
    expect(w.submit('x', oneCore('t2'))).toBe('queued');
    // The admitted, uncommitted create counts against the quota already.
    expect(() => w.submit('y', oneCore('t2'))).toThrow(QuotaExceededError);
    expect(() => w.submit('x', spec('t2', 2000))).toThrow(RequestIdConflictError);
    expect(() => w.submit('bad id!', oneCore())).toThrow(expect.objectContaining({ code: 'VALIDATION' }));
    expect(w.core.liveCount).toBe(1);
    expect(w.queue.map((r) => r.requestId)).toEqual(['x']);
  });

  it('leader core - a pend the state machine refuses answers its caller with the typed error', () => {
    // The quota drops after admission and before the `pend` applies: apply re-checks and refuses the item.
    const w = new World({}, [node('n1', 1000, 8192)]);
    w.submit('a', oneCore('t3'));
    w.submit('b', oneCore('t3'));
    w.flush();
    expect(w.proposals.map((p) => p.command.type)).toEqual(['place', 'pend']);
    w.commitNext();
    w.external({ type: 'quota.set', atMs: 0, tenant: 't3', quota: { sandboxes: 1 } });
    w.commitNext();
    const b = w.answers.find((a) => a.requestId === 'b');
    expect(b?.kind).toBe('refused');
    expect(b?.kind === 'refused' ? b.error.code : '').toBe('SCHED_QUOTA_EXCEEDED');
    expect(w.core.liveCount).toBe(0);
  });

  it('leader core - a duplicate request id joins the request in progress, and once committed is answered from state', () => {
    const w = new World();
    expect(w.submit('a', oneCore())).toBe('queued');
    expect(w.submit('a', oneCore())).toBe('joined');
    w.flush();
    w.commitAll();
    expect(w.answerOf('a')).toEqual(['committed']);
    expect(w.submit('a', oneCore())).toBe('committed');
    expect(w.proposals).toHaveLength(0);
    expect([...w.state.sandboxes.values()].filter((s) => s.requestId === 'a')).toHaveLength(1);
  });

  it('leader core - a terminate while pending cancels the waiting request', () => {
    const w = new World({}, [node('n1', 1000, 8192)]);
    w.submit('a', oneCore());
    w.submit('b', oneCore());
    w.flush();
    w.commitAll();
    w.external({ type: 'terminate', atMs: 1, sandboxId: 'b' });
    expect(w.answerOf('b')).toEqual(['cancelled']);
  });

  it('leader core - a propose failure settles every request of its batch with an unknown outcome', () => {
    // The place entry's fate is unknown (leadership moved, a timeout): every request it carried is answered
    // once, none stays live (a retry would wait on it forever), the in-flight slot is freed, and a retry with
    // the same id is admitted afresh.
    const w = new World({}, [node('n1', 16_000, 65_536)]);
    for (const id of ['a', 'b', 'c']) w.submit(id, oneCore());
    w.flush();
    expect(w.core.inFlightBatches).toBe(1);
    expect(w.failNext().type).toBe('place');
    for (const id of ['a', 'b', 'c']) expect(w.answerOf(id)).toEqual(['unknown']);
    expect(w.core.liveCount).toBe(0);
    expect(w.core.inFlightBatches).toBe(0);
    expect(w.submit('a', oneCore())).toBe('queued');
  });

  it('leader core - batches in flight plan against each other, and a held batch waits for a free slot', () => {
    // Two batches in flight at most. The second is planned on the overlay of the first (so it does not take
    // the first's capacity) and the third is held until the first settles.
    const w = new World({ inFlightBatchesMax: 2 });
    for (const id of ['a1', 'a2', 'a3']) w.submit(id, oneCore());
    w.flush();
    for (const id of ['b1', 'b2']) w.submit(id, oneCore());
    w.flush();
    w.submit('c1', oneCore());
    w.flush();
    expect(w.core.inFlightBatches).toBe(2);
    expect(w.proposals.map((p) => p.command.type)).toEqual(['place', 'place', 'pend']);
    const second = w.proposals[1]?.command;
    expect(second?.type === 'place' ? second.items.map((i) => i.requestId) : []).toHaveLength(1);
    w.commitNext();
    // The first settled: the held batch is planned now, on committed state plus the second's overlay, which
    // leaves no room, so it is parked (its own `pend`) and frees its slot at once.
    expect(w.core.inFlightBatches).toBe(1);
    const pend = w.proposals.at(-1)?.command;
    expect(pend?.type === 'pend' ? pend.items.map((i) => i.requestId) : []).toEqual(['c1']);
    w.commitAll();
    expect(w.state.index.get('n1')?.allocated.cpu).toBe(4000);
    expect(w.core.pendingCount).toBe(2);
  });

  it('leader core - the tick batches heartbeats and marks silent nodes down', () => {
    const w = new World({ nodeDownAfterMs: 500 }, [node('n1'), node('n2')]);
    w.core.heartbeat('n1');
    w.tick(400);
    expect(w.proposals.map((p) => p.command.type)).toEqual(['node.heartbeat']);
    w.commitAll();
    w.tick(600);
    const downs = w.proposals.map((p) => p.command);
    expect(downs).toEqual([{ type: 'node.state', atMs: 600, nodeId: 'n2', state: 'down' }]);
  });

  it('leader core - the core plus applying its commands never over-commits a node and answers every request exactly once', () => {
    // Random interleavings of creates (some retries, some too big), batch flushes, commits, propose
    // failures, terminates and ticks, then a drain. After every apply no node holds more than its capacity;
    // every admitted request is answered exactly once, or is still live when the leader stops.
    const seed = Number(process.env.SEED ?? 20261201);
    const op = fc.oneof(
      fc.record({
        k: fc.constant('submit' as const),
        id: fc.integer({ min: 0, max: 24 }),
        cpu: fc.integer({ min: 1, max: 6 }),
      }),
      fc.record({ k: fc.constant('flush' as const) }),
      fc.record({ k: fc.constant('commit' as const) }),
      fc.record({ k: fc.constant('fail' as const) }),
      fc.record({ k: fc.constant('terminate' as const), id: fc.integer({ min: 0, max: 24 }) }),
      fc.record({ k: fc.constant('tick' as const), ms: fc.integer({ min: 0, max: 400 }) }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 80 }), fc.integer({ min: 1, max: 3 }), (ops, inFlight) => {
        const w = new World({ inFlightBatchesMax: inFlight }, [
          node('n1', 4000, 16_384),
          node('n2', 2000, 16_384),
        ]);
        const open = new Set<string>();
        let seen = 0;
        const check = (): void => {
          for (const a of w.answers.slice(seen)) {
            expect(open.has(a.requestId), `answered twice or never admitted: ${a.requestId}`).toBe(true);
            open.delete(a.requestId);
            if (a.kind === 'committed') expect(w.state.dedup.has(a.requestId)).toBe(true);
          }
          seen = w.answers.length;
          for (const n of w.state.nodes.values()) {
            const v = w.state.index.get(n.spec.id);
            expect(v?.allocated.cpu ?? 0).toBeLessThanOrEqual(n.spec.capacity.cpu);
            expect(v?.allocated.memory ?? 0).toBeLessThanOrEqual(n.spec.capacity.memory);
          }
        };
        const submit = (id: string, cpu: number): void => {
          let kind: string;
          try {
            kind = w.submit(id, spec('t1', cpu * 1000, 512));
          } catch (err) {
            expect(err).toBeInstanceOf(RequestIdConflictError);
            return;
          }
          if (kind === 'queued') {
            expect(open.has(id)).toBe(false);
            open.add(id);
          }
        };
        for (const o of ops) {
          if (o.k === 'submit') submit(`r${o.id}`, o.cpu);
          else if (o.k === 'flush') w.flush();
          else if (o.k === 'commit' && w.proposals.length > 0) w.commitNext();
          else if (o.k === 'fail' && w.proposals.length > 0) w.failNext();
          else if (o.k === 'terminate') {
            const sb = w.state.sandbox(`r${o.id}`);
            if (sb !== undefined && sb.state !== 'terminated' && sb.state !== 'failed')
              w.external({ type: 'terminate', atMs: w.nowMs, sandboxId: sb.id });
          } else if (o.k === 'tick') w.tick(w.nowMs + o.ms);
          check();
        }
        // Drain: everything proposed commits, every batch is planned, time passes every deadline.
        for (let round = 0; round < 10; round++) {
          w.flush();
          w.commitAll();
          w.tick(w.nowMs + defaults.pendingTimeoutMs);
          w.commitAll();
          check();
        }
        const left = w.core.stop();
        expect(new Set(left)).toEqual(open);
      }),
      { seed, numRuns: 200 },
    );
  });
});
