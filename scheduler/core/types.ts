/**
 * The records the scheduler keeps and the events it emits. Records are frozen plain objects held in
 * `immutable` maps, so a state version can be shared with readers while the next one is built.
 */
import type { NodeSpec, Resources } from '../../placement/index.js';
import type { SandboxSpec } from './commands.js';
import type { SandboxState } from './lifecycle.js';

export interface GpuShare {
  readonly device: number;
  readonly milli: number;
}

/** One sandbox as committed. `nodeId` is set while it holds (or last held) resources on a node. */
export interface Sandbox {
  readonly id: string;
  readonly requestId: string;
  readonly tenant: string;
  readonly spec: SandboxSpec;
  readonly state: SandboxState;
  readonly nodeId?: string;
  readonly gpuDevices: readonly GpuShare[];
  /** The node holding the memory snapshot of a suspended sandbox; resume prefers it. */
  readonly snapshotNodeId?: string;
  /**
   * Where a lost sandbox last held resources. When that node returns and reports the sandbox, reconcile
   * gives these back to it (if they still fit). Set only while the sandbox is lost.
   */
  readonly lostFrom?: LostFrom;
  /** Why it failed, was lost, could not resume, or (pending) why no node takes it yet. */
  readonly reason?: string;
  /** A pending sandbox's deadline, on the leader's clock: it fails if no node takes it by then. */
  readonly pendingUntilMs?: number;
  readonly createdAtMs: number;
  readonly updatedAtMs: number;
}

/** The node and GPU shares a lost sandbox held when it was lost. */
export interface LostFrom {
  readonly nodeId: string;
  readonly gpuDevices: readonly GpuShare[];
}

/** A registered node: its spec (state included) and the last heartbeat the leader committed for it. */
export interface NodeRecord {
  readonly spec: NodeSpec;
  readonly registeredAtMs: number;
  readonly lastHeartbeatMs: number;
}

/** A tenant's live usage, counted over sandboxes that are neither terminated nor failed. */
export interface Usage extends Resources {
  readonly sandboxes: number;
}

/** A committed change, in log order. `index` is the Raft index of the entry that made it. */
export type SchedulerEvent =
  | {
      readonly kind: 'sandbox';
      readonly index: number;
      readonly atMs: number;
      readonly sandboxId: string;
      readonly tenant: string;
      readonly from: SandboxState | 'none';
      readonly to: SandboxState;
      readonly nodeId?: string;
      readonly reason?: string;
    }
  | {
      readonly kind: 'node';
      readonly index: number;
      readonly atMs: number;
      readonly nodeId: string;
      readonly change: 'registered' | 'updated' | 'state' | 'removed';
      readonly state?: NodeSpec['state'];
    }
  | {
      /**
       * A reconciling node reported a sandbox the scheduler does not place there (unknown, finished,
       * living on another node, or with no room left to restore it): the node must stop its copy. State is
       * unchanged by an orphan.
       */
      readonly kind: 'orphan';
      readonly index: number;
      readonly atMs: number;
      readonly nodeId: string;
      readonly sandboxId: string;
      readonly reason: string;
    };
