#!/usr/bin/env node
/**
 * The `trellis` command. Argument parsing is commander's (well kept, subcommands, generated help); each
 * subcommand lives in its own file beside this one and registers itself here.
 */
import { Command } from 'commander';
import { registerClusterDemo, registerDemo } from './demo.js';
import { registerMembers } from './members.js';
import { registerNatsConfig } from './nats-config.js';
import { registerKv, registerServer } from './server.js';
import { registerSimulate } from './simulate.js';

const program = new Command()
  .name('trellis')
  .description('Replicated sandbox (microVM) scheduler: Raft over NATS, batched multi-resource placement')
  .showHelpAfterError();

registerDemo(program);
registerClusterDemo(program);
registerNatsConfig(program);
registerServer(program);
registerKv(program);
registerMembers(program);
registerSimulate(program);

// A closed pipe (`trellis demo | head`) ends the command quietly instead of with a stack trace.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(0);
  throw err;
});

await program.parseAsync(process.argv);
