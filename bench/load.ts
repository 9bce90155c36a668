/**
 * `npm run bench:load -- [--nodes N] [--sandboxes N] [--rate 100000/min] [--chaos] [--json FILE] [--data DIR]`:
 * the load benchmark. It runs the built `trellis bench load` (src/cli/bench.ts → src/load/run.ts), so the npm
 * script and the CLI share every flag and every line of code. Ctrl-C reaches the command too (same terminal
 * process group); this wrapper waits for it to stop its processes and exits with its code.
 */
import { spawn } from 'node:child_process';
import { cliMain } from '../src/testing/replica-process.js';

const child = spawn(process.execPath, [cliMain, 'bench', 'load', ...process.argv.slice(2)], {
  stdio: 'inherit',
});
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    // A SIGTERM sent to this process alone is passed on; a terminal's Ctrl-C already reached the child.
    if (signal === 'SIGTERM') child.kill('SIGTERM');
  });
}
child.on('exit', (code, signal) => process.exit(code ?? (signal === null ? 1 : 128)));
