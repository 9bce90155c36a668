/** The unit of work that moves through the leader pipeline: one admitted create and its caller's promise. */
import type { CoreRequest } from '../core/request.js';
import type { Sandbox } from '../types.js';

export interface CreateRequest extends CoreRequest {
  /** Leader clock after which a request that still fits nowhere fails with NoCapacityError. */
  readonly deadlineMs: number;
  /** Times a planned placement of it was refused at commit (a race); bounded by `replanMax`. */
  replans: number;
  /** The last reason it could not be placed, kept while it waits in the pending queue. */
  reason?: string;
  /**
   * `pend` proposed for it (it may be committed `pending`): its failure must then be committed too, so no
   * later leader places a request its caller was told had failed.
   */
  pendProposed: boolean;
  /** Its resources are counted in the leader's in-flight usage (until committed state counts them). */
  usageCounted: boolean;
  /** The callers waiting on it: the first create, and any retry with the same id that joined it. */
  readonly waiters: { readonly resolve: (sandbox: Sandbox) => void; readonly reject: (err: Error) => void }[];
}

export function resolveAll(req: CreateRequest, sandbox: Sandbox): void {
  for (const w of req.waiters) w.resolve(sandbox);
}

export function rejectAll(req: CreateRequest, err: Error): void {
  for (const w of req.waiters) w.reject(err);
}
