#!/usr/bin/env node
/**
 * The `trellis` command. Argument parsing is commander's (well kept, subcommands, generated help); each
 * subcommand lives in its own file beside this one and registers itself here.
 */
import { Command } from 'commander';
import { registerDemo } from './demo.js';

const program = new Command()
  .name('trellis')
  .description('Replicated sandbox (microVM) scheduler: Raft over NATS, batched multi-resource placement')
  .showHelpAfterError();

registerDemo(program);

await program.parseAsync(process.argv);
