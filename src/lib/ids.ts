/**
 * Branded identifiers. An id is a string that has been checked once at the boundary; the brand makes the
 * compiler refuse a plain string (or an id of another kind) where a checked one is owed.
 *
 * Ids appear as tokens in NATS subjects (`trellis.<cluster>.node.<nodeId>.cmd`), so they may not contain
 * `.`, `*`, `>` or white space: the allowed alphabet is letters, digits, `_` and `-`, 1 to 128 characters.
 *
 * Pure: the pure cores may import this module.
 */
import { ValidationError } from './errors.js';

declare const brand: unique symbol;
export type Brand<T, B extends string> = T & { readonly [brand]: B };

export type ClusterId = Brand<string, 'ClusterId'>;
export type NodeId = Brand<string, 'NodeId'>;
export type ReplicaId = Brand<string, 'ReplicaId'>;
export type RequestId = Brand<string, 'RequestId'>;
export type SandboxId = Brand<string, 'SandboxId'>;
export type TenantId = Brand<string, 'TenantId'>;

export const idLengthMax = 128;
const idPattern = /^[A-Za-z0-9_-]+$/;

/** True when `s` is a well-formed id of any kind. */
export function isId(s: unknown): s is string {
  return typeof s === 'string' && s.length >= 1 && s.length <= idLengthMax && idPattern.test(s);
}

function parser<T extends string>(kind: string): (s: unknown, path?: string) => T {
  return (s, path = kind) => {
    if (typeof s !== 'string') throw new ValidationError(path, `${kind} must be a string, got ${typeof s}`);
    if (s.length === 0 || s.length > idLengthMax) {
      throw new ValidationError(path, `${kind} must be 1..${idLengthMax} characters, got ${s.length}`);
    }
    if (!idPattern.test(s)) {
      throw new ValidationError(
        path,
        `${kind} may contain only letters, digits, '_' and '-': ${JSON.stringify(s)}`,
      );
    }
    return s as T;
  };
}

export const clusterId = parser<ClusterId>('clusterId');
export const nodeId = parser<NodeId>('nodeId');
export const replicaId = parser<ReplicaId>('replicaId');
export const requestId = parser<RequestId>('requestId');
export const sandboxId = parser<SandboxId>('sandboxId');
export const tenantId = parser<TenantId>('tenantId');
