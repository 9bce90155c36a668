/**
 * The Azure public VM trace, `vmtable.csv` (AzurePublicDataset V1 2017 and V2 2019): no header, one VM per row:
 *
 *   vmid, subscriptionid, deploymentid, vmcreated, vmdeleted, maxcpu, avgcpu, p95maxcpu, vmcategory,
 *   vmcorecountbucket, vmmemorybucket
 *
 * Units: `vmcreated`/`vmdeleted` are seconds from the start of the trace; `vmcorecountbucket` is virtual cores
 * (a bucket: "2", "4", "8", "24", or ">24", read as 30); `vmmemorybucket` is GB (a bucket: "2", "4", "8",
 * "32", "64", or ">64", read as 70). A VM asks for cores × 1000 millicores and GB × 1024 MiB; the trace has
 * no disk. The subscription is the tenant; the VM id (a hash) is replaced by `az<line>`, since hashes carry
 * characters request ids may not.
 */
import type { SandboxSpec } from '../../../scheduler/commands.js';
import { TraceFormatError } from '../errors.js';
import type { Arrival } from '../workload.js';
import { byTime, eachRow, intOf, type Row, reqNum, SpecPool, tenantOf } from './csv.js';

export const azureColumns = [
  'vmid',
  'subscriptionid',
  'deploymentid',
  'vmcreated',
  'vmdeleted',
  'maxcpu',
  'avgcpu',
  'p95maxcpu',
  'vmcategory',
  'vmcorecountbucket',
  'vmmemorybucket',
] as const;

/** What an open-ended bucket (">24" cores, ">64" GB) is read as. */
export const azureCoresAbove24 = 30;
export const azureMemoryGbAbove64 = 70;

function bucket(row: Row, column: string, above: number): number {
  const s = row.get(column);
  if (s.startsWith('>')) return above;
  const v = Number(s);
  if (!Number.isFinite(v) || v <= 0)
    throw new TraceFormatError(row.line, column, `not a size bucket: ${JSON.stringify(s.slice(0, 40))}`);
  return v;
}

export async function readAzureVmTable(path: string, limit?: number): Promise<Arrival[]> {
  const pool = new SpecPool();
  const out: Arrival[] = [];
  await eachRow(
    path,
    { header: false, names: azureColumns, ...(limit === undefined ? {} : { limit }) },
    (row) => {
      const created = reqNum(row, 'vmcreated');
      const deleted = reqNum(row, 'vmdeleted');
      if (deleted < created) throw new TraceFormatError(row.line, 'vmdeleted', 'deleted before created');
      const spec: SandboxSpec = {
        tenant: tenantOf(row, 'subscriptionid'),
        resources: {
          cpu: intOf(row, 'vmcorecountbucket', bucket(row, 'vmcorecountbucket', azureCoresAbove24) * 1000),
          memory: intOf(row, 'vmmemorybucket', bucket(row, 'vmmemorybucket', azureMemoryGbAbove64) * 1024),
          disk: 0,
        },
      };
      out.push({
        id: `az${row.line}`,
        atMs: Math.round(created * 1000),
        spec: pool.get(spec),
        lifetimeMs: Math.max(1, Math.round((deleted - created) * 1000)),
      });
    },
  );
  return byTime(out);
}
