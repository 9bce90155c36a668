/**
 * Real servers for tests and benchmarks: `nats-server` and `redis-server` started as child processes on
 * free loopback ports, each in its own temporary directory, and stopped (directory removed) afterwards.
 *
 * A missing binary is an error, never a skip: the test command installs the Debian packages first
 * (scripts/ensure-services.sh), so a missing server means the machine is not set up and the run must fail.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createConnection, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { connect as tlsConnect } from 'node:tls';
import { findBinary } from '../binaries.js';
import { UnavailableError } from '../lib/errors.js';

/** The only interface servers bind to and clients dial. */
export const loopbackHost = '127.0.0.1';
/** How long a server may take to answer after it was spawned. */
export const serverStartTimeoutMs = 15_000;
/** How long a server may take to exit after SIGTERM before it is killed. */
export const serverStopTimeoutMs = 5_000;

const liveChildren = new Set<ChildProcess>();
process.once('exit', () => {
  // A test that crashed must not leave servers behind; 'exit' handlers can only do synchronous work.
  for (const child of liveChildren) child.kill('SIGKILL');
});

/**
 * A TCP port free on loopback right now, for a server a test or benchmark starts. Taken below the kernel's
 * ephemeral range, where it does not hand out the local ports of outgoing connections: a port picked by
 * binding to 0 comes from that range, and between the pick and the child's own bind any process's `connect`
 * may take it as its local port (CI once saw a replica of the load test exit with EADDRINUSE on its metrics
 * port). Each process walks the range from its own offset (by pid), binding to check; when the range is
 * unknown or exhausted, the kernel picks as before.
 */
export async function freePort(): Promise<number> {
  const range = belowEphemeral();
  if (range !== undefined) {
    const [low, high] = range;
    const size = high - low + 1;
    for (let attempt = 0; attempt < freePortAttemptsMax; attempt++) {
      const port = low + ((process.pid * 97 + nextPortStep++) % size);
      if (await bindable(port)) return port;
    }
  }
  return kernelPort();
}

/** Ports tried below the ephemeral range before the kernel is asked. */
export const freePortAttemptsMax = 64;
/** The lowest port `freePort` takes: above the well-known and most registered service ports. */
const freePortLow = 10_000;
let nextPortStep = 0;

/** [freePortLow, first ephemeral port - 1], or undefined when that is too small or the range unreadable. */
function belowEphemeral(): [number, number] | undefined {
  try {
    const first = Number(
      readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0],
    );
    return Number.isInteger(first) && first - 1 - freePortLow >= 1_000 ? [freePortLow, first - 1] : undefined;
  } catch {
    return undefined;
  }
}

function bindable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.unref();
    server.once('error', () => resolve(false));
    server.listen(port, loopbackHost, () => server.close(() => resolve(true)));
  });
}

/** Asks the kernel for a free TCP port on loopback (from the ephemeral range). */
function kernelPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, loopbackHost, () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => (port > 0 ? resolve(port) : reject(new Error('no port assigned'))));
    });
  });
}

export { findBinary };

/** Reads the first bytes a TCP server sends (or answers to `probe`) on loopback; rejects on error. */
function tcpProbe(port: number, probe: string | null, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = createConnection({ host: loopbackHost, port });
    const timer = setTimeout(() => socket.destroy(new Error('probe timed out')), timeoutMs);
    socket.once('connect', () => {
      if (probe !== null) socket.write(probe);
    });
    socket.once('data', (data) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(data.toString('utf8'));
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

/** As tcpProbe, over TLS without verifying the server (a readiness probe, not a client). */
function tlsProbe(port: number, probe: string, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host: loopbackHost, port, rejectUnauthorized: false });
    const timer = setTimeout(() => socket.destroy(new Error('probe timed out')), timeoutMs);
    socket.once('secureConnect', () => socket.write(probe));
    socket.once('data', (data) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(data.toString('utf8'));
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

async function waitUntil(what: string, child: ChildProcess, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + serverStartTimeoutMs;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new UnavailableError(
        `${what} exited during start (code ${child.exitCode}, signal ${child.signalCode})`,
      );
    }
    if (await check().catch(() => false)) return;
    if (Date.now() > deadline)
      throw new UnavailableError(`${what} did not answer within ${serverStartTimeoutMs} ms`);
    await sleep(25);
  }
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) {
    liveChildren.delete(child);
    return;
  }
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), serverStopTimeoutMs);
  await exited;
  clearTimeout(timer);
  liveChildren.delete(child);
}

function spawnServer(bin: string, args: readonly string[], logTail: string[]): ChildProcess {
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  liveChildren.add(child);
  const keep = (chunk: Buffer): void => {
    logTail.push(chunk.toString('utf8'));
    if (logTail.length > 50) logTail.shift();
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  return child;
}

interface ServerSpec {
  readonly name: string;
  readonly url: string;
  readonly port: number;
  readonly dir: string;
  readonly bin: string;
  readonly args: readonly string[];
  /** Resolves true once the server answers clients. */
  readonly ready: () => Promise<boolean>;
}

/** Spawns a server, waits until it answers, and wraps it with stop, kill and restart. */
async function runServer(spec: ServerSpec): Promise<RunningServer> {
  const logTail: string[] = [];
  let child: ChildProcess;
  const launch = async (): Promise<void> => {
    child = spawnServer(spec.bin, spec.args, logTail);
    await waitUntil(`${spec.name} on port ${spec.port}`, child, spec.ready);
  };
  await launch();
  return {
    url: spec.url,
    port: spec.port,
    dir: spec.dir,
    logTail,
    async stop() {
      await stopChild(child);
      await rm(spec.dir, { recursive: true, force: true });
    },
    async kill() {
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.kill('SIGKILL');
      await exited;
      liveChildren.delete(child);
    },
    restart: launch,
  };
}

export interface NatsServerOptions {
  /** Extra configuration appended to the generated file (accounts, authorization, max_payload …). */
  readonly extraConfig?: string;
  /** Reuse this client port (used to restart a server in place). */
  readonly port?: number;
  /** Cluster block settings, when this server is one of a routed cluster. */
  readonly cluster?: { readonly name: string; readonly port: number; readonly routePorts: readonly number[] };
}

export interface RunningServer {
  /** Client URL, e.g. `nats://127.0.0.1:4222` or `redis://127.0.0.1:6379`. */
  readonly url: string;
  readonly port: number;
  readonly dir: string;
  /** The last lines the server printed, for failure messages. */
  readonly logTail: readonly string[];
  /** Stops the server (SIGTERM, then SIGKILL) and removes its directory. */
  stop(): Promise<void>;
  /** Kills the server with SIGKILL and leaves its directory, to simulate a crash. */
  kill(): Promise<void>;
  /** Starts the server again on the same port and directory after `kill` or `stop({keepDir})`. */
  restart(): Promise<void>;
}

function natsConfig(port: number, dir: string, options: NatsServerOptions): string {
  const lines = [`listen: "${loopbackHost}:${port}"`, `pid_file: "${join(dir, 'nats.pid')}"`];
  if (options.cluster !== undefined) {
    const routes = options.cluster.routePorts.map((p) => `"nats-route://${loopbackHost}:${p}"`).join(', ');
    lines.push(
      'cluster {',
      `  name: "${options.cluster.name}"`,
      `  listen: "${loopbackHost}:${options.cluster.port}"`,
      `  routes: [${routes}]`,
      '}',
    );
  }
  if (options.extraConfig !== undefined) lines.push(options.extraConfig);
  return `${lines.join('\n')}\n`;
}

/** Starts a real nats-server on a free loopback port and waits until it greets clients. */
export async function startNats(options: NatsServerOptions = {}): Promise<RunningServer> {
  const bin = findBinary('nats-server', 'nats-server');
  const port = options.port ?? (await freePort());
  const dir = await mkdtemp(join(tmpdir(), 'trellis-nats-'));
  const configPath = join(dir, 'nats.conf');
  await writeFile(configPath, natsConfig(port, dir, options));
  return runServer({
    name: 'nats-server',
    url: `nats://${loopbackHost}:${port}`,
    port,
    dir,
    bin,
    args: ['-c', configPath],
    ready: async () => (await tcpProbe(port, null, 1_000)).startsWith('INFO '),
  });
}

export interface NatsCluster {
  readonly servers: readonly RunningServer[];
  /** Client URLs of every member, for a client that should fail over between them. */
  readonly urls: readonly string[];
  stop(): Promise<void>;
}

/**
 * Starts `size` nats-servers routed into one cluster on loopback, and waits until every server sees a route
 * to every other (a message published on one reaches a subscriber on any other).
 */
export async function startNatsCluster(size = 3, name = 'trellis-test'): Promise<NatsCluster> {
  const clusterPorts: number[] = [];
  for (let i = 0; i < size; i++) clusterPorts.push(await freePort());
  const servers: RunningServer[] = [];
  try {
    for (const clusterPort of clusterPorts) {
      const routePorts = clusterPorts.filter((p) => p !== clusterPort);
      servers.push(await startNats({ cluster: { name, port: clusterPort, routePorts } }));
    }
    await waitForRoutes(servers, size - 1);
  } catch (err) {
    await Promise.all(servers.map((s) => s.stop()));
    throw err;
  }
  return {
    servers,
    urls: servers.map((s) => s.url),
    async stop() {
      await Promise.all(servers.map((s) => s.stop()));
    },
  };
}

/** Waits until each server's INFO lists `routesExpected` peers in its connect_urls. */
async function waitForRoutes(servers: readonly RunningServer[], routesExpected: number): Promise<void> {
  const deadline = Date.now() + serverStartTimeoutMs;
  for (const server of servers) {
    for (;;) {
      const info = await tcpProbe(server.port, null, 1_000).catch(() => '');
      const json = info.startsWith('INFO ') ? (JSON.parse(info.slice(5)) as { connect_urls?: string[] }) : {};
      // connect_urls lists this server's and its routed peers' client addresses once routes are up.
      if ((json.connect_urls?.length ?? 0) >= routesExpected + 1) break;
      if (Date.now() > deadline)
        throw new UnavailableError(`nats cluster routes not up on port ${server.port}`);
      await sleep(50);
    }
  }
}

export interface RedisServerOptions {
  /**
   * Persist every write to an append-only file, fsynced before Redis answers (`appendonly yes`,
   * `appendfsync always`), so a server killed and restarted (`kill()`, `restart()`: same port, same
   * directory) comes back with every write it acknowledged. Default false: no persistence at all.
   */
  readonly appendOnly?: boolean;
  /** ACL users to create besides `default`, as `user <name> on >password ~keys &* +@all` lines. */
  readonly aclLines?: readonly string[];
  /**
   * Serve TLS only (`rediss://`), with this certificate and key (PEM files); clients are not asked for a
   * certificate. The URL is then `rediss://127.0.0.1:<port>`.
   */
  readonly tls?: { readonly certFile: string; readonly keyFile: string };
}

/** Starts a real redis-server on a free loopback port and waits until it answers PING. */
export async function startRedis(options: RedisServerOptions = {}): Promise<RunningServer> {
  const bin = findBinary('redis-server', 'redis-server');
  const port = await freePort();
  const dir = await mkdtemp(join(tmpdir(), 'trellis-redis-'));
  const tls = options.tls;
  const args =
    tls === undefined
      ? ['--port', String(port), '--bind', loopbackHost, '--dir', dir, '--save', '']
      : [
          '--port',
          '0',
          '--tls-port',
          String(port),
          '--tls-cert-file',
          tls.certFile,
          '--tls-key-file',
          tls.keyFile,
        ].concat(['--tls-auth-clients', 'no', '--bind', loopbackHost, '--dir', dir, '--save', '']);
  if (options.appendOnly === true) args.push('--appendonly', 'yes', '--appendfsync', 'always');
  else args.push('--appendonly', 'no');
  if (options.aclLines !== undefined) {
    const aclFile = join(dir, 'users.acl');
    await writeFile(aclFile, `${options.aclLines.join('\n')}\n`);
    args.push('--aclfile', aclFile);
  }
  // With ACL users the default user may be disabled: the readiness probe then gets NOAUTH, which still
  // proves the server answers.
  const answered = (reply: string): boolean => /^(\+PONG|-NOAUTH)/.test(reply);
  return runServer({
    name: 'redis-server',
    url: `${tls === undefined ? 'redis' : 'rediss'}://${loopbackHost}:${port}`,
    port,
    dir,
    bin,
    args,
    ready: async () =>
      answered(
        await (tls === undefined ? tcpProbe(port, 'PING\r\n', 1_000) : tlsProbe(port, 'PING\r\n', 1_000)),
      ),
  });
}
