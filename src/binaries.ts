/**
 * Finding the programs Trellis runs (nats-server for tests, qemu-system-x86_64 and qemu-img for the qemu
 * driver): on PATH and in the sbin directories Debian installs servers into. Production code and the test
 * helpers share this one lookup, so a missing program fails the same way everywhere.
 */
import { execFileSync } from 'node:child_process';
import { UnavailableError } from './lib/errors.js';

/** Resolves a binary; throws UnavailableError naming the Debian package that provides it. */
export function findBinary(name: string, debianPackage: string): string {
  const path = `${process.env.PATH ?? ''}:/usr/sbin:/usr/local/sbin:/sbin`;
  try {
    return execFileSync('sh', ['-c', `command -v ${name}`], { env: { ...process.env, PATH: path } })
      .toString()
      .trim();
  } catch {
    throw new UnavailableError(
      `${name} is not installed; run: apt-get update && apt-get install -y ${debianPackage} (or: bash scripts/ensure-services.sh)`,
    );
  }
}
