/** Flags every command shares, and turning config errors into exit 2. */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { loadConfigWithWarnings, resolveConfigPath, ConfigError, type ConfigWarning } from '../config/load.js';
import type { Config } from '../config/types.js';
import pino from 'pino';
import { UsageError, err } from './command.js';
import { createLogger } from '../log.js';
import { openRuntime, type Runtime } from '../runtime.js';
import { hostPlatform, parsePlatform, type Platform } from '../oci/platform.js';
import { parseImageReference } from '../oci/paths.js';

export const CONFIG_FLAG = { config: { type: 'string' }, help: { type: 'boolean', short: 'h' } } as const;
export const COMMON_FLAGS = { ...CONFIG_FLAG, verbose: { type: 'boolean', short: 'v' }, json: { type: 'boolean' } } as const;

export function parse<T extends NonNullable<ParseArgsConfig['options']>>(argv: string[], options: T, allowPositionals = false) {
  try {
    return parseArgs({ args: argv, options, allowPositionals, strict: true });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

/**
 * The configuration a command runs with. Warnings (BERTH_* variables that name
 * no key) go to `warn`; by default they are printed on stderr as
 * "berth: warning: …" (a command's logger, if any, is made from the config).
 */
export function configFrom(flag: string | undefined, warn: (w: ConfigWarning) => void = printWarning): Config {
  const file = resolveConfigPath(flag, process.env);
  const { config, warnings } = loadConfigWithWarnings(file === null ? { env: process.env } : { file, env: process.env });
  for (const w of warnings) warn(w);
  return config;
}

function printWarning(w: ConfigWarning): void {
  err(`berth: warning: ${w.message}`);
}

/** The cache, upstreams and mirror for a command that runs beside (or without) the daemon. */
export async function withRuntime<T>(config: Config, verbose: boolean, fn: (rt: Runtime) => Promise<T>): Promise<T> {
  // Commands print their own results on stdout; logs go to stderr, quiet unless asked.
  const logger = createLogger(verbose ? 'info' : 'warn', pino.destination(2));
  const rt = await openRuntime(config, logger, { daemon: false });
  try {
    return await fn(rt);
  } finally {
    await rt.close();
  }
}

/** Platform flags shared by prefetch and export. */
export function platformsFrom(values: string[] | undefined, configured: string[] = []): Platform[] {
  const list = values && values.length > 0 ? values : configured;
  try {
    return list.length > 0 ? list.map(parsePlatform) : [hostPlatform()];
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

/**
 * IMAGE arguments, checked before anything is opened, fetched or written: a malformed one is bad
 * usage (exit 2), not an image that failed (exit 1).
 */
export function checkImageArgs(images: readonly string[]): void {
  for (const image of images) {
    try {
      parseImageReference(image);
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
  }
}

export { ConfigError };
