import { describe, expect, it } from 'vitest';
import type { Message } from '../../../raft/core/messages.js';
import { framesOf, type PortFrame, PortNetwork, PortTransport } from '../../../raft/transport/ports.js';
import { raftMessageCodec } from '../../../raft/wire.js';
import { createRng } from '../../../src/lib/prng.js';

const seed = Number(process.env.SEED ?? 15);

const append = (from: string, to: string, data: Uint8Array): Message =>
  ({
    type: 'append',
    from,
    to,
    term: 3,
    prevIndex: 7,
    prevTerm: 2,
    commit: 6,
    entries: [{ term: 3, index: 8, type: 'normal', data }],
  }) as Message;

const heartbeat = (from: string, to: string): Message =>
  ({ type: 'heartbeat', from, to, term: 3, commit: 6 }) as Message;

describe('raft port transport', () => {
  it('ports - a frame crosses as the wire codec encodes it, with its own buffer to transfer', () => {
    // Each message becomes one frame addressed to its replica, decoding to an equal message; every frame
    // owns its whole buffer, so it can be transferred instead of copied.
    const m = append('r0', 'r1', new Uint8Array([1, 2, 3, 250]));
    const { frames, transfer } = framesOf([m, heartbeat('r0', 'r2')]);
    expect(frames.map((f) => f.to)).toEqual(['r1', 'r2']);
    expect(raftMessageCodec.decode((frames[0] as PortFrame).frame)).toEqual(m);
    expect(transfer).toHaveLength(2);
    expect(transfer[0]).toBe((frames[0] as PortFrame).frame.buffer);
  });

  it('ports - a worker transport delivers its own frames and drops, counts and never throws on anything else', () => {
    // Seeded garbage (SEED=n replays another seed): random bytes as frames, truncated and bit-flipped valid
    // frames, frames for another replica, values of the wrong shape. Only the valid frames for r1 arrive.
    const rng = createRng(seed);
    const t = new PortTransport('r1', () => {});
    const got: Message[] = [];
    t.onMessage((m) => got.push(m));
    const good = framesOf([append('r0', 'r1', new Uint8Array(40).fill(7))]).frames[0] as PortFrame;
    let hostile = 0;
    for (let i = 0; i < 300; i++) {
      const kind = rng.int(0, 5);
      const bytes = new Uint8Array(rng.int(1, 81)).map(() => rng.int(0, 256));
      const cut = good.frame.slice(0, rng.int(0, good.frame.length));
      const flipped = good.frame.slice();
      const at = rng.int(0, flipped.length);
      flipped[at] = (flipped[at] ?? 0) ^ (1 << rng.int(0, 8));
      const value =
        kind === 0
          ? [{ to: 'r1', frame: bytes }]
          : kind === 1
            ? [{ to: 'r1', frame: cut }]
            : kind === 2
              ? [{ to: 'r1', frame: flipped }]
              : kind === 3
                ? [framesOf([heartbeat('r0', 'r2')]).frames[0]]
                : [null, 5, 'x', { to: 'r1' }, { to: 1, frame: bytes }];
      const before = got.length;
      expect(() => t.receive(value), `seed ${seed}, value ${i}`).not.toThrow();
      // A flipped bit may still decode to a valid message for r1 (e.g. in the entry's data): that one counts.
      if (got.length === before) hostile++;
    }
    expect(() => t.receive('not a list')).not.toThrow();
    expect(() => t.receive(Array.from({ length: 5000 }, () => good))).not.toThrow();
    expect(t.dropped).toBeGreaterThanOrEqual(hostile);
    const before = got.length;
    t.receive([good]);
    expect(got.length).toBe(before + 1);
    expect(got.at(-1)).toEqual(raftMessageCodec.decode(good.frame));
  });

  it('ports - the routing side delivers a remote frame only to its addressee from its true sender, and passes others on encoded', async () => {
    // r0 is local, r1 and r2 remote. A frame r1 posts for r0 arrives decoded; one claiming to come from r2 is
    // dropped (a worker can only speak for itself); one for r2 is passed on as the same bytes; one for an
    // unknown replica or from a replica marked down goes nowhere. r0's own sends reach r1's port encoded.
    const net = new PortNetwork();
    const local = net.endpoint('r0');
    const got: Message[] = [];
    local.onMessage((m) => got.push(m));
    const toR1: PortFrame[] = [];
    const toR2: PortFrame[] = [];
    net.attach('r1', (frames) => toR1.push(...frames));
    net.attach('r2', (frames) => toR2.push(...frames));
    const fromR1 = framesOf([heartbeat('r1', 'r0')]).frames;
    const spoofed = framesOf([heartbeat('r2', 'r0')]).frames;
    const onward = framesOf([heartbeat('r1', 'r2')]).frames;
    const nowhere = framesOf([heartbeat('r1', 'r7')]).frames;
    net.fromRemote('r1', [
      ...fromR1,
      ...spoofed,
      ...onward,
      ...nowhere,
      { to: 'r0', frame: new Uint8Array([1]) },
    ]);
    expect(got).toEqual([heartbeat('r1', 'r0')]);
    expect(toR2.map((f) => f.frame)).toEqual(onward.map((f) => f.frame));
    expect(net.dropped).toBe(3);
    net.down.add('r1');
    net.fromRemote('r1', fromR1);
    expect(got).toHaveLength(1);
    for (const v of [undefined, null, 1, {}, 'x', [[1, 2]]])
      expect(() => net.fromRemote('r2', v)).not.toThrow();
    local.send([heartbeat('r0', 'r1')]);
    net.down.delete('r1');
    local.send([heartbeat('r0', 'r1')]);
    expect(toR1.map((f) => raftMessageCodec.decode(f.frame))).toEqual([heartbeat('r0', 'r1')]);
    expect(await local.probe?.('r1')).toBe('present');
    net.down.add('r1');
    expect(await local.probe?.('r1')).toBe('absent');
  });
});
