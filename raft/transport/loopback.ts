/**
 * An in-process transport for replicas that share one process (the embedded three-replica cluster, tests,
 * benchmarks): messages are delivered on the next turn of the event loop, in send order. Replicas can be taken
 * "down" (they neither send nor receive), which is how tests stand in for a crashed or cut-off process.
 * For deterministic, fault-injecting runs use SimNetwork (memory.ts) instead.
 */
import type { PeerId } from '../core/types.js';
import type { Transport } from '../transport.js';

export class LoopbackNetwork<M extends { readonly from: PeerId; readonly to: PeerId }> {
  readonly #handlers = new Map<PeerId, (m: M) => void>();
  readonly #unreachable = new Map<PeerId, (peer: PeerId) => void>();
  /** Replicas that neither send nor receive. */
  readonly down = new Set<PeerId>();

  endpoint(id: PeerId): Transport<M> {
    return {
      send: (messages) => {
        if (messages.length === 0) return;
        const batch = [...messages];
        setImmediate(() => {
          for (const m of batch) {
            if (this.down.has(m.from)) continue;
            const handler = this.down.has(m.to) ? undefined : this.#handlers.get(m.to);
            if (handler === undefined) this.#unreachable.get(m.from)?.(m.to);
            else handler(m);
          }
        });
      },
      onMessage: (handler) => {
        this.#handlers.set(id, handler);
      },
      onUnreachable: (handler) => {
        this.#unreachable.set(id, handler);
      },
      close: async () => {
        this.#handlers.delete(id);
        this.#unreachable.delete(id);
      },
    };
  }
}
