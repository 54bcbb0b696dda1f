/** Flags every command shares, and turning config errors into exit 2. */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { loadConfig, resolveConfigPath, ConfigError } from '../config/load.js';
import type { Config } from '../config/types.js';
import { UsageError } from './command.js';

export const CONFIG_FLAG = { config: { type: 'string' }, help: { type: 'boolean', short: 'h' } } as const;

export function parse<T extends NonNullable<ParseArgsConfig['options']>>(argv: string[], options: T, allowPositionals = false) {
  try {
    return parseArgs({ args: argv, options, allowPositionals, strict: true });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

export function configFrom(flag: string | undefined): Config {
  const file = resolveConfigPath(flag, process.env);
  return loadConfig(file === null ? { env: process.env } : { file, env: process.env });
}

export { ConfigError };
