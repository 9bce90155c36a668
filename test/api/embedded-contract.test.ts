/** The SchedulerApi contract against the embedded scheduler (three in-process Raft replicas). */
import { createScheduler } from '../../scheduler/scheduler.js';
import { schedulerContract } from './contract.js';

schedulerContract('embedded scheduler', async () => {
  const s = createScheduler();
  return { api: s, close: () => s.close() };
});
