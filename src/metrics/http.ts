/**
 * The HTTP endpoint beside every long-running process (`trellis server`, `trellis worker`): `/metrics` in the
 * Prometheus text format, `/healthz` (the process answers: liveness) and `/readyz` (the process can serve:
 * readiness, with the reason when it cannot). It binds to 127.0.0.1 unless told otherwise, answers only GET and
 * HEAD, and never lets a failing collector take the process down.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ConfigError } from '../lib/errors.js';
import type { PrometheusMetrics } from './prometheus.js';

/** What `/readyz` reports: ready, or not with a reason for people. */
export type Readiness = { readonly ready: true } | { readonly ready: false; readonly reason: string };

export interface MetricsServerOptions {
  readonly metrics: PrometheusMetrics;
  /** TCP port; 0 picks a free one (see `port` on the result). */
  readonly port: number;
  /** Address to bind. Default 127.0.0.1. */
  readonly host?: string;
  /** Readiness for `/readyz`. Default: always ready. */
  readonly readiness?: () => Readiness;
}

export interface MetricsServer {
  readonly port: number;
  close(): Promise<void>;
}

function send(res: ServerResponse, status: number, type: string, body: string): void {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
  res.end(res.req.method === 'HEAD' ? undefined : body);
}

async function handle(o: MetricsServerOptions, req: IncomingMessage, res: ServerResponse): Promise<void> {
  if (req.method !== 'GET' && req.method !== 'HEAD')
    return send(res, 405, 'text/plain', 'method not allowed\n');
  const path = (req.url ?? '/').split('?')[0];
  if (path === '/metrics') return send(res, 200, o.metrics.contentType, await o.metrics.text());
  if (path === '/healthz') return send(res, 200, 'text/plain', 'ok\n');
  if (path === '/readyz') {
    const r = o.readiness?.() ?? { ready: true };
    return r.ready
      ? send(res, 200, 'text/plain', 'ready\n')
      : send(res, 503, 'text/plain', `not ready: ${r.reason}\n`);
  }
  return send(res, 404, 'text/plain', 'not found: try /metrics, /healthz or /readyz\n');
}

/** Starts the endpoint; rejects with ConfigError when the port cannot be bound. */
export function startMetricsServer(o: MetricsServerOptions): Promise<MetricsServer> {
  const server: Server = createServer((req, res) => {
    handle(o, req, res).catch((err: unknown) => {
      if (!res.headersSent) send(res, 500, 'text/plain', `metrics failed: ${(err as Error).message}\n`);
      else res.destroy();
    });
  });
  return new Promise((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(
        new ConfigError(`cannot serve metrics on port ${o.port}: ${err.code ?? err.message}`, { cause: err }),
      ),
    );
    server.listen(o.port, o.host ?? '127.0.0.1', () => {
      const port = (server.address() as AddressInfo).port;
      resolve({
        port,
        close: () =>
          new Promise<void>((done) => {
            server.closeAllConnections();
            server.close(() => done());
          }),
      });
    });
  });
}
