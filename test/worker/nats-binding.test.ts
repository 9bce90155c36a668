import { connect, type NatsConnection } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRng } from '../../src/lib/prng.js';
import { realTimers } from '../../src/lib/timers.js';
import { type RunningServer, startNats } from '../../src/testing/servers.js';
import { natsCommandSink } from '../../src/worker/command-sink.js';
import { defaultSimLatencyModel, SimDriver } from '../../src/worker/drivers/sim.js';
import {
  natsStatusSink,
  nodeCommandSubject,
  nodeStatusSubject,
  serveWorker,
  type WorkerBinding,
  workerCommandCodec,
  workerReplyCodec,
  workerStatusCodec,
} from '../../src/worker/nats-binding.js';
import { NodeWorker } from '../../src/worker/node-worker.js';
import type { StatusReport } from '../../src/worker/protocol.js';
import { until } from '../helpers/until.js';
import { type Counting, counting, nid, sid } from './fixtures.js';

const fast = {
  ...defaultSimLatencyModel,
  disk: { medianMs: 1, p99Ms: 2 },
  boot: { medianMs: 2, p99Ms: 4 },
  failureRate: { disk: 0, boot: 0, resume: 0 },
};

describe('worker/nats-binding - a node worker on a real nats-server', () => {
  let server: RunningServer;
  let workerNc: NatsConnection;
  let client: NatsConnection;
  let worker: NodeWorker;
  let binding: WorkerBinding;
  const statuses: StatusReport[] = [];
  let sim: Counting;

  beforeAll(async () => {
    server = await startNats();
    [workerNc, client] = await Promise.all([
      connect({ servers: server.url }),
      connect({ servers: server.url }),
    ]);
    client.subscribe(nodeStatusSubject('c1', 'n1'), {
      callback: (_err, msg) => statuses.push(...workerStatusCodec.decode(msg.data).reports),
    });
    await client.flush();
    sim = counting(new SimDriver({ rng: createRng(5), timers: realTimers, model: fast }));
    worker = new NodeWorker({
      nodeId: nid('n1'),
      driver: sim.driver,
      statusSink: natsStatusSink(workerNc, 'c1', 'n1'),
      statusFlushMs: 5,
    });
    binding = serveWorker(workerNc, 'c1', worker);
    await workerNc.flush();
  });
  afterAll(async () => {
    await binding?.stop();
    await worker?.close({ stopMachines: true });
    await Promise.all([workerNc?.close(), client?.close()]);
    await server?.stop();
  });

  const send = async (nodeId: string, command: unknown) => {
    const frame = workerCommandCodec.encode({ nodeId, command } as never);
    const msg = await client.request(nodeCommandSubject('c1', 'n1'), frame, { timeout: 5_000 });
    return workerReplyCodec.decode(msg.data);
  };

  it('nats-binding - commands are answered, idempotent, and statuses arrive batched on the status subject', async () => {
    // Checks the wire path end to end: create twice (one VM), exec answered, terminate; statuses decode.
    const create = { type: 'create', sandboxId: 'x1', resources: { cpu: 100, memory: 64, disk: 10 } };
    expect(await send('n1', create)).toMatchObject({ ok: true, reply: { state: 'starting' } });
    expect(await send('n1', create)).toMatchObject({ ok: true });
    await until(() => statuses.some((s) => s.sandboxId === 'x1' && s.state === 'running'), 'x1 running');
    expect(await send('n1', { type: 'exec', sandboxId: 'x1', command: ['true'] })).toMatchObject({
      ok: true,
      reply: { type: 'exec', result: { exitCode: 0 } },
    });
    expect(await send('n1', { type: 'terminate', sandboxId: 'x1' })).toMatchObject({ ok: true });
    await until(
      () => statuses.some((s) => s.sandboxId === 'x1' && s.state === 'terminated'),
      'x1 terminated',
    );
    expect(sim.calls.boot).toBe(1);
  });

  it('nats-binding - garbage, another node, unknown ids and bad commands change nothing and crash nothing', async () => {
    // Checks the boundary: undecodable frames are counted and dropped, a command for another node and a
    // command for an unknown sandbox are refused with a code, and the worker still serves afterwards.
    const subject = nodeCommandSubject('c1', 'n1');
    for (const junk of [
      new Uint8Array([1, 2, 3]),
      new TextEncoder().encode('{"type":"create"}'),
      new Uint8Array(0),
    ]) {
      client.publish(subject, junk);
    }
    client.publish(
      subject,
      workerCommandCodec
        .encode({ nodeId: 'n1', command: { type: 'terminate', sandboxId: 'a' } } as never)
        .slice(0, 5),
    );
    await client.flush();
    await until(() => Object.values(binding.dropped()).reduce((a, b) => a + b, 0) >= 4, 'garbage counted');
    const other = await send('n2', {
      type: 'create',
      sandboxId: 'y',
      resources: { cpu: 1, memory: 1, disk: 1 },
    });
    expect(other).toMatchObject({ ok: false, error: { code: 'VALIDATION' } });
    expect(worker.stateOf('y' as never)).toBeUndefined();
    expect(await send('n1', { type: 'suspend', sandboxId: 'unknown-1' })).toMatchObject({
      ok: false,
      error: { code: 'SANDBOX_NOT_FOUND' },
    });
    expect(await send('n1', { type: 'exec', sandboxId: 'unknown-1', command: ['true'] })).toMatchObject({
      ok: false,
      error: { code: 'SANDBOX_NOT_FOUND' },
    });
    expect(binding.refused()).toMatchObject({ VALIDATION: 1, SANDBOX_NOT_FOUND: 2 });
    expect(await worker.report()).toEqual([]);
    expect(await send('n1', { type: 'terminate', sandboxId: 'unknown-2' })).toMatchObject({ ok: true });
  });
  it('nats-binding - an exec retried with the same request id over NATS runs once; a lost answer is OUTCOME_UNKNOWN, no taker UNAVAILABLE', async () => {
    // Through the dispatcher's own sink and the real binding: the same request id twice is one run of the
    // driver's exec with the same answer. A worker that takes the exec and never answers leaves the caller
    // not knowing whether it ran (OutcomeUnknownError); no worker at all means nothing ran (UnavailableError).
    const sink = natsCommandSink(client, 'c1', { timeoutMs: 300 });
    const created = await send('n1', {
      type: 'create',
      sandboxId: 'ex1',
      resources: { cpu: 100, memory: 64, disk: 10 },
    });
    expect(created, JSON.stringify(created)).toMatchObject({ ok: true });
    await until(
      () => worker.stateOf(sid('ex1')) === 'running',
      `ex1 running (is ${worker.stateOf(sid('ex1'))})`,
    );
    const ask = { command: ['echo', 'once'], timeoutMs: 1_000, outputBytesMax: 100, requestId: 'exec-1' };
    const before = sim.calls.exec ?? 0;
    const [a, b] = await Promise.all([sink.exec?.('n1', 'ex1', ask), sink.exec?.('n1', 'ex1', ask)]);
    const c = await sink.exec?.('n1', 'ex1', ask);
    expect((sim.calls.exec ?? 0) - before).toBe(1);
    expect(b).toEqual(a);
    expect(c).toEqual(a);
    await expect(sink.exec?.('n1', 'ex1', { ...ask, command: ['echo', 'other'] })).rejects.toMatchObject({
      code: 'VALIDATION',
    });
    await sink.exec?.('n1', 'ex1', { ...ask, requestId: 'exec-2' });
    expect((sim.calls.exec ?? 0) - before).toBe(2);

    const silent = client.subscribe(nodeCommandSubject('c1', 'silent'), { callback: () => undefined });
    await client.flush();
    await expect(sink.exec?.('silent', 'ex1', ask)).rejects.toMatchObject({
      code: 'OUTCOME_UNKNOWN',
      details: { nodeId: 'silent', requestId: 'exec-1' },
    });
    silent.unsubscribe();
    await expect(sink.exec?.('nobody', 'ex1', ask)).rejects.toMatchObject({ code: 'UNAVAILABLE' });
  });
});
