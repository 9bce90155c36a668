#!/usr/bin/env node
/**
 * The `trellis` command. Argument parsing is commander's (well kept, subcommands, generated help); each
 * subcommand lives in its own file beside this one and registers itself here.
 *
 * Failures are handled once, here, for every command present and future: commander's own output is
 * silenced and its exits turned into exceptions (exitOverride), so a bad flag, an unknown command, an
 * error thrown by an action and one escaping asynchronously all end the same way: one line
 * `error: <message> (<CODE>)` on stderr and the exit code of its kind (src/cli/errors.ts). Commander copies
 * these settings into each subcommand when it is created, so they are set before any command registers.
 */
import { Command } from 'commander';
import { setTypedErrorStacks } from '../lib/errors.js';
import { registerBench } from './bench.js';
import { registerData } from './data.js';
import { registerClusterDemo, registerDemo } from './demo-command.js';
import { debugWanted, failureOf, isCleanExit } from './errors.js';
import { registerMembers } from './members-command.js';
import { registerNatsConfig } from './nats-config.js';
import { registerOps } from './ops/index.js';
import { registerKv, registerServer } from './server-command.js';
import { registerSimulate } from './simulate-command.js';
import { packageVersion } from './version.js';
import { registerWorker } from './worker-command.js';

const debug = debugWanted(process.argv, process.env);
// Typed errors are answers here, printed as one line: their stacks cost CPU on hot paths for nothing.
// TRELLIS_TYPED_STACKS=0 keeps them off under TRELLIS_DEBUG (bench:load debugs its processes for their
// unexpected deaths, whose errors are not typed ones, and measures their CPU).
setTypedErrorStacks(debug && process.env.TRELLIS_TYPED_STACKS !== '0');

/** Prints the one line (and, when debugging, the stack) and exits with the code of the error's kind. */
function fail(err: unknown): never {
  const { line, exitCode } = failureOf(err);
  if (debug && err instanceof Error && err.stack !== undefined) process.stderr.write(`${err.stack}\n`);
  process.stderr.write(`${line}\n`);
  process.exit(exitCode);
}

/**
 * nats.js rejects every PONG it still waits for when its connection drops (`resetOutbound`), without a stack,
 * and some of those promises are its own, with no handler yet (nats.js issue #523). A server or worker that
 * reconnects forever must ride that out: the connection comes back by itself. Found by `bench:load --chaos`,
 * where a replica died with `error: DISCONNECT` at the nats-server restart and the run stalled without it.
 */
function isNatsDisconnect(err: unknown): boolean {
  // By name and code rather than `instanceof NatsError`: the CLI does not load nats.js to start (a command
  // that connects loads it), and nats.js's `ErrorCode.Disconnect` is this string.
  return (
    err instanceof Error && err.name === 'NatsError' && (err as { code?: unknown }).code === 'DISCONNECT'
  );
}

process.on('uncaughtException', fail);
process.on('unhandledRejection', (err) => {
  if (!isNatsDisconnect(err)) fail(err);
  process.stderr.write('warning: NATS disconnected; a pending round trip was dropped, reconnecting\n');
});

const program = new Command()
  .name('trellis')
  .description('Replicated sandbox (microVM) scheduler: Raft over NATS, batched multi-resource placement')
  .version(packageVersion(), '-V, --version', 'print the version')
  .option('--debug', 'print the stack of an error (also TRELLIS_DEBUG=1)')
  .exitOverride()
  .configureOutput({ writeErr: () => undefined, outputError: () => undefined });

registerDemo(program);
registerClusterDemo(program);
registerNatsConfig(program);
registerServer(program);
registerKv(program);
registerMembers(program);
registerOps(program);
registerSimulate(program);
registerData(program);
registerWorker(program);
registerBench(program);

// A closed pipe (`trellis demo | head`) ends the command quietly instead of with a stack trace.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(0);
  fail(err);
});

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (isCleanExit(err)) process.exit(0);
  fail(err);
}
