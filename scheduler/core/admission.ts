/**
 * Admission: the checks a create request passes before it may enter the pipeline. They read only the
 * request and a committed state, so followers can run them too and refuse bad input without a round trip
 * to the leader. Each failure is a typed error; none changes any state.
 */

import { type PlacementRequest, validateRequest } from '../../placement/index.js';
import { ValidationError } from '../../src/lib/errors.js';
import { requestId as parseRequestId } from '../../src/lib/ids.js';
import { unsafeTextPath } from '../../src/lib/text.js';
import { parseWith } from '../../src/lib/validate.js';
import { type SandboxSpec, sandboxSpecSchema } from './commands.js';
import { QuotaExceededError, RequestIdConflictError } from './errors.js';
import { fastCheckedSpec } from './spec-check.js';
import { type SchedulerState, specDigest, withinQuota } from './state.js';
import type { Usage } from './types.js';

/**
 * Validates a create spec. Throws ValidationError naming the first bad field: unknown fields, negative,
 * fractional or NaN amounts, over-long strings, malformed constraints. A spec of the common subset comes back
 * interned and deeply frozen (spec-check.ts: one object per distinct content); any other goes through the
 * schema, which alone decides what is refused and how.
 */
export function validateSpec(input: unknown): SandboxSpec {
  return fastCheckedSpec(input) ?? validateSpecWithSchema(input);
}

/** `validateSpec` without the fast path: zod's schema, the unsafe-text check and placement's request rules. */
export function validateSpecWithSchema(input: unknown): SandboxSpec {
  const spec = parseWith(sandboxSpecSchema, input, 'spec');
  refuseUnsafeText(spec, 'spec');
  // Placement's own validator knows rules the schema does not (a GPU request of both count and milli).
  validateRequest(placementRequestOf('probe', spec));
  return spec;
}

/**
 * Throws ValidationError when a string of `value` holds a control character or a bidirectional override
 * (src/lib/text.ts). Checked on new requests only, not in the schema: committed entries decode with the
 * schema, and a log written before this check must still replay.
 */
export function refuseUnsafeText(value: unknown, root: string): void {
  const path = unsafeTextPath(value, root);
  if (path !== undefined)
    throw new ValidationError(path, 'may not contain control characters or bidirectional overrides');
}

/** The placement request that asks for `spec`, under the sandbox id. */
export function placementRequestOf(
  sandboxId: string,
  spec: SandboxSpec,
  pinnedNode?: string,
): PlacementRequest {
  return {
    id: sandboxId,
    tenant: spec.tenant,
    resources: spec.resources,
    ...(spec.gpu === undefined ? {} : { gpu: stripUndefined(spec.gpu) }),
    ...(spec.priority === undefined ? {} : { priority: spec.priority }),
    ...(spec.constraints === undefined ? {} : { constraints: spec.constraints }),
    ...(spec.antiAffinity === undefined ? {} : { antiAffinity: spec.antiAffinity }),
    ...(spec.spread === undefined ? {} : { spread: stripUndefined(spec.spread) }),
    ...(spec.image === undefined ? {} : { imageId: spec.image }),
    ...(spec.strategy === undefined ? {} : { strategy: spec.strategy }),
    ...(pinnedNode === undefined ? {} : { pinnedNode }),
  };
}

function stripUndefined<T extends object>(o: T): { [K in keyof T]: Exclude<T[K], undefined> } {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as never;
}

/** What idempotency says about a request id. */
export type Idempotency =
  | { readonly kind: 'new' }
  | { readonly kind: 'committed'; readonly sandboxId: string };

/**
 * Looks the request id up in the committed dedup table. Throws ValidationError for a malformed id and
 * RequestIdConflictError when the id was used for a different spec.
 */
export function checkRequestId(state: SchedulerState, requestId: unknown, spec: SandboxSpec): Idempotency {
  const rid = parseRequestId(requestId, 'requestId');
  const seen = state.dedup.get(rid);
  if (seen === undefined) return { kind: 'new' };
  if (seen.specDigest !== specDigest(spec)) {
    throw new RequestIdConflictError(`request id ${rid} was already used for a different spec`, {
      details: { requestId: rid, sandboxId: seen.sandboxId },
    });
  }
  return { kind: 'committed', sandboxId: seen.sandboxId };
}

/**
 * Throws QuotaExceededError when the tenant's committed usage plus `inFlight` (admitted, not yet
 * committed) plus this spec passes its quota.
 */
export function checkQuota(state: SchedulerState, spec: SandboxSpec, inFlight: Usage | undefined): void {
  const quota = state.quotas.get(spec.tenant);
  // A tenant without a quota passes whatever its usage (`withinQuota`): no usage sum is built for it.
  if (quota === undefined) return;
  const base = state.usage(spec.tenant);
  const usage: Usage =
    inFlight === undefined
      ? base
      : {
          cpu: base.cpu + inFlight.cpu,
          memory: base.memory + inFlight.memory,
          disk: base.disk + inFlight.disk,
          sandboxes: base.sandboxes + inFlight.sandboxes,
        };
  const reason = withinQuota(usage, quota, spec);
  if (reason !== undefined) {
    throw new QuotaExceededError(`tenant ${spec.tenant}: ${reason}`, { details: { tenant: spec.tenant } });
  }
}
