/**
 * A qemu driver in its own process, for the restart test: creates one sandbox so the driver starts warm QEMU
 * processes, waits for one, creates the sandbox named on the command line (restored into a warm process),
 * prints `running <id> <pid>` and `waiting <pid>...` (the warm processes left waiting), then waits to be killed.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { QemuDriver } from '../../src/worker/drivers/qemu.js';
import { spec } from './fixtures.js';

const [dataDir, id] = process.argv.slice(2);
if (dataDir === undefined || id === undefined) throw new Error('usage: qemu-child DATA_DIR ID');
const driver = new QemuDriver({ dataDir });
await driver.createDisk(spec(`${id}-first`));
while (driver.warmPids().length === 0) await sleep(20);
const s = spec(id);
await driver.createDisk(s);
await driver.boot(s);
process.stdout.write(`running ${id} ${await driver.machinePid(s.sandboxId)}\n`);
while (driver.warmPids().length === 0) await sleep(20);
process.stdout.write(`waiting ${driver.warmPids().join(' ')}\n`);
setInterval(() => {}, 60_000);
