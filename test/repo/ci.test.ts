import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('../../', import.meta.url));
const read = (path: string): string => readFileSync(`${root}${path}`, 'utf8');

/** The two commands of the README's first code block: [main job, tests]. */
function readmeCommands(): string[] {
  const match = /```(?:sh|bash|shell)?\n([\s\S]*?)```/.exec(read('README.md'));
  expect(match, 'README.md has no code block').not.toBeNull();
  return (match?.[1] ?? '')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));
}

describe('repo/ci', () => {
  it('repo/ci - the README starts with exactly two commands and .ci/run runs the second verbatim', () => {
    // Checks CI proves the README: .ci/run holds `set -euo pipefail` and the README's test command, nothing else.
    const commands = readmeCommands();
    expect(commands).toHaveLength(2);
    const testCommand = commands[1] ?? '';
    const ciLines = read('.ci/run')
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l !== '' && !l.startsWith('#'));
    expect(ciLines).toEqual(['set -euo pipefail', testCommand]);
  });

  it('repo/ci - every npm script the README commands name exists', () => {
    // Checks the commands cannot silently point at a script that was renamed.
    const scripts = (JSON.parse(read('package.json')) as { scripts: Record<string, string> }).scripts;
    for (const command of readmeCommands()) {
      for (const [, name] of command.matchAll(/npm (?:run )?([\w:-]+)/g)) {
        if (name === 'ci' || name === 'start' || name === 'test') continue;
        expect(Object.keys(scripts)).toContain(name);
      }
    }
    expect(Object.keys(scripts)).toContain('start');
  });
});
