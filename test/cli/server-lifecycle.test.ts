import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { exitCodes } from '../../src/cli/errors.js';
import { kvCall } from '../../src/cli/server.js';
import { cliMain, spawnReplica } from '../../src/testing/replica-process.js';
import { freePort, startNats } from '../../src/testing/servers.js';
import { errorLine, stackFrame } from './run-cli.js';

/** How long a test waits for a process to exit before it calls it a hang (generous: 2 shared cores). */
const exitWaitMsMax = 30_000;

interface Exit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  /** False when the process had to be killed because it did not exit in time. */
  readonly exited: boolean;
}

/** Resolves when `child` exits, or kills it after `exitWaitMsMax` and resolves with `exited: false`. */
function exitOf(child: ChildProcess): Promise<Exit> {
  if (child.exitCode !== null || child.signalCode !== null) {
    return Promise.resolve({ code: child.exitCode, signal: child.signalCode, exited: true });
  }
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      resolve({ code: null, signal: 'SIGKILL', exited: false });
    }, exitWaitMsMax);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, exited: true });
    });
  });
}

/** Spawns `trellis server` with its stderr collected; `onLine` sees each line as it arrives. */
function spawnServer(args: readonly string[]): {
  child: ChildProcess;
  stderr: () => string;
  line: (re: RegExp) => Promise<void>;
} {
  const child = spawn(process.execPath, [cliMain, 'server', '--state', 'kv', ...args], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, TRELLIS_LOG_LEVEL: 'info', TRELLIS_DEBUG: '' },
  });
  let text = '';
  const waiters: { re: RegExp; resolve: () => void }[] = [];
  child.stderr?.on('data', (d: Buffer) => {
    text += d.toString('utf8');
    for (const w of [...waiters]) {
      if (w.re.test(text)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve();
      }
    }
  });
  const line = (re: RegExp): Promise<void> =>
    re.test(text) ? Promise.resolve() : new Promise((resolve) => waiters.push({ re, resolve }));
  return { child, stderr: () => text, line };
}

describe('trellis server - startup and shutdown whatever the state of NATS', () => {
  let root: string;
  const children: ChildProcess[] = [];

  beforeAll(async () => {
    expect(existsSync(cliMain), `${cliMain} missing: run npm run build first`).toBe(true);
    root = await mkdtemp(join(tmpdir(), 'trellis-lifecycle-'));
  });
  afterAll(async () => {
    for (const c of children) c.kill('SIGKILL');
    await rm(root, { recursive: true, force: true });
  });

  it('trellis server - waits for an unreachable NATS, says where, and gives up after --connect-timeout with one line', async () => {
    // Nothing listens on the port: the replica logs that it is waiting (and where) while it retries, then
    // exits with the "unavailable" code and one error line as its last line; no stack trace.
    const port = await freePort();
    const s = spawnServer([
      '--id',
      'a',
      '--peers',
      'a',
      '--data',
      join(root, 'unreachable'),
      '--nats',
      `nats://127.0.0.1:${port}`,
      '--connect-timeout',
      '1500ms',
    ]);
    children.push(s.child);
    const exit = await exitOf(s.child);
    expect(exit).toEqual({ code: exitCodes.unavailable, signal: null, exited: true });
    const lines = s.stderr().trim().split('\n');
    expect(s.stderr()).toContain(`"msg":"waiting for NATS at nats://127.0.0.1:${port}"`);
    expect(lines.at(-1)).toMatch(errorLine);
    expect(lines.at(-1)).toContain('(UNAVAILABLE)');
    expect(s.stderr()).not.toMatch(stackFrame);
  });

  it('trellis server - SIGTERM while it is still waiting for NATS stops it at once', async () => {
    // A replica told to stop before it ever connected has nothing to close: it exits 0 without waiting out
    // its (here one hour) connect timeout.
    const port = await freePort();
    const s = spawnServer([
      '--id',
      'a',
      '--peers',
      'a',
      '--data',
      join(root, 'waiting'),
      '--nats',
      `nats://127.0.0.1:${port}`,
      '--connect-timeout',
      '60m',
    ]);
    children.push(s.child);
    await s.line(/waiting for NATS/);
    s.child.kill('SIGTERM');
    expect(await exitOf(s.child)).toEqual({ code: 0, signal: null, exited: true });
  });

  it('trellis server - exits on SIGTERM after nats-server has gone away', async () => {
    // Three replicas elect a leader and take a write; nats-server is killed (SIGKILL); each replica then gets
    // SIGTERM and must exit on its own (bounded close: --stop-timeout) instead of draining a dead connection
    // forever. Before the fix they logged "stopping" and stayed up.
    const nats = await startNats();
    const ids = ['a', 'b', 'c'];
    const procs = ids.map((id) =>
      spawnReplica({ id, peers: ids, natsUrl: nats.url, root: join(root, 'group'), cluster: 'life' }),
    );
    children.push(...procs);
    const nc = await connect({ servers: nats.url });
    try {
      const r = await kvCall(nc, 'life', { op: 'put', key: 'k', value: 'v' }, 20_000);
      expect(r.ok, JSON.stringify(r)).toBe(true);
    } finally {
      await nc.close();
    }
    await nats.kill();
    try {
      const exits = procs.map((p) => exitOf(p));
      for (const p of procs) p.kill('SIGTERM');
      for (const e of await Promise.all(exits)) expect(e).toEqual({ code: 0, signal: null, exited: true });
    } finally {
      await nats.stop();
    }
  });
});
