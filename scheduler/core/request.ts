/** What the pure core needs of an admitted create: its id and spec (the shell adds its callers' promises). */
import type { SandboxSpec } from './commands.js';

export interface CoreRequest {
  readonly requestId: string;
  readonly spec: SandboxSpec;
}
