/**
 * A node worker in its own process, for the kill -9 test: creates the sandboxes named on the command line
 * with the process driver in DATA_DIR, prints `running <id>` for each once it runs, then waits to be killed.
 */
import type { NodeId, SandboxId } from '../../src/lib/ids.js';
import { ProcessDriver } from '../../src/worker/drivers/process.js';
import { NodeWorker } from '../../src/worker/node-worker.js';

const [dataDir, ...ids] = process.argv.slice(2);
if (dataDir === undefined) throw new Error('usage: worker-child DATA_DIR ID...');
const worker = new NodeWorker({
  nodeId: 'child' as NodeId,
  driver: new ProcessDriver({ dataDir }),
  statusFlushMs: 1,
  statusSink: async (batch) => {
    for (const r of batch) if (r.state === 'running') process.stdout.write(`running ${r.sandboxId}\n`);
  },
});
for (const id of ids) {
  await worker.create({
    sandboxId: id as SandboxId,
    resources: { cpu: 100, memory: 64, disk: 8 },
    image: 'default',
  });
}
setInterval(() => {}, 60_000);
