/**
 * The Redis streams gateway: a second adapter of the scheduler's API, for platforms that already put work
 * on Redis. Each replica runs one; only the leader's is active:
 * - ingress (ingress.ts): requests from the request stream's consumer group, applied through
 *   `SchedulerApi`, acknowledged once committed, outcomes on reply streams, malformed entries to the
 *   dead-letter stream;
 * - egress (egress.ts): committed events appended to the events stream by log position.
 *
 * Every replica follows the committed events from its start (the ring egress publishes from), so the one
 * that becomes leader can carry on where the stream ends. When this replica starts leading, a reading loop
 * and a publisher start; when it stops (or the replica closes), they stop, and entries it had not finished
 * stay pending for the next leader to claim (XAUTOCLAIM after `claimIdleMs`).
 */
import type { Redis } from 'ioredis';
import type { SchedulerApi } from '../../scheduler/api.js';
import type { SchedulerEvent } from '../../scheduler/types.js';
import { EventRing, eventsRetainedDefault } from '../api/event-ring.js';
import { ConfigError, UnavailableError } from '../lib/errors.js';
import { type MetricsSink, noopMetrics, type TrellisMetrics, trellisMetrics } from '../lib/metrics.js';
import { type Logger, silentLogger } from '../log.js';
import { type GatewayConfig, redactUrl } from './config.js';
import { EventPublisher } from './egress.js';
import { Ingress } from './ingress.js';
import { connectRedis } from './redis.js';

/** How long stopping waits for requests in flight before leaving them pending. */
export const stopWaitMsDefault = 5_000;

/** What the gateway needs to know of its replica: its id, and whether (and when) it leads. */
export interface GatewayReplica {
  readonly id: string;
  leading(): boolean;
  /** Registers a listener for changes of leadership; returns its removal. */
  onLeaderChange(listener: () => void): () => void;
}

export interface GatewayOptions {
  readonly config: GatewayConfig;
  /** The scheduler the requests are applied to, and whose `watch()` gives the committed events. */
  readonly api: SchedulerApi;
  readonly replica: GatewayReplica;
  readonly metrics?: MetricsSink;
  readonly log?: Logger;
  /** Events held for a new leader to publish. Default `eventsRetainedDefault`. */
  readonly eventsRetained?: number;
  /** How long `start` waits for Redis to accept the login. Default `startTimeoutMsDefault`. */
  readonly startTimeoutMs?: number;
}

/** How long starting waits for Redis (it may start alongside the replicas), as the server does for NATS. */
export const startTimeoutMsDefault = 60_000;
/** Redis's answers to a refused login or a user without the commands the gateway needs. */
const refusedLogin = /WRONGPASS|NOAUTH|NOPERM|invalid username-password/i;
/** Node's TLS errors for a certificate that does not verify: retrying will not help. */
const refusedCertificate = /certificate|self.signed|CERT_|altnames/i;

/**
 * Resolves once `redis` is connected and logged in; ConfigError at once when Redis refuses the login,
 * UnavailableError (with the last connection error) when it has not answered within `timeoutMs`.
 */
function whenReady(redis: Redis, timeoutMs: number): Promise<void> {
  if (redis.status === 'ready') return Promise.resolve();
  return new Promise<void>((resolve, reject) => {
    let last = '';
    const done = (err?: Error): void => {
      clearTimeout(timer);
      redis.off('ready', onReady);
      redis.off('error', onError);
      if (err === undefined) resolve();
      else reject(err);
    };
    const onReady = (): void => done();
    const onError = (err: Error): void => {
      last = err.message;
      if (refusedLogin.test(err.message)) done(new ConfigError(`redis refused the login: ${err.message}`));
      else if (refusedCertificate.test(err.message))
        done(new ConfigError(`redis TLS: the server's certificate is not trusted: ${err.message}`));
    };
    const timer = setTimeout(
      () =>
        done(
          new UnavailableError(
            `redis did not answer within ${timeoutMs} ms${last === '' ? '' : `: ${last}`}`,
          ),
        ),
      timeoutMs,
    );
    redis.on('ready', onReady);
    redis.on('error', onError);
  });
}

export class RedisGateway {
  readonly #o: GatewayOptions;
  readonly #metrics: TrellisMetrics;
  readonly #log: Logger;
  readonly #redis: Redis;
  readonly #reader: Redis;
  readonly #ring: EventRing;
  readonly #watch: AsyncIterableIterator<SchedulerEvent>;
  readonly #follow: Promise<void>;
  readonly #offLeader: () => void;
  #ingress: Ingress | undefined;
  #publisher: EventPublisher | undefined;
  #closed = false;

  private constructor(o: GatewayOptions, applied: number) {
    this.#o = o;
    this.#metrics = trellisMetrics(o.metrics ?? noopMetrics);
    this.#log = (o.log ?? silentLogger()).child({ gateway: 'redis' });
    this.#redis = connectRedis(o.config, `trellis-${o.replica.id}`);
    this.#reader = connectRedis(o.config, `trellis-${o.replica.id}-reader`);
    for (const r of [this.#redis, this.#reader]) {
      // ioredis reconnects by itself; an error event without a listener would only print, but say it once.
      r.on('error', (err: Error) => this.#log.debug({ err: err.message }, 'redis connection error'));
    }
    // watch() and the applied index are read in the same turn: the ring's floor matches its first event.
    this.#watch = o.api.watch();
    this.#ring = new EventRing(applied, o.eventsRetained ?? eventsRetainedDefault);
    this.#follow = this.#followEvents();
    this.#offLeader = o.replica.onLeaderChange(() => this.#sync());
    this.#log.info({ url: redactUrl(o.config.url), requests: o.config.requests }, 'redis gateway started');
    this.#sync();
  }

  /** Starts the gateway of one replica; it becomes active whenever the replica leads. */
  static async start(options: GatewayOptions): Promise<RedisGateway> {
    const stats = await options.api.stats();
    const gateway = new RedisGateway(options, stats.applied);
    const timeoutMs = options.startTimeoutMs ?? startTimeoutMsDefault;
    try {
      await Promise.all([whenReady(gateway.#redis, timeoutMs), whenReady(gateway.#reader, timeoutMs)]);
    } catch (err) {
      await gateway.kill();
      throw err;
    }
    return gateway;
  }

  /** True while this replica's gateway reads requests and publishes events. */
  get active(): boolean {
    return this.#ingress !== undefined;
  }

  /** Requests read and not yet answered (0 when not leading). */
  get inFlight(): number {
    return this.#ingress?.inFlight ?? 0;
  }

  async #followEvents(): Promise<void> {
    try {
      for await (const event of this.#watch) {
        this.#ring.push([event]);
        this.#publisher?.poke();
      }
    } catch (err) {
      // The scheduler ended the watch (this reader fell behind): what follows is not in the ring, and a
      // leader publishing from here would leave a gap, which the publisher counts when it meets it.
      this.#log.error({ err: String(err) }, 'redis gateway: stopped following committed events');
    }
  }

  /** Starts or stops the active part to match this replica's leadership. */
  #sync(): void {
    const lead = !this.#closed && this.#o.replica.leading();
    if (lead && this.#ingress === undefined) {
      this.#log.info('redis gateway: leading; taking requests and publishing events');
      const common = { config: this.#o.config, metrics: this.#metrics, log: this.#log };
      this.#ingress = new Ingress({
        ...common,
        api: this.#o.api,
        consumer: this.#o.replica.id,
        redis: this.#redis,
        reader: this.#reader,
      });
      this.#publisher = new EventPublisher({ ...common, redis: this.#redis, ring: this.#ring });
    } else if (!lead && this.#ingress !== undefined) {
      this.#log.info('redis gateway: no longer leading; stopped taking requests');
      void this.#stopActive(stopWaitMsDefault);
    }
  }

  async #stopActive(waitMs: number): Promise<void> {
    const ingress = this.#ingress;
    const publisher = this.#publisher;
    this.#ingress = undefined;
    this.#publisher = undefined;
    await Promise.all([ingress?.stop(waitMs), publisher?.stop()]);
  }

  /** Stops reading and publishing, waits up to `waitMs` for requests in flight, and disconnects. */
  async close(waitMs = stopWaitMsDefault): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#offLeader();
    await this.#stopActive(waitMs);
    await this.#watch.return?.();
    await this.#follow;
    this.#reader.disconnect();
    await this.#redis.quit().catch(() => this.#redis.disconnect());
  }

  /**
   * Drops everything at once, as a crashed process would: connections cut, nothing in flight finished
   * (its entries stay pending for the next leader). For tests of failover.
   */
  async kill(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#offLeader();
    this.#reader.disconnect();
    this.#redis.disconnect();
    await this.#stopActive(0);
    await this.#watch.return?.();
  }
}

/** Starts the Redis gateway of one replica (see RedisGateway). */
export function startRedisGateway(options: GatewayOptions): Promise<RedisGateway> {
  return RedisGateway.start(options);
}
