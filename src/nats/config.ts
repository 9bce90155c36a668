/**
 * Least-privilege nats-server configuration for a Trellis cluster. Every process gets its own user:
 *
 * - a **replica** may publish and subscribe only under its cluster's subjects (`trellis.<cluster>.>`) and
 *   its request inboxes;
 * - a **node worker** may receive only its own node's commands (`trellis.<cluster>.node.<id>.cmd`) and publish
 *   only its own node's status (`trellis.<cluster>.node.<id>.status`) and its node-side API calls
 *   (`trellis.<cluster>.api.node.<id>`, where the replicas take only calls about that node), plus replies
 *   to requests made to it;
 * - an **API client** may send requests to `trellis.<cluster>.api` and to one replica's own subject
 *   `trellis.<cluster>.api.<id>` (how a client routes to the leader it learned, and asks a replica for its
 *   status), and follow `trellis.<cluster>.events` and `trellis.<cluster>.watch` (the API's event frames).
 *
 * So a compromised worker can neither speak Raft nor issue API calls, nor impersonate another node.
 * Passwords are random (24 bytes, base64url); the generated file must be kept private (mode 0600).
 */
import { randomBytes } from 'node:crypto';
import { ValidationError } from '../lib/errors.js';
import {
  clusterId as parseClusterId,
  nodeId as parseNodeId,
  replicaId as parseReplicaId,
} from '../lib/ids.js';

export interface NatsUser {
  readonly user: string;
  readonly password: string;
  readonly role: 'replica' | 'worker' | 'client';
  /** The replica or node id, or the client's name. */
  readonly id: string;
}

export interface NatsAuthPlan {
  readonly cluster: string;
  readonly users: readonly NatsUser[];
}

export interface NatsTlsFiles {
  readonly cert: string;
  readonly key: string;
  readonly ca?: string;
}

function password(): string {
  return randomBytes(24).toString('base64url');
}

function refuseDuplicates(ids: readonly string[], path: string): void {
  const seen = new Set<string>();
  for (const id of ids) {
    if (seen.has(id)) throw new ValidationError(path, `${JSON.stringify(id)} is listed twice`);
    seen.add(id);
  }
}

/** Creates one user per replica, node worker and API client, each with a fresh random password. */
export function planNatsUsers(
  cluster: string,
  replicas: readonly string[],
  nodes: readonly string[],
  clients: readonly string[] = ['api'],
): NatsAuthPlan {
  parseClusterId(cluster, 'cluster');
  // Two users of one name would make nats-server keep one and lock the other out: refuse instead.
  refuseDuplicates(replicas, 'replicas');
  refuseDuplicates(nodes, 'nodes');
  refuseDuplicates(clients, 'clients');
  const users: NatsUser[] = [
    ...replicas.map((id) => ({
      user: `replica-${parseReplicaId(id, 'replicas')}`,
      password: password(),
      role: 'replica' as const,
      id,
    })),
    ...nodes.map((id) => ({
      user: `node-${parseNodeId(id, 'nodes')}`,
      password: password(),
      role: 'worker' as const,
      id,
    })),
    ...clients.map((id) => ({
      user: `client-${parseReplicaId(id, 'clients')}`,
      password: password(),
      role: 'client' as const,
      id,
    })),
  ];
  return { cluster, users };
}

/** The subjects a user may publish to and subscribe to. */
export function permissionsOf(
  cluster: string,
  u: NatsUser,
): { publish: string[]; subscribe: string[]; allowResponses: boolean } {
  const root = `trellis.${cluster}`;
  switch (u.role) {
    case 'replica':
      return {
        publish: [`${root}.>`, '_INBOX.>'],
        subscribe: [`${root}.>`, '_INBOX.>'],
        allowResponses: true,
      };
    case 'worker':
      return {
        // Its own node-side API subject (register, heartbeat, status, reconcile about itself only).
        publish: [`${root}.node.${u.id}.status`, `${root}.api.node.${u.id}`, '_INBOX.>'],
        subscribe: [`${root}.node.${u.id}.cmd`, '_INBOX.>'],
        allowResponses: true,
      };
    case 'client':
      return {
        publish: [`${root}.api`, `${root}.api.*`],
        subscribe: ['_INBOX.>', `${root}.events`, `${root}.watch`],
        allowResponses: false,
      };
  }
}

/** The `authorization { users = [...] }` block for a plan. */
export function authorizationBlock(plan: NatsAuthPlan): string {
  const q = (s: string): string => JSON.stringify(s);
  const users = plan.users.map((u) => {
    const p = permissionsOf(plan.cluster, u);
    return [
      `    { user: ${q(u.user)}, password: ${q(u.password)}, permissions: {`,
      `        publish: { allow: [${p.publish.map(q).join(', ')}] }`,
      `        subscribe: { allow: [${p.subscribe.map(q).join(', ')}] }`,
      p.allowResponses ? '        allow_responses: true' : '',
      '    } }',
    ]
      .filter((l) => l !== '')
      .join('\n');
  });
  return `authorization {\n  users = [\n${users.join('\n')}\n  ]\n}\n`;
}

/** A whole nats-server configuration: listen address, optional TLS, and the authorization block. */
/**
 * This server's place in a routed NATS cluster: where it listens for routes and the other servers' route
 * addresses. Route ports carry every subject unchecked by the users' permissions: bind them to a private
 * network only.
 */
export interface NatsRouteCluster {
  readonly listen: string;
  readonly routes: readonly string[];
}

export function natsServerConfig(
  plan: NatsAuthPlan,
  options: { listen: string; tls?: NatsTlsFiles; routeCluster?: NatsRouteCluster },
): string {
  const lines = [
    `# Generated by 'trellis nats-config' for cluster ${plan.cluster}. Keep this file private.`,
    `listen: ${JSON.stringify(options.listen)}`,
  ];
  if (options.tls !== undefined) {
    lines.push(
      'tls {',
      `  cert_file: ${JSON.stringify(options.tls.cert)}`,
      `  key_file: ${JSON.stringify(options.tls.key)}`,
      ...(options.tls.ca === undefined
        ? []
        : [`  ca_file: ${JSON.stringify(options.tls.ca)}`, '  verify: true']),
      '}',
    );
  }
  if (options.routeCluster !== undefined) {
    const routes = options.routeCluster.routes.map((r) => JSON.stringify(`nats-route://${r}`));
    lines.push(
      'cluster {',
      `  name: ${JSON.stringify(`trellis-${plan.cluster}`)}`,
      `  listen: ${JSON.stringify(options.routeCluster.listen)}`,
      `  routes: [${routes.join(', ')}]`,
      '}',
    );
  }
  return `${lines.join('\n')}\n${authorizationBlock(plan)}`;
}
