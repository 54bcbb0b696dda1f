/**
 * The one way in: find the file, lay it over the built-in defaults, apply
 * BERTH_<SECTION>_<KEY> variables, validate every key, freeze. Secrets are
 * not read here but where they are used (secret.ts).
 * Any problem is a ConfigError naming the key and where the value came from;
 * a BERTH_* variable that names no key is a warning, returned with the config.
 */
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { DEFAULTS } from './defaults.js';
import { BUILT_IN, ConfigError, type ConfigWarning } from './errors.js';
import { deepFreeze } from './freeze.js';
import { buildLayers, readToml } from './layers.js';
import { SECRET_KEYS } from './schema.js';
import { REDACTED, Secret, SiteKey } from './secret.js';
import { buildAirgap, buildCache, buildHarbor, buildLog, buildPeers, buildPrefetch, buildServer, buildUpstreams } from './sections.js';
import type { Config } from './types.js';

export { ConfigError, type ConfigWarning } from './errors.js';

export interface LoadOptions {
  /** The config file; undefined or null: built-in defaults (plus the environment). */
  file?: string | null;
  /** Defaults to process.env. */
  env?: NodeJS.ProcessEnv;
  /** Relative paths (the file, cache.dir, *_file keys) are taken from here; defaults to process.cwd(). */
  cwd?: string;
}

/**
 * Which file to load: `--config FILE`, else $BERTH_CONFIG, else the system
 * file when it exists, else null (built-in defaults). An empty flag or
 * variable counts as unset (systemd's `Environment=BERTH_CONFIG=` clears it).
 */
export function resolveConfigPath(flag?: string, env: NodeJS.ProcessEnv = process.env, systemFile: string = DEFAULTS.configFile): string | null {
  if (flag !== undefined && flag !== '') return flag;
  const fromEnv = env[DEFAULTS.configEnv];
  if (fromEnv !== undefined && fromEnv !== '') return fromEnv;
  return existsSync(systemFile) ? systemFile : null;
}

export interface LoadedConfig {
  config: Config;
  /** BERTH_* variables that name no key and were ignored: the caller logs or prints them. */
  warnings: ConfigWarning[];
}

/**
 * Typed as the plain Config contract so every consumer can take a `Config`;
 * at run time the whole tree is frozen and any assignment throws.
 */
export function loadConfigWithWarnings(opts: LoadOptions = {}): LoadedConfig {
  const env = opts.env ?? process.env;
  const cwd = opts.cwd ?? process.cwd();
  const file = opts.file ?? null;
  const source = file === null ? null : resolve(cwd, file);
  const label = file ?? BUILT_IN;
  const doc = source === null ? null : readToml(label, source);

  const layers = buildLayers(doc, label, env, cwd);
  const server = buildServer(layers.server);
  const cache = buildCache(layers.cache);
  const log = buildLog(layers.log);
  const airgap = buildAirgap(layers.airgap);
  const harbor = layers.harbor === null ? null : buildHarbor(layers.harbor);
  const peers = layers.peers === null ? null : buildPeers(layers.peers, server);
  if (layers.upstreams.length === 0) {
    throw new ConfigError(label, 'upstream', 'is empty: berth needs at least one [[upstream]] (registry and url)');
  }
  const upstreams = buildUpstreams(layers.upstreams, harbor);
  const prefetch = buildPrefetch(layers.prefetch, upstreams);

  const config: Config = { source, server, cache, log, airgap, upstreams, harbor, peers, prefetch };
  deepFreeze(config);
  return { config, warnings: layers.warnings };
}

/** loadConfigWithWarnings for callers that have no one to tell (tests, a config checked before it is installed). */
export function loadConfig(opts: LoadOptions = {}): Config {
  return loadConfigWithWarnings(opts).config;
}

/**
 * Reads every secret the config names (password_file, the site key_file with
 * its 32-byte minimum) and returns the problems, each a
 * ConfigError naming the key and the file. `berth serve` refuses to start on
 * the first (its daemon uses them all); `berth config` reports them.
 */
export function unreadableSecrets(config: Config): ConfigError[] {
  const secrets = [...config.upstreams.map((u) => u.password), config.harbor?.password, config.peers?.key];
  const problems: ConfigError[] = [];
  for (const secret of secrets) {
    try {
      secret?.reveal();
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      problems.push(err);
    }
  }
  return problems;
}

function redact(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(redact);
  if (typeof value !== 'object' || value === null) return value;
  if (value instanceof Secret || value instanceof SiteKey) return REDACTED;
  const out: Record<string, unknown> = {};
  for (const [key, child] of Object.entries(value)) {
    out[key] = SECRET_KEYS.has(key) && child !== undefined ? REDACTED : redact(child);
  }
  return out;
}

/** A plain, mutable copy for printing (`berth config`, debug logs) with every secret replaced by "<redacted>". */
export function redactedConfig(c: Config): object {
  return redact(c) as object;
}
