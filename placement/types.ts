/**
 * The placement model: resource vectors, nodes, requests, and the plan `planBatch` returns.
 *
 * Units are carried in the names of the documentation, not the fields, because the field set mirrors the
 * public API: `cpu` is millicores, `memory` and `disk` are MiB, GPU shares are milli-GPU (1000 = one device).
 * All amounts are non-negative integers.
 */

/** A vector of the scalar resources. */
export interface Resources {
  /** Millicores. */
  readonly cpu: number;
  /** MiB. */
  readonly memory: number;
  /** MiB. */
  readonly disk: number;
}

/** The scalar resources by name, in a fixed order used by columns and reasons. */
export const scalarResources = ['cpu', 'memory', 'disk'] as const;
export type ScalarResource = (typeof scalarResources)[number];
/** Every resource a reason can name. */
export type ResourceName = ScalarResource | 'gpu';

/** A node's GPUs: `count` identical devices of one model, each 1000 milli-GPU. */
export interface GpuSpec {
  readonly model: string;
  readonly count: number;
}

/** What a request asks of GPUs: `count` whole devices, or a `milli` share (< 1000) of one device. */
export interface GpuRequest {
  readonly count?: number;
  readonly milli?: number;
  /** Only devices of this model qualify, when given. */
  readonly model?: string;
}

export type NodeState = 'ready' | 'draining' | 'cordoned' | 'down';
export const nodeStates: readonly NodeState[] = ['ready', 'draining', 'cordoned', 'down'];

/** A node as registered: its capacity and the facts constraints and scorers read. */
export interface NodeSpec {
  readonly id: string;
  readonly capacity: Resources;
  readonly gpu?: GpuSpec;
  /** Labels: `zone`, `rack`, `instanceType` by convention, plus any key/value. */
  readonly labels: Readonly<Record<string, string>>;
  readonly state: NodeState;
  /** Images and snapshots cached on the node (locality). */
  readonly images?: readonly string[];
}

/** A required constraint on node labels. */
export type Constraint =
  | { readonly label: string; readonly op: 'eq'; readonly value: string }
  | { readonly label: string; readonly op: 'in' | 'notIn'; readonly values: readonly string[] }
  | { readonly label: string; readonly op: 'exists' };

/** A soft preference: nodes matching `constraint` gain `weight` (1..100). */
export interface Preference {
  readonly constraint: Constraint;
  readonly weight: number;
}

/** Spread sandboxes of one group across the values of a label, with at most `maxSkew` difference. */
export interface SpreadRule {
  readonly label: string;
  readonly maxSkew: number;
  /** The sandboxes counted together; the request's tenant when absent. */
  readonly group?: string;
}

/** At most `maxPerNode` sandboxes of `group` on one node. */
export interface AntiAffinityRule {
  readonly group: string;
  readonly maxPerNode: number;
}

export type Strategy = 'binpack' | 'spread';

/** One sandbox to place. */
export interface PlacementRequest {
  readonly id: string;
  readonly tenant: string;
  readonly resources: Resources;
  readonly gpu?: GpuRequest;
  /** Higher is placed first; 0 by default. */
  readonly priority?: number;
  readonly constraints?: readonly Constraint[];
  readonly preferences?: readonly Preference[];
  readonly spread?: SpreadRule;
  readonly antiAffinity?: AntiAffinityRule;
  /** Prefer nodes that hold this image or snapshot. */
  readonly imageId?: string;
  /** Place only on this node (resume next to its snapshot). */
  readonly pinnedNode?: string;
  /** Overrides the batch's strategy for this request. */
  readonly strategy?: Strategy;
}

/** A request that found a node. `gpuDevices` lists device indexes on that node and the share taken of each. */
export interface Placement {
  readonly requestId: string;
  readonly nodeId: string;
  readonly gpuDevices: readonly { readonly device: number; readonly milli: number }[];
  /** The final normalised score of the chosen node, in [0, 1]. */
  readonly score: number;
}

/** Where in the feasibility chain nodes were ruled out; a node is counted at the first stage it fails. */
export interface FilterCounts {
  /** Not `ready` (draining, cordoned, down). */
  state: number;
  /** Failed a required label constraint, or the pinned node rule. */
  constraint: number;
  /** Already holds `maxPerNode` sandboxes of the anti-affinity group. */
  antiAffinity: number;
  /** Placing here would break the spread's max skew. */
  spread: number;
  /** Short of at least one resource (see `shortOf`). */
  resources: number;
}

/** Why a request could not be placed: the reason a person can act on. */
export interface Rejection {
  readonly requestId: string;
  /** The stage that ruled out the last remaining nodes. */
  readonly code: 'no-nodes' | 'state' | 'constraint' | 'anti-affinity' | 'spread' | 'resources';
  /** One sentence for people. */
  readonly message: string;
  readonly nodesEvaluated: number;
  readonly filtered: Readonly<FilterCounts>;
  /** Among nodes that passed every other stage: how many were short of each resource. */
  readonly shortOf: Readonly<Record<ResourceName, number>>;
  /** The node that came closest on resources, and what it lacked. */
  readonly closest?: {
    readonly nodeId: string;
    readonly shortfall: Readonly<Partial<Record<ResourceName, number>>>;
  };
  /** The first constraint that failed most often, when constraints ruled nodes out. */
  readonly constraint?: string;
}

export type PlanOutcome =
  | { readonly kind: 'placed'; readonly placement: Placement }
  | {
      readonly kind: 'rejected';
      readonly rejection: Rejection;
    };
