/**
 * The one metrics interface inside Trellis: counters, gauges and histograms with labels. Code that measures
 * something takes a `MetricsSink` and asks `trellisMetrics(sink)` for its handles; it never keeps counters of its
 * own and never imports a metrics library. Prometheus (`src/metrics/prometheus.ts`, prom-client) is one adapter;
 * `MemoryMetrics` below is another, for embedders that read values directly and for tests; `noopMetrics` is the
 * default when nobody asked.
 *
 * Every metric Trellis exports is declared once, in `metricDefs`, with its name, help text, label names and (for
 * histograms) buckets, so the names a dashboard relies on cannot drift between the server, the worker and the
 * embedded scheduler. Units follow Prometheus practice: seconds and bytes, `_total` on counters.
 */
import { assert } from './assert.js';

export type LabelValues = Readonly<Record<string, string>>;

export interface Counter {
  inc(labels?: LabelValues, value?: number): void;
}

export interface Gauge {
  set(value: number, labels?: LabelValues): void;
  inc(labels?: LabelValues, value?: number): void;
}

export interface Histogram {
  observe(value: number, labels?: LabelValues): void;
}

export interface MetricDef {
  readonly name: string;
  readonly help: string;
  readonly labels: readonly string[];
}

export interface HistogramDef extends MetricDef {
  /** Upper bounds, ascending. */
  readonly buckets: readonly number[];
}

/** What a metrics backend provides. Asking twice for one name returns the same metric. */
export interface MetricsSink {
  counter(def: MetricDef): Counter;
  gauge(def: MetricDef): Gauge;
  histogram(def: HistogramDef): Histogram;
}

/** Latency buckets in seconds, from 50 µs (a placement batch) to 10 s (a cold VM boot). */
const latencyBuckets = [
  0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
] as const;
const sizeBuckets = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000] as const;
/** Entry sizes in bytes, from one small command to a full batch near the 512 KiB message bound. */
const byteBuckets = [64, 256, 1_024, 4_096, 16_384, 65_536, 262_144, 1_048_576] as const;

/**
 * Every metric Trellis exports. Label values are bounded sets (reasons and error codes are enumerations, node
 * ids are bounded by the cluster, see `nodeSeriesMax`), so no label can grow without limit from client input.
 */
export const metricDefs = {
  placementBatchSeconds: {
    name: 'trellis_placement_batch_duration_seconds',
    help: 'Time to plan one placement batch against a snapshot (planBatch), in seconds.',
    labels: [],
    buckets: latencyBuckets,
  },
  placementBatchSize: {
    name: 'trellis_placement_batch_size',
    help: 'Requests in one placement batch.',
    labels: [],
    buckets: sizeBuckets,
  },
  placements: {
    name: 'trellis_placements_total',
    help: 'Placement outcomes by result (placed, pending, rejected) and reason code (none when placed).',
    labels: ['result', 'reason'],
  },
  pendingDepth: {
    name: 'trellis_pending_queue_depth',
    help: 'Sandboxes waiting in the pending queue for room to free.',
    labels: [],
  },
  raftTerm: {
    name: 'trellis_raft_term',
    help: "The replica's current Raft term.",
    labels: ['replica'],
  },
  raftIsLeader: {
    name: 'trellis_raft_is_leader',
    help: '1 while the replica leads, else 0.',
    labels: ['replica'],
  },
  raftCommitIndex: {
    name: 'trellis_raft_commit_index',
    help: "The replica's commit index.",
    labels: ['replica'],
  },
  raftAppliedLag: {
    name: 'trellis_raft_applied_index_lag',
    help: 'Committed entries the replica has not applied yet (commit index minus applied index).',
    labels: ['replica'],
  },
  raftEntryBytes: {
    name: 'trellis_raft_entry_bytes',
    help: 'Size of one entry the leader proposed (the command, before framing), in bytes.',
    labels: ['replica'],
    buckets: byteBuckets,
  },
  raftCommitSeconds: {
    name: 'trellis_raft_commit_latency_seconds',
    help: 'From a proposal on the leader to its entry being applied there, in seconds.',
    labels: ['replica'],
    buckets: latencyBuckets,
  },
  raftAppendSeconds: {
    name: 'trellis_raft_append_latency_seconds',
    help: 'Time to persist one Ready (entries and hard state) in storage, fsync included, in seconds.',
    labels: ['replica'],
    buckets: latencyBuckets,
  },
  raftFsyncSeconds: {
    name: 'trellis_raft_fsync_latency_seconds',
    help: 'Time of one fsync of the write-ahead log, in seconds.',
    labels: ['replica'],
    buckets: latencyBuckets,
  },
  snapshotBytes: {
    name: 'trellis_snapshot_bytes',
    help: 'Size of the last snapshot the replica took, in bytes.',
    labels: ['replica'],
  },
  snapshotSeconds: {
    name: 'trellis_snapshot_duration_seconds',
    help: 'Time to take (encode and persist) one snapshot, in seconds.',
    labels: ['replica'],
    buckets: latencyBuckets,
  },
  nodeUtilization: {
    name: 'trellis_node_utilization_ratio',
    help: "Allocated share of one node's capacity by resource (cpu, memory, disk, gpu), 0..1.",
    labels: ['node', 'resource'],
  },
  clusterUtilization: {
    name: 'trellis_cluster_utilization_ratio',
    help: 'Allocated share of the ready cluster capacity by resource (cpu, memory, disk, gpu), 0..1.',
    labels: ['resource'],
  },
  dispatchRetries: {
    name: 'trellis_dispatch_retries_total',
    help: 'Commands resent to a node worker because no acknowledgement came in time.',
    labels: [],
  },
  dispatchCommands: {
    name: 'trellis_dispatch_commands_total',
    help: 'Commands the dispatcher sent to node workers, by kind (create, terminate, suspend, resume) and outcome (ok or the error code).',
    labels: ['kind', 'outcome'],
  },
  driverSeconds: {
    name: 'trellis_driver_duration_seconds',
    help: 'Duration of one driver operation (createDisk, boot, exec, suspend, resume, stop, destroy) by outcome.',
    labels: ['driver', 'op', 'outcome'],
    buckets: latencyBuckets,
  },
  invalidMessages: {
    name: 'trellis_invalid_messages_total',
    help: 'Messages dropped at a boundary because they did not decode or validate, by where and why.',
    labels: ['source', 'reason'],
  },
  gatewayEntriesRead: {
    name: 'trellis_gateway_entries_read_total',
    help: 'Request stream entries the Redis gateway read, by source (new: XREADGROUP, claimed: XAUTOCLAIM).',
    labels: ['source'],
  },
  gatewayEntriesAcked: {
    name: 'trellis_gateway_entries_acked_total',
    help: 'Request stream entries the Redis gateway acknowledged, by outcome (placed, done, rejected, dead-letter).',
    labels: ['outcome'],
  },
  gatewayDeadLettered: {
    name: 'trellis_gateway_dead_lettered_total',
    help: 'Malformed request entries the Redis gateway moved to the dead-letter stream, by reason.',
    labels: ['reason'],
  },
  gatewayOutcomesUnknown: {
    name: 'trellis_gateway_outcomes_unknown_total',
    help: 'Requests whose outcome was unknown (leader lost, closed, overloaded): left pending to be retried.',
    labels: [],
  },
  gatewayRequestLag: {
    name: 'trellis_gateway_request_lag_entries',
    help: "Request stream entries not yet read by the gateway's consumer group (XINFO GROUPS lag).",
    labels: [],
  },
  gatewayRequestsPending: {
    name: 'trellis_gateway_requests_pending_entries',
    help: 'Request stream entries read but not yet acknowledged (the consumer group pending list).',
    labels: [],
  },
  gatewayEventsWritten: {
    name: 'trellis_gateway_events_written_total',
    help: 'Committed events the Redis gateway appended to the events stream.',
    labels: [],
  },
  gatewayEventsLag: {
    name: 'trellis_gateway_events_lag_entries',
    help: 'Raft entries applied on the leader whose events are not yet in the events stream.',
    labels: [],
  },
  gatewayEventsGaps: {
    name: 'trellis_gateway_events_gaps_total',
    help: 'Times the events publisher could not resume where the stream ends (the events were no longer held).',
    labels: [],
  },
} as const satisfies Record<string, MetricDef | HistogramDef>;

/** Nodes beyond which per-node utilization series are not exported (the cluster gauges still are). */
export const nodeSeriesMax = 5_000;

type Defs = typeof metricDefs;
type HandleOf<D> = D extends HistogramDef
  ? Histogram
  : D extends { name: `${string}_total` }
    ? Counter
    : Gauge;

/** Typed handles on every Trellis metric, created on `sink`. */
export type TrellisMetrics = { readonly [K in keyof Defs]: HandleOf<Defs[K]> };

function isHistogram(def: MetricDef | HistogramDef): def is HistogramDef {
  return 'buckets' in def;
}

export function trellisMetrics(sink: MetricsSink): TrellisMetrics {
  const out: Record<string, Counter | Gauge | Histogram> = {};
  for (const [key, def] of Object.entries(metricDefs) as [string, MetricDef | HistogramDef][]) {
    if (isHistogram(def)) out[key] = sink.histogram(def);
    else if (def.name.endsWith('_total')) out[key] = sink.counter(def);
    else out[key] = sink.gauge(def);
  }
  return out as unknown as TrellisMetrics;
}

const noop = { inc() {}, set() {}, observe() {} };

/** A sink that records nothing: the default where no metrics were asked for. */
export const noopMetrics: MetricsSink = {
  counter: () => noop,
  gauge: () => noop,
  histogram: () => noop,
};

function seriesKey(def: MetricDef, labels: LabelValues | undefined): string {
  const given = labels ?? {};
  for (const k of Object.keys(given)) {
    assert(def.labels.includes(k), 'label declared on the metric', { metric: def.name, label: k });
  }
  return def.labels.map((k) => `${k}=${given[k] ?? ''}`).join(',');
}

interface HistogramState {
  count: number;
  sum: number;
  /** Per bucket of the definition, observations at or below its bound (not cumulative). */
  readonly counts: number[];
}

/**
 * A sink that keeps values in memory: the `metrics` hook for an embedder that reads numbers directly, and what
 * tests check. Series are keyed by metric name and label values.
 */
export class MemoryMetrics implements MetricsSink {
  readonly #values = new Map<string, Map<string, number>>();
  readonly #histograms = new Map<string, { def: HistogramDef; series: Map<string, HistogramState> }>();

  #series(def: MetricDef): Map<string, number> {
    let s = this.#values.get(def.name);
    if (s === undefined) {
      s = new Map();
      this.#values.set(def.name, s);
    }
    return s;
  }

  counter(def: MetricDef): Counter {
    const s = this.#series(def);
    return {
      inc: (labels, value = 1) => {
        assert(value >= 0, 'a counter only goes up', { metric: def.name, value });
        const k = seriesKey(def, labels);
        s.set(k, (s.get(k) ?? 0) + value);
      },
    };
  }

  gauge(def: MetricDef): Gauge {
    const s = this.#series(def);
    return {
      set: (value, labels) => void s.set(seriesKey(def, labels), value),
      inc: (labels, value = 1) => {
        const k = seriesKey(def, labels);
        s.set(k, (s.get(k) ?? 0) + value);
      },
    };
  }

  histogram(def: HistogramDef): Histogram {
    let h = this.#histograms.get(def.name);
    if (h === undefined) {
      h = { def, series: new Map() };
      this.#histograms.set(def.name, h);
    }
    const series = h.series;
    return {
      observe: (value, labels) => {
        const k = seriesKey(def, labels);
        let st = series.get(k);
        if (st === undefined) {
          st = { count: 0, sum: 0, counts: def.buckets.map(() => 0) };
          series.set(k, st);
        }
        st.count += 1;
        st.sum += value;
        const i = def.buckets.findIndex((b) => value <= b);
        if (i >= 0) st.counts[i] = (st.counts[i] ?? 0) + 1;
      },
    };
  }

  /** The value of a counter or gauge series; undefined when it was never written. */
  value(name: string, labels: LabelValues = {}): number | undefined {
    const s = this.#values.get(name);
    if (s === undefined) return undefined;
    const def = Object.values(metricDefs).find((d) => d.name === name);
    const key = def === undefined ? '' : seriesKey(def, labels);
    return s.get(key);
  }

  /** Count and sum of a histogram series; undefined when nothing was observed. */
  observations(name: string, labels: LabelValues = {}): { count: number; sum: number } | undefined {
    const h = this.#histograms.get(name);
    const st = h?.series.get(seriesKey(h.def, labels));
    return st === undefined ? undefined : { count: st.count, sum: st.sum };
  }

  /**
   * An upper bound on the q-quantile (0..1) of a histogram series: the bound of the first bucket that holds
   * it, or Infinity when it lies beyond the last bucket. Undefined when nothing was observed.
   */
  quantile(name: string, q: number, labels: LabelValues = {}): number | undefined {
    assert(q >= 0 && q <= 1, 'a quantile lies in 0..1', { q });
    const h = this.#histograms.get(name);
    const st = h?.series.get(seriesKey(h.def, labels));
    if (h === undefined || st === undefined || st.count === 0) return undefined;
    const rank = Math.ceil(q * st.count);
    let seen = 0;
    for (let i = 0; i < st.counts.length; i++) {
      seen += st.counts[i] ?? 0;
      if (seen >= rank) return h.def.buckets[i];
    }
    return Number.POSITIVE_INFINITY;
  }
}
