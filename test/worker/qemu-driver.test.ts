import { execFileSync, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ValidationError } from '../../src/lib/errors.js';
import { QemuDriver, qemuExecStdinBytesMax } from '../../src/worker/drivers/qemu.js';
import { SandboxStateError } from '../../src/worker/errors.js';
import { NodeWorker } from '../../src/worker/node-worker.js';
import { alive } from '../helpers/processes.js';
import { until } from '../helpers/until.js';
import { nid, sid, spec, statusLog } from './fixtures.js';

// QEMU under TCG is slow (seconds per cold boot on a shared 2-core machine): this file boots one template
// cold and creates every sandbox by snapshot restore. A missing qemu or guest piece fails here (the driver
// throws UnavailableError), never skips: the test command installs them (scripts/ensure-services.sh).
const text = (b: Uint8Array): string => Buffer.from(b).toString('utf8');
const opts = (timeoutMs = 30_000) => ({ timeoutMs, outputBytesMax: 4096 });

describe('worker/drivers/qemu', () => {
  let dir: string;
  let driver: QemuDriver;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'trellis-qemu-'));
    driver = new QemuDriver({ dataDir: dir });
    await driver.prepare();
  }, 300_000);
  afterAll(async () => {
    await driver?.close();
    await rm(dir, { recursive: true, force: true });
  }, 120_000);

  it('qemu driver - a restored microVM answers exec, and suspend then resume keeps a file it wrote', async () => {
    // Checks the real thing: the sandbox disk is a qcow2 overlay on the frozen template overlay, the guest
    // agent runs the command and returns its output and exit code, a file written before suspend is there
    // after resume, suspend ends QEMU and leaves the state file, and destroy ends everything.
    const s = spec('vm1', 512);
    await driver.createDisk(s);
    const info = JSON.parse(
      execFileSync('qemu-img', [
        'info',
        '--output=json',
        '--force-share',
        driver.diskPath(s.sandboxId),
      ]).toString(),
    ) as { format: string; 'backing-filename': string; 'virtual-size': number };
    expect(info.format).toBe('qcow2');
    expect(info['backing-filename']).toMatch(/template\.qcow2$/);
    expect(info['virtual-size']).toBe(512 * 1024 * 1024);

    await driver.boot(s);
    const pid = (await driver.machinePid(s.sandboxId)) as number;
    expect(alive(pid)).toBe(true);
    const r = await driver.exec(s.sandboxId, {
      command: ['sh', '-c', 'echo "it is $(uname -s)"; echo kept > note.txt; sync; echo oops >&2; exit 7'],
      ...opts(),
    });
    expect(r.exitCode).toBe(7);
    expect(text(r.stdout)).toBe('it is Linux\n');
    expect(text(r.stderr)).toBe('oops\n');

    await driver.suspend(s.sandboxId);
    expect(alive(pid)).toBe(false);
    expect((await stat(join(driver.sandboxDir(s.sandboxId), 'suspend.state'))).size).toBeGreaterThan(1 << 20);
    expect(await driver.list()).toEqual([{ sandboxId: 'vm1', state: 'suspended' }]);
    await expect(driver.exec(s.sandboxId, { command: ['true'], ...opts() })).rejects.toBeInstanceOf(
      SandboxStateError,
    );

    await driver.resume(s.sandboxId);
    const back = await driver.exec(s.sandboxId, { command: ['cat', 'note.txt'], ...opts() });
    expect(text(back.stdout)).toBe('kept\n');
    const stdin = await driver.exec(s.sandboxId, {
      command: ['wc', '-c'],
      stdin: new Uint8Array(1000).fill(65),
      ...opts(),
    });
    expect(text(stdin.stdout).trim()).toBe('1000');
    await expect(
      driver.exec(s.sandboxId, {
        command: ['cat'],
        stdin: new Uint8Array(qemuExecStdinBytesMax + 1),
        ...opts(),
      }),
    ).rejects.toBeInstanceOf(ValidationError);

    const newPid = (await driver.machinePid(s.sandboxId)) as number;
    await driver.destroy(s.sandboxId);
    expect(alive(newPid)).toBe(false);
    await expect(stat(driver.sandboxDir(s.sandboxId))).rejects.toThrow();
  }, 600_000);

  it('qemu driver - through the worker, two sandboxes restore from one template and stay apart', async () => {
    // Checks isolation of overlays (a file written in one is absent in the other), bounded output, and the
    // worker's lifecycle statuses on the real driver.
    const log = statusLog();
    const worker = new NodeWorker({ nodeId: nid('n1'), driver, statusSink: log.sink, statusFlushMs: 5 });
    await worker.create(spec('a'));
    await worker.create(spec('b'));
    await until(
      () => worker.stateOf(sid('a')) === 'running' && worker.stateOf(sid('b')) === 'running',
      'both running',
      300_000,
    );
    await worker.exec(sid('a'), { command: ['sh', '-c', 'echo only-a > mine; sync'] });
    const inB = await worker.exec(sid('b'), { command: ['sh', '-c', 'ls mine 2>/dev/null || echo absent'] });
    expect(inB.type === 'exec' && text(inB.result.stdout)).toBe('absent\n');
    const big = await worker.exec(sid('a'), {
      command: ['head', '-c', '5000', '/dev/zero'],
      outputBytesMax: 100,
    });
    expect(big.type === 'exec' && big.result.stdout.byteLength).toBe(100);
    expect(big.type === 'exec' && big.result.stdoutTruncated).toBe(true);
    await worker.terminate(sid('a'));
    await worker.terminate(sid('b'));
    await until(
      () => worker.stateOf(sid('a')) === 'terminated' && worker.stateOf(sid('b')) === 'terminated',
      'both terminated',
      60_000,
    );
    await worker.flush();
    expect(log.states('a')).toEqual(['starting', 'running', 'terminating', 'terminated']);
    expect(await driver.list()).toEqual([]);
    expect(await readFile(join(dir, 'templates', 'm128-c1', 'ready'), 'utf8')).toBe('');
  }, 600_000);

  it('qemu driver - a create restores into a warm QEMU started ahead; after a worker crash the VM is kept and the waiting ones ended', async () => {
    // A driver in a child process (test/worker/qemu-child.ts) restores a sandbox into a warm QEMU (its command
    // line then names trellis-warm-*) and is killed -9 with more warm processes waiting. A new driver on the
    // same data dir (the restarted worker) still sees that VM as running and reaches its guest, and ends the
    // warm processes the dead one left waiting.
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', join(import.meta.dirname, 'qemu-child.ts'), dir, 'w1'],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    let out = '';
    child.stdout.on('data', (b: Buffer) => {
      out += b.toString();
    });
    try {
      await until(() => out.includes('waiting '), 'the child restored into a warm QEMU', 300_000);
    } finally {
      child.kill('SIGKILL');
    }
    const pid = Number(/running w1 (\d+)/.exec(out)?.[1]);
    const waiting = (/waiting ([\d ]+)/.exec(out)?.[1] ?? '').trim().split(' ').map(Number);
    expect(waiting.length).toBeGreaterThan(0);
    expect(await readFile(`/proc/${pid}/cmdline`, 'utf8')).toContain('trellis-warm-');

    const restarted = new QemuDriver({ dataDir: dir, warmVms: false });
    try {
      await restarted.prepare();
      await until(() => waiting.every((p) => !alive(p)), 'the waiting warm processes ended', 30_000);
      expect(alive(pid)).toBe(true);
      const w1 = sid('w1');
      // Its pid file damaged while no worker ran: the VM is found again by its command line, not orphaned.
      await writeFile(join(restarted.sandboxDir(w1), 'vm.pid'), String(process.pid));
      expect((await restarted.list()).find((m) => m.sandboxId === w1)?.state).toBe('running');
      expect(await readFile(join(restarted.sandboxDir(w1), 'vm.pid'), 'utf8')).toBe(String(pid));
      const r = await restarted.exec(w1, { command: ['sh', '-c', 'echo warm > f; cat f'], ...opts() });
      expect(text(r.stdout)).toBe('warm\n');
      await restarted.destroy(w1);
      await restarted.destroy(sid('w1-first'));
      expect(alive(pid)).toBe(false);
    } finally {
      await restarted.close();
    }
  }, 600_000);
});
