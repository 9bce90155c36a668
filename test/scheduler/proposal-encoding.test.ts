/**
 * `encodeProposal` (scheduler/state-machine.ts): a replica applies the proposer's own command object for the
 * bytes the proposer encoded, and decodes any other bytes. Checked by applying the same entry twice — from the
 * proposer's bytes object and from a copy of its bytes, as a restarted replica or another process reads them —
 * and comparing the two states; and on a Raft group, where the leader's records hold the create path's
 * interned spec while every replica ends with the same state.
 */
import { describe, expect, it } from 'vitest';
import type { Command } from '../../scheduler/commands.js';
import { validateSpec } from '../../scheduler/core/admission.js';
import { RaftGroupLog } from '../../scheduler/raft-group.js';
import { createScheduler } from '../../scheduler/scheduler.js';
import { encodeProposal, SchedulerStateMachine, stateDigest } from '../../scheduler/state-machine.js';
import { until } from '../helpers/until.js';
import { node, placeCmd, spec } from './fixtures.js';

/** Two machines holding the same registered node, applying from index 2 on. */
function machines(): [SchedulerStateMachine, SchedulerStateMachine] {
  const pair: [SchedulerStateMachine, SchedulerStateMachine] = [
    new SchedulerStateMachine(),
    new SchedulerStateMachine(),
  ];
  const register = encodeProposal({ type: 'node.register', atMs: 1, spec: node('n1') });
  for (const m of pair) m.apply({ term: 1, index: 1, type: 'normal', data: register });
  return pair;
}

/** Applies `cmd` to `own` from the proposer's bytes and to `other` from a copy of them. */
function applyBoth(cmd: Command, [own, other]: [SchedulerStateMachine, SchedulerStateMachine]): void {
  const data = encodeProposal(cmd);
  own.apply({ term: 1, index: 2, type: 'normal', data });
  other.apply({ term: 1, index: 2, type: 'normal', data: Uint8Array.from(data) });
}

describe('scheduler/encodeProposal', () => {
  it('scheduler/encodeProposal - the proposer bytes apply its own command; a copy of them decodes to the same state', () => {
    const shared = validateSpec(spec('t1', 100, 100));
    const cmd = placeCmd([
      ['s1', shared, 'n1'],
      ['s2', shared, 'n1'],
    ]);
    const pair = machines();
    applyBoth(cmd, pair);
    const [own, other] = pair;
    expect(own.state.sandbox('s1')?.spec).toBe(shared);
    expect(own.state.sandbox('s2')?.spec).toBe(shared);
    expect(other.state.sandbox('s1')?.spec).not.toBe(shared);
    expect(other.state.sandbox('s1')?.spec).toStrictEqual(shared);
    expect(stateDigest(own.state)).toBe(stateDigest(other.state));
  });

  it('scheduler/encodeProposal - a command whose text would not survive UTF-8 is decoded from its bytes', () => {
    // A lone surrogate does not survive UTF-8 (it is read back as replacement characters): the proposer's object would differ from what others decode, so
    // it is not remembered, and the proposer's replica applies what every other replica applies.
    // (msgpack's decoder keeps a lone surrogate in a short string; in a longer one it does not.)
    const image = `${'x'.repeat(60)}\ud800`;
    const odd = spec('t1', 100, 100, { image });
    const pair = machines();
    applyBoth(placeCmd([['s1', odd, 'n1']]), pair);
    const [own, other] = pair;
    expect(own.state.sandbox('s1')?.spec.image).not.toBe(image);
    expect(own.state.sandbox('s1')?.spec.image).toBe(other.state.sandbox('s1')?.spec.image);
    expect(stateDigest(own.state)).toBe(stateDigest(other.state));
  });

  it('scheduler/encodeProposal - on a Raft group the leader holds the interned spec and every replica the same state', async () => {
    const log = RaftGroupLog.inMemory({ replicas: 3 });
    const s = createScheduler({ log });
    for (let i = 0; i < 4; i++) await s.registerNode(node(`n${i}`));
    const created = await Promise.all(
      Array.from({ length: 50 }, (_, i) => s.create(spec('t1', 100, 100), { requestId: `r${i}` })),
    );
    const interned = validateSpec(spec('t1', 100, 100));
    const leader = log.machine(log.leader() as number);
    for (const sb of created) expect(leader.state.sandbox(sb.id)?.spec).toBe(interned);
    await until(
      () => new Set([0, 1, 2].map((r) => stateDigest(log.machine(r).state))).size === 1,
      'replicas converge',
    );
    await s.close();
    await log.close();
  });
});
