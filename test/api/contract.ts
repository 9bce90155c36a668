/**
 * One contract for `SchedulerApi`, run against every implementation (embedded-contract.test.ts,
 * remote-contract.test.ts): the same calls must give the same answers and throw the same error classes,
 * so code tested against the embedded scheduler runs unchanged against a cluster.
 */
import { describe, expect, it } from 'vitest';
import type { NodeSpec } from '../../placement/index.js';
import { DuplicateNodeError, NodeBusyError, UnknownNodeError } from '../../placement/index.js';
import type { SchedulerApi } from '../../scheduler/api.js';
import type { SandboxSpec } from '../../scheduler/commands.js';
import {
  IllegalTransitionError,
  QuotaExceededError,
  RequestIdConflictError,
  UnknownSandboxError,
} from '../../scheduler/errors.js';
import type { SchedulerEvent } from '../../scheduler/types.js';
import { TrellisError, ValidationError } from '../../src/lib/errors.js';

export interface ContractSubject {
  readonly api: SchedulerApi;
  /** Stops the implementation and everything it started. */
  close(): Promise<void>;
}

/**
 * Each test names its nodes, tenants and request ids under its own prefix and pins its sandboxes to its
 * own nodes (a label constraint), so the suite also runs against one long-lived cluster shared by all
 * tests (the multi-process group), not only against a fresh scheduler per test.
 */
let namespaces = 0;
function namespace() {
  const ns = `c${++namespaces}x${Date.now().toString(36)}-`;
  const id = (x: string) => `${ns}${x}`;
  const node = (x: string, cpu = 4000, extra: Partial<NodeSpec> = {}): NodeSpec => ({
    id: id(x),
    capacity: { cpu, memory: 8192, disk: 100_000 },
    labels: { zone: 'z-a', ns },
    state: 'ready',
    ...extra,
  });
  const spec = (tenant = 't1', cpu = 1000, extra: Partial<SandboxSpec> = {}): SandboxSpec => ({
    tenant: id(tenant),
    resources: { cpu, memory: 512, disk: 1024 },
    constraints: [{ label: 'ns', op: 'eq', value: ns }],
    ...extra,
  });
  return { ns, id, node, spec };
}
type Ns = ReturnType<typeof namespace>;

/** This test's sandboxes and nodes only. */
async function mine(api: SchedulerApi, n: Ns) {
  return (await api.list()).filter((s) => s.tenant.startsWith(n.ns));
}
async function myNodes(api: SchedulerApi, n: Ns) {
  return (await api.nodes()).filter((x) => x.id.startsWith(n.ns));
}

/** The error a promise rejects with (fails the test when it resolves). */
async function rejection(p: Promise<unknown>): Promise<TrellisError> {
  const outcome = await p.then(
    (v) => ({ ok: true as const, v }),
    (e: unknown) => ({ ok: false as const, e }),
  );
  if (outcome.ok) throw new Error(`expected a rejection, got ${JSON.stringify(outcome.v)}`);
  expect(outcome.e).toBeInstanceOf(TrellisError);
  return outcome.e as TrellisError;
}

async function take(events: AsyncIterableIterator<SchedulerEvent>, n: number): Promise<SchedulerEvent[]> {
  const out: SchedulerEvent[] = [];
  while (out.length < n) {
    const r = await events.next();
    if (r.done === true) break;
    out.push(r.value);
  }
  return out;
}

export function schedulerContract(name: string, start: () => Promise<ContractSubject>): void {
  describe(`${name} - SchedulerApi contract`, () => {
    const withApi = (f: (api: SchedulerApi, n: Ns) => Promise<void>) => async () => {
      const subject = await start();
      try {
        await f(subject.api, namespace());
      } finally {
        await subject.close();
      }
    };

    it(
      `${name} - registers nodes, creates, gets, lists by tenant, state and node, and terminates`,
      withApi(async (api, n) => {
        const { id, node, spec } = n;
        await api.registerNode(node('n1'));
        await api.registerNode(node('n2', 2000));
        expect((await myNodes(api, n)).map((x) => [x.id, x.spec.capacity.cpu, x.state])).toEqual([
          [id('n1'), 4000, 'ready'],
          [id('n2'), 2000, 'ready'],
        ]);
        const a = await api.create(spec('t1'));
        const b = await api.create(spec('t2', 500, { image: 'ubuntu', labels: { team: 'x' } }));
        expect(a.state).toBe('placed');
        expect([id('n1'), id('n2')]).toContain(a.nodeId);
        expect(b.spec.image).toBe('ubuntu');
        expect(b.spec.labels).toEqual({ team: 'x' });
        expect(await api.get(a.id)).toEqual(a);
        expect(await api.get('nope')).toBeUndefined();
        expect((await api.list({ tenant: id('t2') })).map((s) => s.id)).toEqual([b.id]);
        expect((await mine(api, n)).map((s) => s.id)).toEqual([a.id, b.id].sort());
        expect((await api.list({ nodeId: a.nodeId as string })).map((s) => s.id)).toContain(a.id);
        await api.reportStatus([{ sandboxId: a.id, state: 'running' }]);
        expect((await mine(api, n)).filter((s) => s.state === 'running').map((s) => s.id)).toEqual([a.id]);
        expect((await api.list({ state: 'running' })).map((s) => s.id)).toContain(a.id);
        await api.terminate(b.id);
        // A terminated sandbox that never ran is dropped from state, or kept as terminated.
        expect(['terminated', 'gone']).toContain((await api.get(b.id))?.state ?? 'gone');
        const used = (await api.nodes()).find((x) => x.id === a.nodeId);
        expect(used?.allocated.cpu).toBe(1000);
        const stats = await api.stats();
        expect(stats.sandboxes).toBe((await api.list()).length);
        expect(stats.nodes).toBe((await api.nodes()).length);
      }),
    );

    it(
      `${name} - a request id makes create idempotent and refuses reuse for another spec`,
      withApi(async (api, n) => {
        const { id, node, spec } = n;
        await api.registerNode(node('n1'));
        const first = await api.create(spec(), { requestId: id('req-1') });
        const again = await api.create(spec(), { requestId: id('req-1') });
        expect(again.id).toBe(first.id);
        expect((await mine(api, n)).length).toBe(1);
        const err = await rejection(api.create(spec('t1', 2000), { requestId: id('req-1') }));
        expect(err).toBeInstanceOf(RequestIdConflictError);
        expect(err.code).toBe('SCHED_REQUEST_ID_CONFLICT');
      }),
    );

    it(
      `${name} - bad input is a typed error with its path and changes nothing`,
      withApi(async (api, n) => {
        const { id, node, spec } = n;
        await api.registerNode(node('n1'));
        const bad = await rejection(
          api.create({ tenant: id('t1'), resources: { cpu: -1, memory: 1, disk: 1 } } as SandboxSpec),
        );
        expect(bad).toBeInstanceOf(ValidationError);
        expect((bad as ValidationError).path).toBe('spec.resources.cpu');
        const extra = await rejection(api.create({ ...spec(), bogus: 1 } as unknown as SandboxSpec));
        expect(extra).toBeInstanceOf(ValidationError);
        const badNode = await rejection(api.registerNode({ ...node('n2'), capacity: { cpu: 'x' } } as never));
        expect(badNode).toBeInstanceOf(ValidationError);
        expect((await rejection(api.terminate('has space'))).code).toBe('VALIDATION');
        expect((await rejection(api.setNodeState(id('n1'), 'sideways' as never))).code).toBe('VALIDATION');
        // Free text that would rewrite an operator's terminal (ESC, CR) or read reversed (a bidi override).
        const esc = await rejection(api.create(spec('t1', 1000, { labels: { role: 'web\u001b[2J' } })));
        expect((esc as ValidationError).path).toBe('spec.labels.role');
        const cr = await rejection(api.create(spec('t1', 1000, { image: 'ok\rfake' })));
        expect((cr as ValidationError).path).toBe('spec.image');
        const bidi = await rejection(
          api.registerNode(node('n3', 4000, { labels: { zone: 'a\u202eb', ns: n.ns } })),
        );
        expect((bidi as ValidationError).path).toBe('node.labels.zone');
        expect(await mine(api, n)).toEqual([]);
        expect((await myNodes(api, n)).map((x) => x.id)).toEqual([id('n1')]);
      }),
    );

    it(
      `${name} - refusals keep their class and code: unknown sandbox, illegal transition, duplicate, busy, unknown node`,
      withApi(async (api, n) => {
        const { id, node, spec } = n;
        await api.registerNode(node('n1'));
        const unknown = await rejection(api.terminate('sb-missing'));
        expect(unknown).toBeInstanceOf(UnknownSandboxError);
        expect(unknown.code).toBe('SCHED_UNKNOWN_SANDBOX');
        const dup = await rejection(api.registerNode(node('n1')));
        expect(dup).toBeInstanceOf(DuplicateNodeError);
        const sb = await api.create(spec());
        const busy = await rejection(api.removeNode(id('n1')));
        expect(busy).toBeInstanceOf(NodeBusyError);
        const illegal = await rejection(api.resume(sb.id));
        expect(illegal).toBeInstanceOf(IllegalTransitionError);
        const noNode = await rejection(api.reconcileNode('ghost', []));
        expect(noNode).toBeInstanceOf(UnknownNodeError);
        expect(noNode.code).toBe('PLACEMENT_UNKNOWN_NODE');
      }),
    );

    it(
      `${name} - quotas refuse creates past the limit`,
      withApi(async (api, n) => {
        const { id, node, spec } = n;
        await api.registerNode(node('n1'));
        await api.setQuota(id('t1'), { sandboxes: 1 });
        await api.create(spec());
        const err = await rejection(api.create(spec()));
        expect(err).toBeInstanceOf(QuotaExceededError);
        await api.create(spec('t2'));
      }),
    );

    it(
      `${name} - node states: cordon keeps sandboxes off a node, remove takes an empty one away`,
      withApi(async (api, n) => {
        const { id, node, spec } = n;
        await api.registerNode(node('n1'));
        await api.registerNode(node('n2'));
        await api.setNodeState(id('n1'), 'cordoned');
        for (let i = 0; i < 3; i++) expect((await api.create(spec())).nodeId).toBe(id('n2'));
        expect((await api.nodes()).find((x) => x.id === id('n1'))?.state).toBe('cordoned');
        await api.setNodeState(id('n1'), 'ready');
        await api.removeNode(id('n1'));
        expect((await myNodes(api, n)).map((x) => x.id)).toEqual([id('n2')]);
        await api.heartbeat([id('n2')]);
      }),
    );

    it(
      `${name} - reconcile of a returning node answers what it restored, lost and orphaned`,
      withApi(async (api, n) => {
        const { id, node, spec } = n;
        await api.registerNode(node('n1'));
        const a = await api.create(spec());
        const b = await api.create(spec());
        await api.setNodeState(id('n1'), 'down');
        expect((await api.get(a.id))?.state).toBe('lost');
        const r = await api.reconcileNode(id('n1'), [
          { sandboxId: a.id, state: 'running' },
          { sandboxId: 'sb-stranger', state: 'running' },
        ]);
        expect(r.restored).toEqual([{ sandboxId: a.id, state: 'running' }]);
        expect(r.orphans.map((o) => o.sandboxId)).toEqual(['sb-stranger']);
        expect((await api.get(a.id))?.state).toBe('running');
        expect((await api.get(b.id))?.state).toBe('lost');
      }),
    );

    it(
      `${name} - suspend and resume move a running sandbox through the lifecycle`,
      withApi(async (api, n) => {
        const { id, node, spec } = n;
        await api.registerNode(node('n1'));
        const a = await api.create(spec());
        await api.reportStatus([{ sandboxId: a.id, state: 'running' }]);
        await api.suspend(a.id, { requestId: id('sus-1') });
        expect((await api.get(a.id))?.state).toBe('suspending');
        await api.reportStatus([{ sandboxId: a.id, state: 'suspended' }]);
        await api.resume(a.id);
        expect((await api.get(a.id))?.state).toBe('resuming');
      }),
    );

    it(
      `${name} - watch yields committed events in log order`,
      withApi(async (api, n) => {
        const { node, spec } = n;
        await api.registerNode(node('n1'));
        // From the next log index: the remote watch replays what it missed before it subscribed.
        const events = api.watch({ fromIndex: (await api.stats()).applied + 1 });
        const a = await api.create(spec());
        const b = await api.create(spec());
        await api.reportStatus([{ sandboxId: a.id, state: 'running' }]);
        const seen = await take(events, 3);
        await events.return?.();
        expect(seen.map((e) => (e.kind === 'sandbox' ? `${e.sandboxId}:${e.to}` : e.kind))).toEqual([
          `${a.id}:placed`,
          `${b.id}:placed`,
          `${a.id}:running`,
        ]);
        const indexes = seen.map((e) => e.index);
        expect([...indexes].sort((x, y) => x - y)).toEqual(indexes);
      }),
    );

    it(
      `${name} - watch from a past index replays what was committed before it started`,
      withApi(async (api, n) => {
        // The events of calls that completed before the watch was opened come first, from the given index
        // on (and nothing before it), then live ones.
        const { node, spec } = n;
        await api.registerNode(node('n1'));
        const from = (await api.stats()).applied + 1;
        const a = await api.create(spec());
        const b = await api.create(spec());
        const events = api.watch({ fromIndex: from });
        const c = await api.create(spec());
        const seen = await take(events, 3);
        await events.return?.();
        expect(seen.map((e) => (e.kind === 'sandbox' ? `${e.sandboxId}:${e.to}` : e.kind))).toEqual([
          `${a.id}:placed`,
          `${b.id}:placed`,
          `${c.id}:placed`,
        ]);
        expect(seen.every((e) => e.index >= from)).toBe(true);
      }),
    );
  });
}
