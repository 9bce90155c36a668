/**
 * The Prometheus adapter of the metrics interface (src/lib/metrics.ts), on prom-client: the library every Node
 * service exporting to Prometheus uses, with the text exposition format and process metrics built in. Each
 * `PrometheusMetrics` owns its own registry, so several replicas in one process (the embedded group, tests)
 * never collide on the global one.
 */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type {
  Counter as CounterHandle,
  Gauge as GaugeHandle,
  HistogramDef,
  Histogram as HistogramHandle,
  LabelValues,
  MetricDef,
  MetricsSink,
} from '../lib/metrics.js';

export interface PrometheusMetricsOptions {
  /** Also export Node's process metrics (CPU, memory, event-loop lag, GC). Default true. */
  readonly processMetrics?: boolean;
  /** Labels added to every series of this registry, e.g. `{ process: 'worker' }`. */
  readonly defaultLabels?: Readonly<Record<string, string>>;
}

export class PrometheusMetrics implements MetricsSink {
  readonly registry = new Registry();
  readonly #made = new Map<string, CounterHandle | GaugeHandle | HistogramHandle>();

  constructor(options: PrometheusMetricsOptions = {}) {
    if (options.defaultLabels !== undefined) this.registry.setDefaultLabels({ ...options.defaultLabels });
    if (options.processMetrics ?? true)
      collectDefaultMetrics({ register: this.registry, prefix: 'trellis_' });
  }

  #once<T extends CounterHandle | GaugeHandle | HistogramHandle>(name: string, make: () => T): T {
    const have = this.#made.get(name);
    if (have !== undefined) return have as T;
    const made = make();
    this.#made.set(name, made);
    return made;
  }

  counter(def: MetricDef): CounterHandle {
    return this.#once(def.name, () => {
      const c = new Counter({
        name: def.name,
        help: def.help,
        labelNames: [...def.labels],
        registers: [this.registry],
      });
      return {
        inc: (labels?: LabelValues, value = 1) => (labels ? c.inc({ ...labels }, value) : c.inc(value)),
      };
    });
  }

  gauge(def: MetricDef): GaugeHandle {
    return this.#once(def.name, () => {
      const g = new Gauge({
        name: def.name,
        help: def.help,
        labelNames: [...def.labels],
        registers: [this.registry],
      });
      return {
        set: (value: number, labels?: LabelValues) => (labels ? g.set({ ...labels }, value) : g.set(value)),
        inc: (labels?: LabelValues, value = 1) => (labels ? g.inc({ ...labels }, value) : g.inc(value)),
      };
    });
  }

  histogram(def: HistogramDef): HistogramHandle {
    return this.#once(def.name, () => {
      const h = new Histogram({
        name: def.name,
        help: def.help,
        labelNames: [...def.labels],
        buckets: [...def.buckets],
        registers: [this.registry],
      });
      return {
        observe: (value: number, labels?: LabelValues) =>
          labels ? h.observe({ ...labels }, value) : h.observe(value),
      };
    });
  }

  /** The exposition text Prometheus scrapes. */
  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
