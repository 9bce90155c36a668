import { spawn } from 'node:child_process';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ValidationError } from '../../src/lib/errors.js';
import { execStdinBytesMax } from '../../src/worker/driver.js';
import { ProcessDriver } from '../../src/worker/drivers/process.js';
import { SandboxStateError } from '../../src/worker/errors.js';
import { NodeWorker } from '../../src/worker/node-worker.js';
import { alive, procState } from '../helpers/processes.js';
import { until } from '../helpers/until.js';
import { nid, sid, spec, statusLog } from './fixtures.js';

const text = (b: Uint8Array): string => Buffer.from(b).toString('utf8');

describe('worker/drivers/process', () => {
  let dir: string;
  let driver: ProcessDriver;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'trellis-process-'));
    driver = new ProcessDriver({ dataDir: dir });
  });
  afterEach(async () => {
    await driver.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('process driver - lifecycle on a real process and a real sparse disk file', async () => {
    // Checks each step for real: a sparse file of the requested size, a live process whose working
    // directory is the sandbox's, exec output and exit code, SIGSTOP/SIGCONT keeping the pid, no process
    // left after stop, no files after destroy.
    const s = spec('life', 512);
    await driver.createDisk(s);
    const disk = await stat(driver.diskPath(s.sandboxId));
    expect(disk.size).toBe(512 * 1024 * 1024);
    expect(disk.blocks * 512).toBeLessThan(1024 * 1024); // sparse: nothing written
    await driver.createDisk(s); // idempotent
    await driver.boot(s);
    await driver.boot(s); // idempotent
    const pid = await driver.machinePid(s.sandboxId);
    expect(pid).toBeDefined();
    expect(alive(pid as number)).toBe(true);

    const r = await driver.exec(s.sandboxId, {
      command: ['sh', '-c', 'echo hello > note; cat note; pwd; echo oops >&2; exit 3'],
      timeoutMs: 10_000,
      outputBytesMax: 4096,
    });
    expect(r.exitCode).toBe(3);
    expect(text(r.stdout)).toBe(`hello\n${join(driver.sandboxDir(s.sandboxId), 'root')}\n`);
    expect(text(r.stderr)).toBe('oops\n');

    await driver.suspend(s.sandboxId);
    expect(procState(pid as number)).toBe('T');
    expect(await driver.list()).toEqual([{ sandboxId: 'life', state: 'suspended' }]);
    await expect(
      driver.exec(s.sandboxId, { command: ['true'], timeoutMs: 1000, outputBytesMax: 10 }),
    ).rejects.toBeInstanceOf(SandboxStateError);
    await driver.resume(s.sandboxId);
    expect(await driver.machinePid(s.sandboxId)).toBe(pid);
    expect(procState(pid as number)).not.toBe('T');
    const again = await driver.exec(s.sandboxId, {
      command: ['cat', 'note'],
      timeoutMs: 10_000,
      outputBytesMax: 100,
    });
    expect(text(again.stdout)).toBe('hello\n');

    await driver.stop(s.sandboxId);
    expect(alive(pid as number)).toBe(false);
    expect(await driver.list()).toEqual([{ sandboxId: 'life', state: 'stopped' }]);
    await driver.destroy(s.sandboxId);
    await driver.destroy(s.sandboxId); // idempotent
    await expect(stat(driver.sandboxDir(s.sandboxId))).rejects.toThrow();
    expect(await driver.list()).toEqual([]);
  });

  it('process driver - stop of a suspended machine leaves no process behind', async () => {
    // Checks that SIGSTOPped machines are still ended (SIGTERM alone would wait for SIGCONT).
    const s = spec('frozen');
    await driver.createDisk(s);
    await driver.boot(s);
    const pid = (await driver.machinePid(s.sandboxId)) as number;
    await driver.suspend(s.sandboxId);
    await driver.stop(s.sandboxId);
    expect(alive(pid)).toBe(false);
  });

  it('process driver - exec is bounded in output, time and stdin', async () => {
    // Checks each bound: output beyond the limit is cut and flagged, a command past its timeout is killed
    // and flagged, stdin reaches the command, oversized stdin and bad requests are refused before running.
    const s = spec('bounds');
    await driver.createDisk(s);
    await driver.boot(s);
    const big = await driver.exec(s.sandboxId, {
      command: ['sh', '-c', 'head -c 100000 /dev/zero'],
      timeoutMs: 10_000,
      outputBytesMax: 1000,
    });
    expect(big.stdout.byteLength).toBe(1000);
    expect(big.stdoutTruncated).toBe(true);
    const slow = await driver.exec(s.sandboxId, {
      command: ['sleep', '30'],
      timeoutMs: 200,
      outputBytesMax: 10,
    });
    expect(slow.timedOut).toBe(true);
    expect(slow.signal).toBe('SIGKILL');
    const echo = await driver.exec(s.sandboxId, {
      command: ['cat'],
      stdin: new TextEncoder().encode('from stdin'),
      timeoutMs: 10_000,
      outputBytesMax: 100,
    });
    expect(text(echo.stdout)).toBe('from stdin');
    const missing = await driver.exec(s.sandboxId, {
      command: ['no-such-program-x'],
      timeoutMs: 1000,
      outputBytesMax: 200,
    });
    expect(missing.exitCode).toBe(127);
    await expect(
      driver.exec(s.sandboxId, {
        command: ['cat'],
        stdin: new Uint8Array(execStdinBytesMax + 1),
        timeoutMs: 1000,
        outputBytesMax: 10,
      }),
    ).rejects.toBeInstanceOf(ValidationError);
    await expect(
      driver.exec(s.sandboxId, { command: [], timeoutMs: 1000, outputBytesMax: 10 }),
    ).rejects.toBeInstanceOf(ValidationError);
  });

  it('process driver - a restarted worker finds its running machines and never adopts a foreign pid', async () => {
    // Checks what reconcile relies on: a new driver over the same data dir lists the live machine, and a
    // pid file pointing at an unrelated process (pid reuse) is not taken for a machine.
    const a = spec('keep');
    const b = spec('stale');
    for (const s of [a, b]) {
      await driver.createDisk(s);
      await driver.boot(s);
    }
    await driver.stop(b.sandboxId);
    await writeFile(join(driver.sandboxDir(b.sandboxId), 'vm.pid'), String(process.pid)); // a live, foreign pid
    const restarted = new ProcessDriver({ dataDir: dir });
    const log = statusLog();
    const worker = new NodeWorker({ nodeId: nid('n1'), driver: restarted, statusSink: log.sink });
    expect(await worker.report()).toEqual([{ sandboxId: 'keep', state: 'running' }]);
    const r = await worker.exec(sid('keep'), { command: ['echo', 'still here'] });
    expect(r.type === 'exec' && text(r.result.stdout)).toBe('still here\n');
    await worker.close({ stopMachines: true });
    expect(await restarted.list()).toEqual(
      expect.arrayContaining([
        { sandboxId: 'keep', state: 'stopped' },
        { sandboxId: 'stale', state: 'stopped' },
      ]),
    );
    expect(alive(process.pid)).toBe(true);
  });

  it('process driver - a restarted worker finds a machine whose pid file was edited or deleted, and stops it', async () => {
    // A damaged data directory must not leave a machine process nobody owns: the machine is found again
    // by its working directory, reported running, and stopped with the others.
    const edited = spec('edited');
    const deleted = spec('deleted');
    for (const s of [edited, deleted]) {
      await driver.createDisk(s);
      await driver.boot(s);
    }
    const pids = [
      (await driver.machinePid(edited.sandboxId)) as number,
      (await driver.machinePid(deleted.sandboxId)) as number,
    ];
    expect(pids.every((p) => alive(p))).toBe(true);
    await writeFile(join(driver.sandboxDir(edited.sandboxId), 'vm.pid'), String(process.pid));
    await rm(join(driver.sandboxDir(deleted.sandboxId), 'vm.pid'));
    const restarted = new ProcessDriver({ dataDir: dir });
    expect(await restarted.list()).toEqual(
      expect.arrayContaining([
        { sandboxId: 'edited', state: 'running' },
        { sandboxId: 'deleted', state: 'running' },
      ]),
    );
    expect(await restarted.machinePid(edited.sandboxId)).toBe(pids[0]);
    const worker = new NodeWorker({ nodeId: nid('n1'), driver: restarted, statusSink: statusLog().sink });
    await worker.report();
    await worker.close({ stopMachines: true });
    await until(() => pids.every((p) => !alive(p)), 'both machines stopped');
    expect(alive(process.pid)).toBe(true);
  });

  it('process driver - a machine that dies under the worker turns the sandbox failed with the reason', async () => {
    // Checks failure detection on the real driver: the stand-in VM is killed from outside; the next exec
    // is refused and the worker reports the sandbox failed, naming what it found.
    const log = statusLog();
    const worker = new NodeWorker({ nodeId: nid('n1'), driver, statusSink: log.sink, statusFlushMs: 5 });
    await worker.create(spec('dies'));
    await until(() => worker.stateOf(sid('dies')) === 'running', 'dies running');
    const pid = (await driver.machinePid(sid('dies'))) as number;
    process.kill(-pid, 'SIGKILL');
    await until(() => !alive(pid), 'machine gone');
    await expect(worker.exec(sid('dies'), { command: ['true'] })).rejects.toBeInstanceOf(SandboxStateError);
    expect(worker.stateOf(sid('dies'))).toBe('failed');
    await worker.flush();
    const failed = log.batches.flat().find((r) => r.sandboxId === 'dies' && r.state === 'failed');
    expect(failed?.reason).toContain('machine is stopped');
    await worker.terminate(sid('dies'));
    await until(() => worker.stateOf(sid('dies')) === 'terminated', 'dies terminated');
  });

  it('process driver - through the worker: create, exec, suspend, resume, terminate leave nothing behind', async () => {
    // Checks the worker core on the real driver: statuses in order and no process or file afterwards.
    const log = statusLog();
    const worker = new NodeWorker({ nodeId: nid('n1'), driver, statusSink: log.sink, statusFlushMs: 5 });
    await worker.create(spec('w1'));
    await until(() => worker.stateOf(sid('w1')) === 'running', 'w1 running');
    const pid = (await driver.machinePid(sid('w1'))) as number;
    await worker.suspend(sid('w1'));
    await until(() => worker.stateOf(sid('w1')) === 'suspended', 'w1 suspended');
    await worker.resume(sid('w1'));
    await until(() => worker.stateOf(sid('w1')) === 'running', 'w1 running again');
    expect(await driver.machinePid(sid('w1'))).toBe(pid);
    await worker.terminate(sid('w1'));
    await until(() => worker.stateOf(sid('w1')) === 'terminated', 'w1 terminated');
    await worker.flush();
    expect(log.states('w1')).toEqual([
      'starting',
      'running',
      'suspending',
      'suspended',
      'resuming',
      'running',
      'terminating',
      'terminated',
    ]);
    expect(alive(pid)).toBe(false);
    expect(await driver.list()).toEqual([]);
  });
});

describe('worker/drivers/process - a worker process killed with SIGKILL', () => {
  it('process driver - machines survive a kill -9 of their worker and the next worker reports and ends them', async () => {
    // Checks the reconcile premise with real processes: the worker runs in a child process, is SIGKILLed
    // after its sandboxes run; the machines (detached process groups) live on; a new worker over the same
    // data dir reports them running, and stop-orphans ends one while the other stays.
    const dir = await mkdtemp(join(tmpdir(), 'trellis-kill9-'));
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', join(import.meta.dirname, 'worker-child.ts'), dir, 'k1', 'k2'],
      {
        stdio: ['ignore', 'pipe', 'inherit'],
      },
    );
    let out = '';
    child.stdout.on('data', (c: Buffer) => {
      out += c.toString();
    });
    try {
      await until(
        () => out.includes('running k1') && out.includes('running k2'),
        'child worker running both',
        60_000,
      );
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGKILL');
      await exited;
      const driver = new ProcessDriver({ dataDir: dir });
      const pids = await Promise.all(['k1', 'k2'].map((id) => driver.machinePid(sid(id))));
      for (const pid of pids) expect(alive(pid as number)).toBe(true);
      const log = statusLog();
      const worker = new NodeWorker({ nodeId: nid('child'), driver, statusSink: log.sink });
      const report = await worker.report();
      expect(report.sort((a, b) => a.sandboxId.localeCompare(b.sandboxId))).toEqual([
        { sandboxId: 'k1', state: 'running' },
        { sandboxId: 'k2', state: 'running' },
      ]);
      expect(await worker.stopOrphans([sid('k2')])).toEqual({ type: 'orphans', stopped: 1 });
      expect(alive(pids[1] as number)).toBe(false);
      expect(alive(pids[0] as number)).toBe(true);
      await worker.close({ stopMachines: true });
      expect(alive(pids[0] as number)).toBe(false);
    } finally {
      child.kill('SIGKILL');
      await new ProcessDriver({ dataDir: dir }).close();
      await rm(dir, { recursive: true, force: true });
    }
  }, 120_000);
});
