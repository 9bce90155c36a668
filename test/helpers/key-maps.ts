import { keyMapTuning } from '../../scheduler/core/slot-table.js';

/**
 * Runs `run` with the SlotTable's key map lowered (16 cells, slack 32, moves spread over almost all of a new
 * table's room, compaction instead of renumber past 64 live keys), so that growth, reads mid-move, compaction
 * and renumber are all reached with few keys; the production tuning is back afterwards, even on a failure.
 */
export function withSmallKeyMaps(run: () => void): void {
  const production = { ...keyMapTuning };
  Object.assign(keyMapTuning, {
    initialCells: 16,
    holesSlackMin: 32,
    moveSpread: 1.1,
    renumberAtOnceMax: 64,
  });
  try {
    run();
  } finally {
    Object.assign(keyMapTuning, production);
  }
}
