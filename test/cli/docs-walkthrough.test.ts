/**
 * docs/operations.md's walkthrough, run as written: the fenced blocks marked `<!-- test: walkthrough start -->`
 * (nats-server and three `trellis server` processes, started in the background) and
 * `<!-- test: walkthrough -->` (the CLI session) are extracted from the doc and run by bash against real
 * processes, so the doc cannot drift from the commands. Only the NATS port (4222) and the data directory
 * (/tmp/trellis-demo) are replaced, by a free port and a temporary directory. Every shell block of the
 * walkthrough section must carry a marker, so a command added to it without a test fails here.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, openSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cliMain } from '../../src/testing/replica-process.js';
import { findBinary, freePort } from '../../src/testing/servers.js';

const repo = join(import.meta.dirname, '..', '..');
const operations = join(repo, 'docs', 'operations.md');
const docPort = '4222';
const docDir = '/tmp/trellis-demo';
/**
 * Longest the CLI session may take: 15 CLI starts, one waiting for an election. Each takes about a second
 * on an idle machine, but 4 to 9 s were seen on 2 shared cores at load 13.
 */
const sessionMsMax = 240_000;

interface Walkthrough {
  readonly start: string;
  readonly session: string;
  /** Shell blocks in the walkthrough section, marked or not. */
  readonly shellBlocks: number;
}

async function walkthrough(): Promise<Walkthrough> {
  const docs = await readFile(operations, 'utf8');
  const from = docs.indexOf('## Walkthrough');
  expect(from, 'docs/operations.md has a "## Walkthrough" section').toBeGreaterThan(0);
  const to = docs.indexOf('\n## ', from + 1);
  const section = docs.slice(from, to === -1 ? undefined : to);
  const marked = [...section.matchAll(/<!-- test: (walkthrough(?: start)?) -->\n```sh\n([\s\S]*?)```/g)];
  const block = (kind: string): string => {
    const found = marked.filter((m) => m[1] === kind);
    expect(found, `one block marked ${kind}`).toHaveLength(1);
    return found[0]?.[2] ?? '';
  };
  return {
    start: block('walkthrough start'),
    session: block('walkthrough'),
    shellBlocks: [...section.matchAll(/```sh\n/g)].length,
  };
}

describe('trellis cli - the docs/operations.md walkthrough runs as written', () => {
  let dir: string;
  let port: number;
  let starter: ChildProcess | undefined;
  let doc: Walkthrough;
  const env = (): NodeJS.ProcessEnv => ({
    ...process.env,
    // The doc says `nats-server`; find it where the test helpers do, even off PATH.
    PATH: `${dirname(findBinary('nats-server', 'nats-server'))}:${process.env.PATH ?? ''}`,
    TRELLIS_LOG_LEVEL: 'warn',
    TRELLIS_DEBUG: '',
  });
  const localise = (block: string): string => {
    expect(block).toContain(docPort);
    return block.replaceAll(docPort, String(port)).replaceAll(docDir, dir);
  };

  beforeAll(async () => {
    expect(existsSync(cliMain), `${cliMain} missing: run npm run build first`).toBe(true);
    doc = await walkthrough();
    dir = await mkdtemp(join(tmpdir(), 'trellis-walkthrough-'));
    port = await freePort();
    expect(doc.start).toContain(docDir);
    // Its own process group, so the background servers it leaves behind are stopped together afterwards.
    const log = openSync(join(dir, 'servers.log'), 'a');
    starter = spawn('bash', ['-euc', localise(doc.start)], {
      cwd: repo,
      env: env(),
      detached: true,
      stdio: ['ignore', log, log],
    });
    const code = await new Promise<number | null>((resolve) => starter?.once('exit', resolve));
    expect(code, 'the start block exits once it has started the servers').toBe(0);
  });
  afterAll(async () => {
    const group = starter?.pid;
    if (group !== undefined) {
      signalGroup(group, 'SIGTERM');
      for (let i = 0; i < 100 && groupAlive(group); i++) await sleep(50);
      signalGroup(group, 'SIGKILL');
    }
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  it('trellis cli - every shell block of the walkthrough is marked and so run here', () => {
    expect(doc.shellBlocks).toBe(2);
  });

  it(
    'trellis cli - the walkthrough session succeeds against three trellis server processes',
    async () => {
      const session = spawn('bash', ['-euo', 'pipefail', '-c', localise(doc.session)], {
        cwd: repo,
        env: env(),
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stdout = '';
      let stderr = '';
      session.stdout.on('data', (d: Buffer) => {
        stdout += d.toString('utf8');
      });
      session.stderr.on('data', (d: Buffer) => {
        stderr += d.toString('utf8');
      });
      const timer = setTimeout(() => session.kill('SIGKILL'), sessionMsMax);
      const code = await new Promise<number | null>((resolve) => session.once('close', resolve));
      clearTimeout(timer);
      const servers = await readFile(join(dir, 'servers.log'), 'utf8').catch(() => '');
      expect(code, `session failed:\n${stdout}\n${stderr}\nservers:\n${servers}`).toBe(0);
      // What the session printed: both sandboxes placed, web-1 gone after terminate, five watched events.
      expect(stdout).toMatch(/web-1\s+n[12]\s+placed/);
      expect(stdout).toMatch(/web-2\s+n[12]\s+placed/);
      expect(stdout).toMatch(/Leader\s+r[123]\n/);
      // The last `ls` (after terminate): its rows run from its header to the first watch line.
      const lines = stdout.split('\n');
      const header = lines.findLastIndex((l) => /^ID\s+TENANT\s+STATE/.test(l));
      expect(header).toBeGreaterThan(0);
      const afterHeader = lines.slice(header + 1);
      const end = afterHeader.findIndex((l) => /^\d+\s+(node|sandbox)\s/.test(l));
      const lastList = afterHeader.slice(0, end).join('\n');
      expect(lastList, stdout).toMatch(/^web-2\s+t1\s+placed/);
      expect(lastList).not.toContain('web-1');
      expect(stdout.split('\n').filter((l) => /^\d+\s+(node|sandbox)\s/.test(l))).toHaveLength(5);
      // `members list` (JSON, the last line): three voters, all reachable.
      const members = JSON.parse(stdout.trim().split('\n').at(-1) ?? '{}') as { voters?: string[] };
      expect(members.voters).toEqual(['r1', 'r2', 'r3']);
    },
    sessionMsMax + 10_000,
  );
});

function signalGroup(group: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-group, signal);
  } catch {
    // Already gone.
  }
}

function groupAlive(group: number): boolean {
  try {
    process.kill(-group, 0);
    return true;
  } catch {
    return false;
  }
}
