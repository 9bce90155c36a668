/**
 * The sandbox lifecycle. Every state change in the scheduler goes through `transition`, which refuses any
 * move the table below does not list, so a late or duplicated status report (a node saying "running" for a
 * sandbox that was already terminated) cannot resurrect it.
 *
 *   pending → placed → starting → running → (suspending → suspended → resuming → running)
 *           → terminating → terminated, plus failed(reason) and lost (its node died).
 *
 * A lost sandbox leaves `lost` in three ways: terminated, placed again elsewhere (`replace`, stateless
 * only), or given back to the node it was lost from when that node returns and reports it (`node.reconcile`),
 * in the state the node reports, or failed when the node no longer has room for it.
 *
 * Which states hold resources on a node is also decided here (`holdsAllocation`): a suspended sandbox's
 * memory image lives on disk, so it gives its cpu and memory back until it resumes.
 */
import { IllegalTransitionError } from './errors.js';

export const sandboxStates = [
  'pending',
  'placed',
  'starting',
  'running',
  'suspending',
  'suspended',
  'resuming',
  'terminating',
  'terminated',
  'failed',
  'lost',
] as const;
export type SandboxState = (typeof sandboxStates)[number];

/** What a suspended sandbox does when the node holding its snapshot is gone or full. */
export type ResumePolicy = 'wait' | 'move' | 'fail';

/** The legal next states of each state. Terminal states have none. */
const next: Readonly<Record<SandboxState, readonly SandboxState[]>> = {
  pending: ['placed', 'failed', 'terminated'],
  placed: ['starting', 'running', 'terminating', 'terminated', 'failed', 'lost'],
  starting: ['running', 'terminating', 'failed', 'lost'],
  running: ['suspending', 'terminating', 'failed', 'lost'],
  suspending: ['suspended', 'running', 'terminating', 'failed', 'lost'],
  suspended: ['resuming', 'terminated', 'failed', 'lost'],
  resuming: ['running', 'suspended', 'terminating', 'failed', 'lost'],
  terminating: ['terminated', 'failed', 'lost'],
  terminated: [],
  failed: ['terminated'],
  // Every state but terminated and failed is a restore by `node.reconcile`, which alone re-takes the
  // allocation; a status report may not take a lost sandbox anywhere but terminated or failed.
  lost: [
    'terminated',
    'placed',
    'starting',
    'running',
    'suspending',
    'suspended',
    'resuming',
    'terminating',
    'failed',
  ],
};

/**
 * The states a node may report a sandbox in when it reconciles: the ones in which it holds the sandbox's
 * instance, or (suspended) its memory snapshot.
 */
export const nodeHeldStates = [
  'placed',
  'starting',
  'running',
  'suspending',
  'suspended',
  'resuming',
  'terminating',
] as const satisfies readonly SandboxState[];
export type NodeHeldState = (typeof nodeHeldStates)[number];

/** True when `from → to` is a legal transition. */
export function canTransition(from: SandboxState, to: SandboxState): boolean {
  return next[from].includes(to);
}

/** Checks `from → to`; throws IllegalTransitionError naming both states when it is not legal. */
export function transition(sandboxId: string, from: SandboxState, to: SandboxState): SandboxState {
  if (!canTransition(from, to)) {
    throw new IllegalTransitionError(`sandbox ${sandboxId}: cannot go from ${from} to ${to}`, {
      details: { sandboxId, from, to },
    });
  }
  return to;
}

/** True for states whose sandbox holds cpu, memory, disk (and GPU shares) on its node. */
export function holdsAllocation(state: SandboxState): boolean {
  return (
    state === 'placed' ||
    state === 'starting' ||
    state === 'running' ||
    state === 'suspending' ||
    state === 'resuming' ||
    state === 'terminating'
  );
}

/** True for states no transition leaves except to `terminated` (or none at all). */
export function isFinished(state: SandboxState): boolean {
  return state === 'terminated' || state === 'failed';
}

/**
 * Where a terminate request takes a sandbox: straight to `terminated` when nothing runs on a node (it was
 * never started, or its node is gone), else to `terminating` until the node confirms.
 */
export function terminateTarget(state: SandboxState): SandboxState {
  return state === 'starting' || state === 'running' || state === 'resuming' || state === 'suspending'
    ? 'terminating'
    : 'terminated';
}
