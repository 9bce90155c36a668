/**
 * load - the scaled-down load run, through the same code and the same checker as `npm run bench:load`:
 * nats-server, 3 `trellis server` replicas with file storage and two simulated worker processes as real
 * processes; 2,000 sandboxes on 20 nodes, each created and waited for until running on its simulated node,
 * one command run in it, then terminated, at a fixed rate so the chaos events fall inside the run: a follower
 * paused (SIGSTOP 3 s) at 2 s, the leader killed with SIGKILL at 4 s and restarted. The checker's counts must
 * be zero (nothing acknowledged lost, nothing placed twice, no node over capacity, nothing stuck), no process
 * may die by itself, every sandbox must run its command and be terminated (but the sim driver's deliberate
 * boot failures), and the one failover must have been timed.
 *
 * The second test runs `trellis bench load` as a command, interrupts it with SIGINT once its cluster is up,
 * and checks that it exits 130 and that every process it started (each in its own process group) is gone.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { chaosDefaults } from '../../src/load/chaos.js';
import { alive } from '../../src/load/processes.js';
import { jsonSummary, loadDefaults, runLoad } from '../../src/load/run.js';
import { cliMain } from '../../src/testing/replica-process.js';

describe('load - scaled-down run', () => {
  it('load - 2,000 sandboxes on 20 nodes through create, running, exec and terminate, a leader kill -9 and a follower pause: the checker counts zeros', async () => {
    expect(existsSync(cliMain), `${cliMain} missing: run npm run build first`).toBe(true);
    const report = await runLoad({
      ...loadDefaults,
      nodes: 20,
      sandboxes: 2_000,
      // 10 s of creates: the pause at 2 s and the kill at 4 s happen while sandboxes are in flight.
      ratePerMin: 12_000,
      wait: 'running',
      exec: true,
      clients: 4,
      drainMs: 20_000,
      chaos: {
        ...chaosDefaults,
        leaderKillEveryMs: 4_000,
        leaderKillsMax: 1,
        pauseMs: 3_000,
        natsRestart: false,
        workerRestart: false,
      },
    });
    const summary = jsonSummary(report);
    const events = report.chaos?.events.map((e) => e.what).join('\n') ?? '';
    const why = `${events}\n${JSON.stringify(report.drive.failures)}\n${JSON.stringify(report.unexpectedExits)}`;
    expect(summary, why).toMatchObject({
      lostAcked: 0,
      doublePlaced: 0,
      overCommitted: 0,
      stuck: 0,
      unexpectedExits: 0,
    });
    expect(report.check.replicasRead).toBe(3);
    expect(report.check.replicasBehind).toEqual([]);
    // The sim driver fails a few boots and disks on purpose (0.6%); nothing else may fail.
    const { 'create:SCHED_NOT_RUNNING': bootFailures = 0, ...otherFailures } = report.drive.failures;
    expect(otherFailures, why).toEqual({});
    expect(bootFailures).toBeLessThan(2_000 * 0.03);
    const { create, exec, terminate } = report.drive.phases;
    expect(create.count + bootFailures).toBe(2_000);
    expect(exec.count).toBe(create.count);
    expect(terminate.count).toBe(2_000);
    expect(report.drive.execAvailable).toBe(true);
    expect(events).toMatch(/follower r\d: SIGSTOP/);
    expect(events).toMatch(/follower r\d: SIGCONT/);
    expect(events).toMatch(/leader r\d \(term \d+, commit \d+\): SIGKILL at epoch ms \d+/);
    expect(events).toMatch(/replica r\d: restarted/);
    // The failover was measured (kill to the first commit of a later term), not judged against a clock.
    expect(report.check.failoversMs).toHaveLength(1);
    expect(summary.failoverMaxMs).toBeGreaterThan(0);
    expect(report.placementBatch.count).toBeGreaterThan(0);
  }, 400_000);

  it('load - SIGINT to trellis bench load stops every process it started', async () => {
    const child: ChildProcess = spawn(
      process.execPath,
      [cliMain, 'bench', 'load', '--nodes', '4', '--sandboxes', '100000', '--rate', '600/s'],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let err = '';
    child.stderr?.on('data', (d: Buffer) => {
      err += d.toString('utf8');
    });
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    // Interrupted while it drives: after the nodes are up.
    for (let i = 0; i < 1_200 && !/driving 100000 sandboxes/.test(err); i++)
      await new Promise((r) => setTimeout(r, 100));
    const pids = (/\(pids ([\d ]+)\)/.exec(err)?.[1] ?? '').split(' ').filter(Boolean).map(Number);
    expect(pids.length, err).toBe(6); // nats-server, 3 replicas, 2 workers
    for (const pid of pids) expect(await alive(pid)).toBe(true);
    child.kill('SIGINT');
    expect(await exited, err).toBe(130);
    for (const pid of pids) expect(await alive(pid), `process ${pid} outlived the run`).toBe(false);
  }, 180_000);
});
