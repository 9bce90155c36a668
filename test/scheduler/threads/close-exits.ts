/**
 * Run as a child process by threads.test.ts: a scheduler on a threaded group (file storage under the
 * directory given as the first argument) takes a few creates and closes. It never calls process.exit: the
 * process ends only if `close()` left no worker thread, timer or port alive. It prints what it created.
 */
import { createScheduler } from '../../../scheduler/scheduler.js';
import { ThreadedRaftGroup } from '../../../scheduler/threads/group.js';

const dir = process.argv[2];
if (dir === undefined) throw new Error('usage: close-exits.ts DIR');
const log = await ThreadedRaftGroup.open({ dir, replicas: 3 });
const s = createScheduler({ log });
await s.registerNode({
  id: 'n1',
  capacity: { cpu: 8000, memory: 16384, disk: 100000 },
  labels: {},
  state: 'ready',
});
const made = await Promise.all(
  Array.from({ length: 10 }, (_, i) =>
    s.create({ tenant: 't', resources: { cpu: 100, memory: 100, disk: 100 } }, { requestId: `c${i}` }),
  ),
);
await s.close();
await log.close();
console.log(JSON.stringify({ created: made.length, up: [0, 1, 2].map((i) => log.up(i)) }));
