import { encode } from '@msgpack/msgpack';
import { describe, expect, it } from 'vitest';
import {
  type KvCommand,
  KvSessionTable,
  KvStateMachine,
  kvCommandCodec,
  kvSessionIdleMsMax,
  kvSessionsMax,
} from '../../raft/kv.js';
import { CodecError } from '../../src/lib/errors.js';

let index = 0;
const entry = (cmd: KvCommand) => ({
  index: ++index,
  term: 1,
  type: 'normal' as const,
  data: kvCommandCodec.encode(cmd),
});
const put = (key: string, value: string, client: string, seq: number, issuedMs: number, stampMs = issuedMs) =>
  entry({ op: 'put', key, value, session: { client, seq, issuedMs }, stampMs });

describe('raft/kv sessions', () => {
  it('raft/kv sessions - a duplicate returns the first outcome and changes nothing', () => {
    // Client c puts k=1 (seq 1); another client then puts k=2; c's retry of seq 1 arrives late. It must
    // answer what the first attempt answered (previous: null) and leave k=2 in place.
    const kv = new KvStateMachine();
    expect(kv.apply(put('k', '1', 'c', 1, 1_000))).toEqual({ ok: true, previous: null });
    expect(kv.apply(put('k', '2', 'd', 1, 1_001))).toEqual({ ok: true, previous: '1' });
    expect(kv.apply(put('k', '1', 'c', 1, 1_000, 5_000))).toEqual({ ok: true, previous: null });
    expect(kv.get('k')).toBe('2');
    // The cached outcome of a refusal is returned too: a cas that failed fails again the same way on retry,
    // even though it would now succeed.
    const cas = entry({
      op: 'cas',
      key: 'k',
      expected: '1',
      value: '3',
      session: { client: 'c', seq: 2, issuedMs: 1_002 },
    });
    expect(kv.apply(cas)).toEqual({ ok: false, error: 'cas-mismatch', current: '2' });
    kv.apply(put('k', '1', 'd', 2, 1_003));
    expect(kv.apply({ ...cas, index: ++index })).toEqual({ ok: false, error: 'cas-mismatch', current: '2' });
    expect(kv.get('k')).toBe('1');
  });

  it('raft/kv sessions - an older attempt after a newer command of the same client is refused', () => {
    // seq 2 applied, then seq 1 (an attempt overtaken by the client's next write) arrives: no effect.
    const kv = new KvStateMachine();
    kv.apply(put('k', 'one', 'c', 1, 1_000));
    kv.apply(put('k', 'two', 'c', 2, 1_001));
    expect(kv.apply(put('k', 'one', 'c', 1, 1_000))).toEqual({ ok: false, error: 'stale-request' });
    expect(kv.get('k')).toBe('two');
  });

  it('raft/kv sessions - commands without a session apply every time (version-1 entries still decode)', () => {
    // An entry written by the version-1 codec (no session, no stamp) is applied as before.
    const kv = new KvStateMachine();
    const v1 = encode(['trellis.kv.command', 1, { op: 'put', key: 'k', value: 'v' }]);
    expect(kv.apply({ index: 1, term: 1, type: 'normal', data: v1 })).toEqual({ ok: true, previous: null });
    expect(kv.apply({ index: 2, term: 1, type: 'normal', data: v1 })).toEqual({ ok: true, previous: 'v' });
    expect(kv.sessions.size).toBe(0);
  });

  it('raft/kv sessions - the table is bounded: the least recently used client is forgotten, and its late duplicate is refused', () => {
    // Fills the table one past its bound. The first client is evicted; its retry (same issuedMs) is refused
    // as session-expired instead of applying again; a client issued after the mark is accepted as new.
    const kv = new KvStateMachine();
    for (let i = 0; i <= kvSessionsMax; i++) kv.apply(put(`k${i % 10}`, `v${i}`, `c${i}`, 1, 1_000 + i));
    expect(kv.sessions.size).toBe(kvSessionsMax);
    expect(kv.sessions.has('c0')).toBe(false);
    expect(kv.sessions.has('c1')).toBe(true);
    expect(kv.sessions.forgottenIssuedMs).toBe(1_000);
    const before = kv.get('k0');
    expect(kv.apply(put('k0', 'v0', 'c0', 1, 1_000, 99_000))).toEqual({
      ok: false,
      error: 'session-expired',
    });
    expect(kv.get('k0')).toBe(before);
    expect(kv.apply(put('k0', 'fresh', 'new', 1, 1_001))).toEqual({ ok: true, previous: before });
  });

  it('raft/kv sessions - a client idle longer than the rule allows expires, by the leaders stamps, not a clock', () => {
    // The machine clock is the largest stamp applied. Client a is active at t=0; b keeps writing; once the
    // clock passes a's last activity by more than kvSessionIdleMsMax, a is forgotten. A stamp going
    // backwards (a leader with a slower clock) does not move the clock back.
    const kv = new KvStateMachine();
    kv.apply(put('x', '1', 'a', 1, 10, 10));
    kv.apply(put('y', '1', 'b', 1, 20, kvSessionIdleMsMax));
    expect(kv.sessions.has('a')).toBe(true);
    kv.apply(put('y', '2', 'b', 2, 30, 5));
    expect(kv.sessions.clockMs).toBe(kvSessionIdleMsMax);
    kv.apply(put('y', '3', 'b', 3, 40, kvSessionIdleMsMax + 11));
    expect(kv.sessions.has('a')).toBe(false);
    expect(kv.sessions.has('b')).toBe(true);
    expect(kv.sessions.forgottenIssuedMs).toBe(10);
    expect(kv.apply(put('x', '1', 'a', 1, 10, kvSessionIdleMsMax + 12))).toEqual({
      ok: false,
      error: 'session-expired',
    });
  });

  it('raft/kv sessions - snapshot round trip keeps the table, and equal histories give equal bytes', () => {
    // Two replicas apply the same log; their snapshots are byte-equal; a third restored from the snapshot
    // answers a duplicate with the cached outcome and continues identically.
    const log = [put('k', '1', 'a', 1, 100), put('k', '2', 'b', 1, 101), put('q', 'z', 'a', 2, 102)];
    const r1 = new KvStateMachine();
    const r2 = new KvStateMachine();
    for (const e of log) {
      r1.apply(e);
      r2.apply(e);
    }
    expect(r1.snapshot()).toEqual(r2.snapshot());
    const r3 = new KvStateMachine();
    r3.restore(r1.snapshot());
    expect(r3.snapshot()).toEqual(r1.snapshot());
    expect(r3.sessions.size).toBe(2);
    expect(r3.apply(put('k', '1', 'b', 1, 101))).toEqual({ ok: true, previous: '1' });
    expect(r3.get('k')).toBe('2');
    const next = put('k', '3', 'a', 3, 103);
    expect(r3.apply(next)).toEqual(r1.apply(next));
    expect(r3.snapshot()).toEqual(r1.snapshot());
  });

  it('raft/kv sessions - a snapshot of the old format (bare pairs) still restores', () => {
    // Version 1 snapshots were the msgpack array of [key, value] pairs; restore reads them with no sessions.
    const kv = new KvStateMachine();
    kv.restore(
      encode([
        ['a', '1'],
        ['b', '2'],
      ]),
    );
    expect([kv.get('a'), kv.get('b'), kv.size, kv.sessions.size]).toEqual(['1', '2', 2, 0]);
    kv.restore(encode([]));
    expect(kv.size).toBe(0);
  });

  it('raft/kv sessions - a damaged snapshot is refused with CodecError and changes nothing', () => {
    const kv = new KvStateMachine();
    kv.apply(put('k', 'v', 'c', 1, 1));
    for (const bad of [
      new Uint8Array([0xc1]),
      encode({ nope: 1 }),
      encode(['trellis.kv.snapshot', 2, { pairs: 3 }]),
    ])
      expect(() => kv.restore(bad)).toThrow(CodecError);
    expect(kv.get('k')).toBe('v');
    expect(kv.sessions.size).toBe(1);
  });

  it('raft/kv sessions - the table is plain data: toSnapshot and fromSnapshot agree', () => {
    const t = new KvSessionTable();
    t.advance(50);
    t.record({ client: 'a', seq: 1, issuedMs: 40 }, { ok: true, previous: null });
    t.record({ client: 'a', seq: 2, issuedMs: 45 }, { ok: false, error: 'full' });
    const copy = KvSessionTable.fromSnapshot(t.toSnapshot());
    expect(copy.toSnapshot()).toEqual(t.toSnapshot());
    expect(copy.check({ client: 'a', seq: 2, issuedMs: 45 })).toEqual({
      kind: 'answered',
      result: { ok: false, error: 'full' },
    });
    expect(copy.check({ client: 'a', seq: 3, issuedMs: 46 })).toEqual({ kind: 'new' });
    expect(copy.resultBytes).toBe(t.resultBytes);
  });
});
