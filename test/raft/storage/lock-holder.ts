/**
 * A child process for the dir-lock tests: `node --import tsx lock-holder.ts DIR` opens FileStorage on DIR
 * (which takes the lock), prints one line `locked <pid>` or `refused <code> <holderPid>`, and on success holds
 * the directory until its stdin closes, then closes the storage and exits.
 */
import { FileStorage } from '../../../raft/storage/file.js';
import { TrellisError } from '../../../src/lib/errors.js';

const dir = process.argv[2] ?? '';
try {
  const s = await FileStorage.open(dir, { fsync: false });
  process.stdout.write(`locked ${process.pid}\n`);
  process.stdin.resume();
  process.stdin.on('end', () => {
    void s.close().then(() => process.exit(0));
  });
} catch (err) {
  const holder = (err as { holderPid?: number }).holderPid ?? '';
  process.stdout.write(
    err instanceof TrellisError ? `refused ${err.code} ${holder}\n` : `failed ${String(err)}\n`,
  );
  process.exit(1);
}
