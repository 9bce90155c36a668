import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { throttledLinesPerWindowMax, throttledWarn } from '../../src/log.js';

function capture(): { log: pino.Logger; lines: () => { msg: string; [k: string]: unknown }[] } {
  const out: string[] = [];
  const sink = new Writable({
    write(chunk, _enc, done) {
      out.push(
        ...String(chunk)
          .split('\n')
          .filter((l) => l !== ''),
      );
      done();
    },
  });
  const log = pino({ level: 'warn' }, sink);
  return { log, lines: () => out.map((l) => JSON.parse(l) as { msg: string }) };
}

describe('log - throttled warnings', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('log - a flood of one warning writes at most the window bound, then one summary counted by reason', async () => {
    vi.useFakeTimers();
    const { log, lines } = capture();
    const warn = throttledWarn(log, 'refused an API frame', 1_000);
    for (let i = 0; i < 1_000; i++) warn({ reason: i % 2 === 0 ? 'codec' : 'schema', detail: `#${i}` });
    await vi.advanceTimersByTimeAsync(1_001);
    log.flush();
    await vi.advanceTimersByTimeAsync(10);
    const got = lines();
    expect(got).toHaveLength(throttledLinesPerWindowMax + 1);
    const summary = got.at(-1) as { msg: string; suppressed: number; byReason: Record<string, number> };
    expect(summary.suppressed).toBe(1_000 - throttledLinesPerWindowMax);
    expect(summary.byReason).toEqual({ codec: 490, schema: 490 });
    expect(summary.msg).toContain('980 more not logged');
    // A new window writes again.
    warn({ reason: 'codec' });
    log.flush();
    await vi.advanceTimersByTimeAsync(10);
    expect(lines()).toHaveLength(throttledLinesPerWindowMax + 2);
  });

  it('log - a quiet window writes every warning and no summary', async () => {
    vi.useFakeTimers();
    const { log, lines } = capture();
    const warn = throttledWarn(log, 'dropped inbound raft frame', 1_000);
    for (let i = 0; i < 3; i++) warn({ reason: 'codec' });
    await vi.advanceTimersByTimeAsync(5_000);
    log.flush();
    await vi.advanceTimersByTimeAsync(10);
    expect(lines().map((l) => l.msg)).toEqual(Array(3).fill('dropped inbound raft frame'));
  });
});
