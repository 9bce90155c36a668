import { describe, expect, it } from 'vitest';
import { KvStateMachine, kvCommandCodec } from '../../raft/kv.js';

const entry = (index: number, data: Uint8Array) => ({ index, term: 1, type: 'normal' as const, data });

describe('raft/kv', () => {
  it('raft/kv - applies put, cas and delete, and refuses a bad command without changing state', () => {
    // Runs a short log and checks each result and the final state; a garbage entry yields bad-command.
    const kv = new KvStateMachine();
    expect(kv.apply(entry(1, kvCommandCodec.encode({ op: 'put', key: 'a', value: '1' })))).toEqual({
      ok: true,
      previous: null,
    });
    expect(
      kv.apply(entry(2, kvCommandCodec.encode({ op: 'cas', key: 'a', expected: '1', value: '2' }))),
    ).toEqual({ ok: true, previous: '1' });
    expect(
      kv.apply(entry(3, kvCommandCodec.encode({ op: 'cas', key: 'a', expected: '1', value: '3' }))),
    ).toEqual({
      ok: false,
      error: 'cas-mismatch',
      current: '2',
    });
    expect(kv.apply(entry(4, new Uint8Array([1, 2, 3])))).toEqual({ ok: false, error: 'bad-command' });
    expect(kv.get('a')).toBe('2');
    expect(kv.apply(entry(5, kvCommandCodec.encode({ op: 'delete', key: 'a' })))).toEqual({
      ok: true,
      previous: '2',
    });
    expect(kv.get('a')).toBeNull();
  });

  it('raft/kv - a snapshot restores the same state, byte for byte, whatever the insertion order', () => {
    // Two machines fed the same keys in different orders snapshot to equal bytes; restore reproduces them.
    const a = new KvStateMachine();
    const b = new KvStateMachine();
    const keys = ['k3', 'k1', 'k2'];
    for (const [i, k] of keys.entries())
      a.apply(entry(i + 1, kvCommandCodec.encode({ op: 'put', key: k, value: k })));
    for (const [i, k] of [...keys].reverse().entries()) {
      b.apply(entry(i + 1, kvCommandCodec.encode({ op: 'put', key: k, value: k })));
    }
    expect(a.snapshot()).toEqual(b.snapshot());
    const c = new KvStateMachine();
    c.restore(a.snapshot());
    expect([c.get('k1'), c.get('k2'), c.get('k3'), c.size]).toEqual(['k1', 'k2', 'k3', 3]);
  });
});
