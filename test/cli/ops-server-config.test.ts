/**
 * `trellis server` configuration: flags, then TRELLIS_* environment variables, then the YAML config file,
 * then defaults; unknown keys and bad values refused with typed errors. Parsed in-process with commander,
 * the same way main.ts parses (exitOverride).
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { intBetween } from '../../src/cli/args.js';
import { withServerConfig } from '../../src/cli/ops/server-config.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'trellis-config-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Parses `argv` for a server-like command under `env`; resolves with the options its action saw. */
async function parse(
  argv: readonly string[],
  env: Record<string, string> = {},
): Promise<Record<string, unknown>> {
  const saved = { ...process.env };
  Object.assign(process.env, env);
  try {
    let seen: Record<string, unknown> = {};
    const program = new Command().exitOverride().configureOutput({ writeErr: () => {}, writeOut: () => {} });
    const cmd = program
      .command('server')
      .option('--id <id>')
      .option('--peers <ids>')
      .option('--data <dir>')
      .option('--tick-ms <ms>', 'tick', intBetween(1, 60_000), 20)
      .option('--cluster <id>', 'cluster', 'trellis')
      .option('--user <user>');
    withServerConfig(cmd, ['id', 'peers', 'data'], ['user']).action((o: Record<string, unknown>) => {
      seen = o;
    });
    await program.parseAsync(['node', 'trellis', 'server', ...argv]);
    return seen;
  } finally {
    for (const k of Object.keys(env)) delete process.env[k];
    Object.assign(process.env, saved);
  }
}

describe('trellis server config', () => {
  it('trellis server config - a flag beats the environment, which beats the file, which beats the default', async () => {
    const file = join(dir, 'a.yaml');
    await writeFile(
      file,
      'id: from-file\npeers: [a, b, c]\ndata: /var/lib/t\ntick-ms: 50\ncluster: filecl\n',
    );
    expect(await parse(['--config', file])).toMatchObject({
      id: 'from-file',
      peers: 'a,b,c',
      data: '/var/lib/t',
      tickMs: 50,
      cluster: 'filecl',
    });
    expect(await parse(['--config', file], { TRELLIS_TICK_MS: '30', TRELLIS_ID: 'from-env' })).toMatchObject({
      id: 'from-env',
      tickMs: 30,
      cluster: 'filecl',
    });
    expect(await parse(['--config', file, '--tick-ms', '10'], { TRELLIS_TICK_MS: '30' })).toMatchObject({
      tickMs: 10,
    });
    expect(
      await parse(['--id', 'x', '--peers', 'x', '--data', '/d'], { TRELLIS_CONFIG: file }),
    ).toMatchObject({ id: 'x', tickMs: 50 });
    expect(await parse(['--id', 'x', '--peers', 'x', '--data', '/d'])).toMatchObject({
      tickMs: 20,
      cluster: 'trellis',
    });
  });

  it('trellis server config - unknown keys, bad values, missing required settings and unreadable files are typed errors', async () => {
    const bad = join(dir, 'bad.yaml');
    await writeFile(bad, 'id: a\npeers: a\ndata: /d\ntick-msx: 5\n');
    await expect(parse(['--config', bad])).rejects.toMatchObject({
      code: 'CONFIG',
      message: expect.stringMatching(/unknown setting tickMsx/),
    });
    const badValue = join(dir, 'bad-value.yaml');
    await writeFile(badValue, 'id: a\npeers: a\ndata: /d\ntick-ms: fast\n');
    await expect(parse(['--config', badValue])).rejects.toMatchObject({
      code: 'CONFIG',
      message: expect.stringMatching(/tickMs/),
    });
    await expect(
      parse(['--id', 'a', '--peers', 'a', '--data', '/d'], { TRELLIS_TICK_MS: '0' }),
    ).rejects.toMatchObject({
      code: 'CONFIG',
      message: expect.stringMatching(/TRELLIS_TICK_MS/),
    });
    await expect(parse(['--id', 'a', '--peers', 'a'])).rejects.toMatchObject({
      code: 'USAGE',
      message: expect.stringMatching(/--data is required/),
    });
    const notYaml = join(dir, 'not.yaml');
    await writeFile(notYaml, 'id: [unclosed\n');
    await expect(parse(['--config', notYaml])).rejects.toMatchObject({ code: 'CONFIG' });
    const list = join(dir, 'list.yaml');
    await writeFile(list, '- a\n- b\n');
    await expect(parse(['--config', list])).rejects.toMatchObject({ code: 'CONFIG' });
    await expect(parse(['--config', join(dir, 'missing.yaml')])).rejects.toMatchObject({ code: 'CONFIG' });
    // Credentials keep their own variables: TRELLIS_USER is not read for --user.
    expect(
      await parse(['--id', 'a', '--peers', 'a', '--data', '/d'], { TRELLIS_USER: 'u' }),
    ).not.toHaveProperty('user');
  });
});
