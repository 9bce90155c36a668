/**
 * A gateway Redis connection never lets a socket error escape as an uncaught exception. ioredis listens for
 * a socket's errors with `once`, so a socket that errors twice (a TLS socket that failed verification and
 * then reads the server's alert did, in a CI run) would throw the second error from `emit` with no listener
 * left — in a server, the end of the process. The faults are injected on the real sockets of connections to
 * a real redis-server, in each state ioredis can be in when they arrive: ready, and after the gateway has
 * given up on the connection (status `end`, when ioredis no longer reports errors at all).
 */
import type { EventEmitter } from 'node:events';
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { gatewayConfig } from '../../src/gateway/config.js';
import { connectRedis } from '../../src/gateway/redis.js';
import { type RunningServer, startRedis } from '../../src/testing/servers.js';
import { waitFor } from './helpers.js';

function socketOf(redis: Redis): EventEmitter {
  const stream = (redis as unknown as { stream?: EventEmitter }).stream;
  if (stream === undefined) throw new Error('the connection has no socket yet');
  return stream;
}

/** Emits `count` errors on `socket` as a failing TLS socket would; returns what escaped, if anything. */
function injectErrors(socket: EventEmitter, count: number): unknown {
  try {
    for (let n = 0; n < count; n++) {
      const err = Object.assign(new Error(`injected socket error ${n + 1}`), {
        code: 'ERR_SSL_TLSV1_ALERT_DECODE_ERROR',
      });
      socket.emit('error', err);
    }
    return undefined;
  } catch (escaped) {
    return escaped;
  }
}

/** Disconnects as the gateway does when it gives up, and waits until ioredis calls the connection ended. */
async function giveUp(client: Redis): Promise<void> {
  client.disconnect();
  await waitFor(
    'the connection to end',
    async () => client.status,
    (s) => s === 'end',
    10_000,
  );
}

describe('gateway redis sockets', () => {
  let redis: RunningServer;
  const open: Redis[] = [];
  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(async () => {
    for (const r of open) r.disconnect();
    await redis.stop();
  });

  const connect = async (name: string): Promise<Redis> => {
    const client = connectRedis(gatewayConfig({ url: redis.url }), name);
    open.push(client);
    await waitFor(
      'the connection to be ready',
      async () => client.status,
      (s) => s === 'ready',
      10_000,
    );
    return client;
  };

  it('gateway redis sockets - a ready connection whose socket errors twice throws nothing and reconnects', async () => {
    const client = await connect('twice-ready');
    const reported: string[] = [];
    client.on('error', (err: Error) => reported.push(err.message));
    const socket = socketOf(client);
    expect(injectErrors(socket, 2)).toBeUndefined();
    expect(reported).toEqual(['injected socket error 1']); // ioredis still hears the first, as before
    socket.emit('close', true); // what follows a socket error: ioredis reconnects on a new socket
    await waitFor(
      'a new socket',
      async () => socketOf(client) !== socket && client.status,
      (s) => s === 'ready',
    );
    expect(await client.ping()).toBe('PONG');
  });

  it('gateway redis sockets - errors on the socket of a connection the gateway gave up on throw nothing', async () => {
    const client = await connect('twice-ended');
    const socket = socketOf(client);
    await giveUp(client);
    expect(injectErrors(socket, 2)).toBeUndefined();
  });

  it('gateway redis sockets - every socket of a reconnecting connection is covered, not only the first', async () => {
    const client = await connect('reconnects');
    for (let round = 0; round < 3; round++) {
      const socket = socketOf(client);
      socket.emit('close', true);
      await waitFor(
        'a new socket',
        async () => socketOf(client) !== socket && client.status,
        (s) => s === 'ready',
      );
    }
    const last = socketOf(client);
    await giveUp(client);
    expect(injectErrors(last, 3)).toBeUndefined();
  });
});
