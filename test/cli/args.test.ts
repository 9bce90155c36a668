import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InvalidArgumentError } from 'commander';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  durationMs,
  hostPort,
  intBetween,
  natsUrls,
  nonNegativeInt,
  port,
  positiveInt,
} from '../../src/cli/args.js';
import { resolveCredentials } from '../../src/cli/connect.js';
import { failureOf } from '../../src/cli/errors.js';
import { ConfigError } from '../../src/lib/errors.js';
import { planNatsUsers } from '../../src/nats/config.js';

describe('trellis cli - argument parsers', () => {
  it('trellis cli - numbers parse whole or not at all', () => {
    // Number.parseInt read '1.5' as 1 and '12abc' as 12, and 'abc' became NaN; every one of these is refused.
    for (const bad of [
      'abc',
      '-5',
      '1.5',
      '12abc',
      '',
      ' ',
      '1e3',
      '0x10',
      'NaN',
      'Infinity',
      '99999999999999999999',
    ])
      expect(() => positiveInt(bad), bad).toThrow(InvalidArgumentError);
    expect(() => positiveInt('0')).toThrow(InvalidArgumentError);
    expect(positiveInt('42')).toBe(42);
    expect(positiveInt(' 7 ')).toBe(7);
    expect(nonNegativeInt('0')).toBe(0);
    expect(() => intBetween(1, 10)('11')).toThrow(/1\.\.10/);
    expect(port('4222')).toBe(4222);
    for (const bad of ['0', '65536', '-1', 'http'])
      expect(() => port(bad), bad).toThrow(InvalidArgumentError);
  });

  it('trellis cli - durations take ms, s and m, at least 1 ms and at most a day', () => {
    expect(durationMs('250')).toBe(250);
    expect(durationMs('250ms')).toBe(250);
    expect(durationMs('5s')).toBe(5_000);
    expect(durationMs('2m')).toBe(120_000);
    for (const bad of ['0', '-1', '1.5s', '5h', 'soon', '', '2d', '1441m'])
      expect(() => durationMs(bad), bad).toThrow(InvalidArgumentError);
  });

  it('trellis cli - NATS URLs and listen addresses are checked before anything waits on them', () => {
    expect(natsUrls('nats://127.0.0.1:4222')).toBe('nats://127.0.0.1:4222');
    expect(natsUrls('127.0.0.1:4222, tls://h:4443')).toBe('127.0.0.1:4222,tls://h:4443');
    for (const bad of ['http://127.0.0.1:4222', 'nats://:::bad', 'nats://127.0.0.1:99999', 'nats://', 'a b'])
      expect(() => natsUrls(bad), bad).toThrow(InvalidArgumentError);
    expect(hostPort('127.0.0.1:4222')).toBe('127.0.0.1:4222');
    for (const bad of ['nohost', '127.0.0.1:', ':4222', 'h:70000'])
      expect(() => hostPort(bad), bad).toThrow();
  });

  it('trellis cli - failures map to one line and an exit code by kind', () => {
    expect(failureOf(new InvalidArgumentError('bad\n(Did you mean x?)'))).toEqual({
      line: 'error: bad (Did you mean x?) (USAGE)',
      exitCode: 2,
    });
    expect(failureOf(new ConfigError('no such file'))).toEqual({
      line: 'error: no such file (CONFIG)',
      exitCode: 2,
    });
    expect(failureOf(new TypeError('x is undefined'))).toMatchObject({ exitCode: 70 });
    expect(failureOf(new TypeError('x')).line).toMatch(/\(INTERNAL\)$/);
  });
});

describe('trellis cli - credentials', () => {
  let dir: string;
  let file: string;
  const plan = planNatsUsers('c', ['r1', 'r2'], ['n1'], ['api']);

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'trellis-creds-'));
    file = join(dir, 'credentials.json');
    await writeFile(file, JSON.stringify(plan));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });
  const pw = (user: string): string => plan.users.find((u) => u.user === user)?.password ?? '';

  it('trellis cli - flags win over the environment; a user needs a password and the reverse', () => {
    expect(resolveCredentials({}, {})).toBeUndefined();
    expect(resolveCredentials({ user: 'u', password: 'p' }, { TRELLIS_NATS_USER: 'e' })).toEqual({
      user: 'u',
      pass: 'p',
    });
    expect(resolveCredentials({}, { TRELLIS_NATS_USER: 'e', TRELLIS_NATS_PASSWORD: 'q' })).toEqual({
      user: 'e',
      pass: 'q',
    });
    expect(resolveCredentials({ user: 'u', pass: 'old' }, {})).toEqual({ user: 'u', pass: 'old' });
    expect(() => resolveCredentials({ user: 'u' }, {})).toThrow(/needs a password/);
    expect(() => resolveCredentials({ password: 'p' }, {})).toThrow(/without a user/);
  });

  it('trellis cli - a credentials.json gives a replica its own user and a client the only client user', () => {
    expect(resolveCredentials({ creds: file }, {}, 'replica-r2')).toEqual({
      user: 'replica-r2',
      pass: pw('replica-r2'),
    });
    expect(resolveCredentials({}, { TRELLIS_NATS_CREDS: file })).toEqual({
      user: 'client-api',
      pass: pw('client-api'),
    });
    expect(resolveCredentials({ creds: file, user: 'node-n1' }, {})).toEqual({
      user: 'node-n1',
      pass: pw('node-n1'),
    });
    expect(() => resolveCredentials({ creds: file, user: 'nobody' }, {})).toThrow(/no user nobody/);
    expect(() => resolveCredentials({ creds: join(dir, 'missing.json') }, {})).toThrow(ConfigError);
  });

  it('trellis cli - nats-config plans refuse an id listed twice', () => {
    expect(() => planNatsUsers('c', ['a', 'b', 'a'], [])).toThrow(/listed twice/);
    expect(() => planNatsUsers('c', ['a'], ['n', 'n'])).toThrow(/listed twice/);
    expect(() => planNatsUsers('c', ['a'], [], ['api', 'api'])).toThrow(/listed twice/);
  });
});
