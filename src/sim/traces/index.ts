/** The trace readers by format name (see each file for its columns and units). */
import { ConfigError } from '../../lib/errors.js';
import type { TraceWorkload } from '../spec.js';
import type { Arrival } from '../workload.js';
import { readAlibabaBatchTask, readAlibabaGpuPods } from './alibaba.js';
import { readAzureVmTable } from './azure.js';
import { readGenericCsv } from './csv.js';

export { readAlibabaBatchTask, readAlibabaGpuNodes, readAlibabaGpuPods } from './alibaba.js';
export { readAzureVmTable } from './azure.js';
export { eachRow, readGenericCsv } from './csv.js';

/**
 * A trace's arrivals. `notes`, when given, receives a line for what the reader left out on purpose (rows of
 * a batch_task trace without a plan), so a caller can say so beside the results.
 */
export async function readTrace(t: TraceWorkload['trace'], notes?: string[]): Promise<Arrival[]> {
  switch (t.format) {
    case 'csv':
      if (t.columns === undefined)
        throw new ConfigError('trace.columns: a generic CSV needs a column mapping');
      return readGenericCsv(t.path, t.columns, {
        ...(t.header === undefined ? {} : { header: t.header }),
        ...(t.limit === undefined ? {} : { limit: t.limit }),
      });
    case 'azure-vmtable':
      return readAzureVmTable(t.path, t.limit);
    case 'alibaba-2018-batch-task': {
      const read = await readAlibabaBatchTask(t.path, t.limit === undefined ? {} : { limit: t.limit });
      if (read.skipped > 0)
        notes?.push(`${t.path}: ${read.skipped} rows without a plan (empty plan_cpu or plan_mem) skipped`);
      return read.arrivals;
    }
    case 'alibaba-gpu-2023-pods':
      return readAlibabaGpuPods(t.path, t.limit);
  }
}
