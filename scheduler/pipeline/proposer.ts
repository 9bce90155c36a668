/**
 * Stage 5, the proposer: one `place` command, hence one Raft entry, per verified batch. It stamps the
 * leader's clock into the command (apply never reads a clock) and returns the per-item results.
 */
import type { PlaceItem } from '../commands.js';
import { commandCodec } from '../commands.js';
import { errorFromResult } from '../errors.js';
import type { ReplicaLog } from '../log.js';
import type { PlaceItemResult } from '../state.js';

export async function proposePlace(
  log: Pick<ReplicaLog, 'propose'>,
  items: readonly PlaceItem[],
  nowMs: number,
): Promise<readonly PlaceItemResult[]> {
  const result = await log.propose(commandCodec.encode({ type: 'place', atMs: nowMs, items: [...items] }));
  if (!result.ok) throw errorFromResult(result.error);
  return result.items ?? [];
}
