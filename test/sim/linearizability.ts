/**
 * A linearizability checker for key-value histories: Wing & Gong's search with Lowe's memoisation, as
 * Porcupine does it (anishathalye/porcupine, checker.go), partitioned by key (P-compositionality: a history is
 * linearizable iff each key's sub-history is).
 *
 * An operation that never returned (the client timed out) may or may not have taken effect: it is given a
 * return time after everything else and an unknown output, so the search may place it anywhere after its call
 * — including "at the end", which is the same as not having happened for every observed operation.
 */

export type KvInput =
  | { readonly op: 'put'; readonly key: string; readonly value: string }
  | { readonly op: 'get'; readonly key: string }
  | { readonly op: 'cas'; readonly key: string; readonly expected: string | null; readonly value: string };

/** What the client saw: a get's value (null when absent), whether a cas applied; undefined when it never returned. */
export type KvOutput =
  | { readonly value: string | null }
  | { readonly applied: boolean }
  | { readonly ok: true }
  | undefined;

export interface Operation {
  readonly client: number;
  readonly input: KvInput;
  readonly output: KvOutput;
  /** Logical times; `returnAt` is undefined for an operation that never returned. */
  readonly callAt: number;
  readonly returnAt: number | undefined;
}

/** Bound on the search per key, so a pathological history ends with a verdict of "unknown", not a hang. */
export const searchStepsMax = 5_000_000;

export type Verdict =
  | { readonly ok: true }
  | { readonly ok: false; readonly key: string; readonly reason: 'not-linearizable' | 'search-limit' };

/** The sequential specification of one key: returns the next state, or undefined when the output is impossible. */
function step(state: string | null, input: KvInput, output: KvOutput): { next: string | null } | undefined {
  switch (input.op) {
    case 'put':
      return { next: input.value };
    case 'get':
      if (output === undefined) return { next: state };
      return 'value' in output && output.value === state ? { next: state } : undefined;
    case 'cas': {
      const applies = state === input.expected;
      if (output !== undefined && (!('applied' in output) || output.applied !== applies)) return undefined;
      return { next: applies ? input.value : state };
    }
  }
}

interface Event {
  readonly op: number;
  readonly isCall: boolean;
  readonly time: number;
  prev: Event | undefined;
  next: Event | undefined;
  match: Event | undefined;
}

/** Checks one key's operations. */
function checkKey(ops: readonly Operation[]): 'ok' | 'not-linearizable' | 'search-limit' {
  const horizon = Math.max(0, ...ops.map((o) => o.returnAt ?? o.callAt)) + 1;
  const events: Event[] = [];
  ops.forEach((o, i) => {
    const call: Event = {
      op: i,
      isCall: true,
      time: o.callAt,
      prev: undefined,
      next: undefined,
      match: undefined,
    };
    const ret: Event = {
      op: i,
      isCall: false,
      time: o.returnAt ?? horizon,
      prev: undefined,
      next: undefined,
      match: undefined,
    };
    call.match = ret;
    events.push(call, ret);
  });
  // Calls before returns at equal times, so touching operations count as concurrent.
  events.sort((a, b) => a.time - b.time || (a.isCall === b.isCall ? a.op - b.op : a.isCall ? -1 : 1));
  const head: Event = { op: -1, isCall: false, time: -1, prev: undefined, next: undefined, match: undefined };
  let prev = head;
  for (const e of events) {
    prev.next = e;
    e.prev = prev;
    prev = e;
  }
  const lift = (call: Event): void => {
    const ret = call.match as Event;
    (call.prev as Event).next = call.next;
    if (call.next !== undefined) call.next.prev = call.prev;
    (ret.prev as Event).next = ret.next;
    if (ret.next !== undefined) ret.next.prev = ret.prev;
  };
  const unlift = (call: Event): void => {
    const ret = call.match as Event;
    (ret.prev as Event).next = ret;
    if (ret.next !== undefined) ret.next.prev = ret;
    (call.prev as Event).next = call;
    if (call.next !== undefined) call.next.prev = call;
  };
  const linearized = new Uint8Array(ops.length);
  const cache = new Set<string>();
  const stack: { call: Event; state: string | null }[] = [];
  let state: string | null = null;
  let entry = head.next;
  let steps = 0;
  while (head.next !== undefined) {
    if (++steps > searchStepsMax) return 'search-limit';
    if (entry === undefined) return 'not-linearizable';
    if (entry.isCall) {
      const o = ops[entry.op] as Operation;
      const r = step(state, o.input, o.output);
      if (r !== undefined) {
        linearized[entry.op] = 1;
        const key = `${Buffer.from(linearized).toString('base64')}|${JSON.stringify(r.next)}`;
        if (!cache.has(key)) {
          cache.add(key);
          stack.push({ call: entry, state });
          state = r.next;
          lift(entry);
          entry = head.next;
          continue;
        }
        linearized[entry.op] = 0;
      }
      entry = entry.next;
    } else {
      // A return whose operation is not linearized yet: undo the last choice and try the next candidate.
      const top = stack.pop();
      if (top === undefined) return 'not-linearizable';
      unlift(top.call);
      linearized[top.call.op] = 0;
      state = top.state;
      entry = top.call.next;
    }
  }
  return 'ok';
}

/** Checks a whole history, key by key. */
export function checkHistory(history: readonly Operation[]): Verdict {
  const byKey = new Map<string, Operation[]>();
  for (const o of history) byKey.set(o.input.key, [...(byKey.get(o.input.key) ?? []), o]);
  for (const [key, ops] of [...byKey].sort((a, b) => (a[0] < b[0] ? -1 : 1))) {
    const r = checkKey(ops);
    if (r !== 'ok') return { ok: false, key, reason: r };
  }
  return { ok: true };
}
