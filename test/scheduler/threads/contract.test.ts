/**
 * The SchedulerApi contract against the embedded scheduler with its followers on worker threads
 * (`createScheduler({ threads: true })`): the same behaviour as on the one-thread group.
 */
import { createScheduler } from '../../../scheduler/scheduler.js';
import { schedulerContract } from '../../api/contract.js';

schedulerContract('embedded scheduler on worker threads', async () => {
  const s = createScheduler({ threads: true });
  return { api: s, close: () => s.close() };
});
