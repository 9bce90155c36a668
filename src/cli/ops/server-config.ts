/**
 * `trellis server`'s configuration from three places, first match wins: the flag, its environment
 * variable (`TRELLIS_<NAME>`), then the optional config file (`--config FILE` or `TRELLIS_CONFIG`), then
 * the flag's default. The file is YAML (parsed by `yaml`, the well-kept YAML 1.2 parser), a flat map whose
 * keys are the long flag names without dashes (`tick-ms: 20`, or `tickMs: 20`); an unknown key is refused,
 * so a typo does not silently leave a default in place. Every value goes through the flag's own parser.
 */
import { readFileSync } from 'node:fs';
import { type Command, InvalidArgumentError, type Option } from 'commander';
import { ConfigError } from '../../lib/errors.js';
import { UsageError } from '../errors.js';

/** The largest config file read, in bytes: a flat map of flags is far smaller. */
export const configFileBytesMax = 64 << 10;

/** `tick-ms` and `tickMs` both name the option whose attribute is `tickMs`. */
const camel = (s: string): string => s.replace(/-([a-z])/g, (_m, c: string) => c.toUpperCase());
const envName = (attr: string): string => `TRELLIS_${attr.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()}`;

/** The file's settings; `yaml` is loaded here, by a command given a config file, not at every CLI start. */
async function readConfigFile(file: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read config file ${file}: ${(err as Error).message}`);
  }
  if (text.length > configFileBytesMax)
    throw new ConfigError(`config file ${file} is over ${configFileBytesMax} bytes`);
  const { parse: parseYaml } = await import('yaml');
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    throw new ConfigError(`config file ${file} is not YAML: ${(err as Error).message.split('\n')[0]}`);
  }
  if (doc === null || doc === undefined) return {};
  if (typeof doc !== 'object' || Array.isArray(doc))
    throw new ConfigError(`config file ${file} must be a map of flags`);
  return Object.fromEntries(Object.entries(doc).map(([k, v]) => [camel(k), v]));
}

/**
 * Adds `--config` to `cmd` and, before its action runs, fills every option not given as a flag from its
 * environment variable or the config file. `required` options must then have a value from one of them.
 * Options listed in `noEnv` keep their own environment handling (e.g. credentials in connect.ts).
 */
export function withServerConfig(
  cmd: Command,
  required: readonly string[],
  noEnv: readonly string[] = [],
): Command {
  cmd.option('--config <file>', 'YAML file with any of these flags by name (flags and TRELLIS_* env win)');
  cmd.hook('preAction', async (c) => {
    const file = (c.getOptionValue('config') as string | undefined) ?? process.env.TRELLIS_CONFIG;
    const fromFile = file === undefined || file === '' ? {} : await readConfigFile(file);
    const options = new Map<string, Option>(c.options.map((o) => [o.attributeName(), o]));
    for (const key of Object.keys(fromFile)) {
      if (!options.has(key) || key === 'config')
        throw new ConfigError(`config file ${file}: unknown setting ${key}`);
    }
    for (const [attr, option] of options) {
      if (attr === 'config' || c.getOptionValueSource(attr) === 'cli') continue;
      const env = noEnv.includes(attr) ? undefined : process.env[envName(attr)];
      const [raw, source] =
        env !== undefined && env !== '' ? [env, 'env' as const] : [fromFile[attr], 'config' as const];
      if (raw === undefined || raw === null) continue;
      c.setOptionValueWithSource(
        attr,
        parseValue(option, raw, source === 'env' ? envName(attr) : `${file}: ${attr}`),
        source,
      );
    }
    for (const attr of required) {
      if (c.getOptionValue(attr) === undefined) {
        const flag = options.get(attr)?.long ?? attr;
        throw new UsageError(`${flag} is required (as a flag, ${envName(attr)}, or in the config file)`);
      }
    }
  });
  return cmd;
}

function parseValue(option: Option, raw: unknown, where: string): unknown {
  if (option.isBoolean()) {
    if (typeof raw === 'boolean') return raw;
    if (raw === 'true' || raw === '1') return true;
    if (raw === 'false' || raw === '0') return false;
    throw new ConfigError(`${where}: ${JSON.stringify(raw)} is not true or false`);
  }
  const text = Array.isArray(raw) ? raw.map(String).join(',') : String(raw);
  if (option.argChoices !== undefined && !option.argChoices.includes(text)) {
    throw new ConfigError(`${where}: ${JSON.stringify(text)} is not one of ${option.argChoices.join(', ')}`);
  }
  const parse = option.parseArg as ((value: string, previous: unknown) => unknown) | undefined;
  if (parse === undefined) return text;
  try {
    return parse(text, undefined);
  } catch (err) {
    if (err instanceof InvalidArgumentError) throw new ConfigError(`${where}: ${err.message}`);
    throw err;
  }
}
