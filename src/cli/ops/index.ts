/** The commands that drive a running cluster over NATS (see docs/operations.md, "The CLI"). */
import type { Command } from 'commander';
import { registerExec } from './exec.js';
import { registerNodeCommands } from './nodes.js';
import { registerSandboxCommands } from './sandboxes.js';

export function registerOps(program: Command): void {
  registerNodeCommands(program);
  registerSandboxCommands(program);
  registerExec(program);
}
