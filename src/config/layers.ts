/**
 * Builds the merged tables the loader validates: built-in defaults, then the
 * file, then BERTH_<SECTION>_<KEY> variables, each value tagged with its origin.
 * Shape errors (a section that is not a table, an unknown section) are caught
 * here, and variables naming no key are set aside as warnings; key-level
 * checks happen in sections.ts.
 */
import { readFileSync } from 'node:fs';
import { parse, TomlError } from 'smol-toml';
import { DEFAULTS } from './defaults.js';
import { BUILT_IN, ConfigError, envOrigin, type ConfigWarning } from './errors.js';
import { type Entry, Fields } from './fields.js';
import { isListSection, isTableSection, LIST_SECTIONS, SECTION_NAMES, TABLE_SECTIONS, type TableSection } from './schema.js';

export interface Layers {
  server: Fields;
  cache: Fields;
  log: Fields;
  airgap: Fields;
  /** null when neither the file nor the environment mentions Harbor. */
  harbor: Fields | null;
  /** null when neither the file nor the environment mentions peers. */
  peers: Fields | null;
  upstreams: Fields[];
  prefetch: Fields[];
  /** BERTH_* variables that name no key, ignored. */
  warnings: ConfigWarning[];
}

type Doc = Record<string, unknown>;

function isTable(v: unknown): v is Doc {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Date);
}

function add(map: Map<string, Entry>, values: object, origin: string): void {
  for (const [key, value] of Object.entries(values)) map.set(key, { value, origin });
}

/** Reads and parses the file; the label is how errors name it (the path as the user gave it). */
export function readToml(label: string, path: string): Doc {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(label, '', `cannot read the config file: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
  }
  try {
    return parse(text);
  } catch (err) {
    if (!(err instanceof TomlError)) throw err;
    // The parser's own words and the position only: its code frame quotes the file's lines, which may hold a secret.
    const what = (err.message.split('\n')[0] ?? '').replace(/^Invalid TOML document: /, '');
    throw new ConfigError(label, '', `invalid TOML at line ${err.line}, column ${err.column}: ${what}`);
  }
}

function checkTopLevel(doc: Doc, file: string): void {
  for (const [name, value] of Object.entries(doc)) {
    if (isTableSection(name)) {
      if (!isTable(value)) throw new ConfigError(file, name, `expected a [${name}] table`);
    } else if (isListSection(name)) {
      if (!Array.isArray(value)) throw new ConfigError(file, name, `expected a list of tables: write [[${name}]], not [${name}]`);
      value.forEach((item: unknown, i) => {
        if (!isTable(item)) throw new ConfigError(file, `${name}[${i}]`, `expected a table: write [[${name}]]`);
      });
    } else {
      throw new ConfigError(file, name, `unknown key at the top level (known sections: ${SECTION_NAMES.join(', ')})`);
    }
  }
}

function coerceBool(s: string, origin: string, key: string): boolean {
  const v = s.trim().toLowerCase();
  if (v === 'true' || v === '1') return true;
  if (v === 'false' || v === '0') return false;
  throw new ConfigError(origin, key, `expected true, false, 1 or 0, got ${JSON.stringify(s.slice(0, 40))}`);
}

/**
 * The names the kubelet gives every pod for each Service of its namespace
 * (pkg/kubelet/envvars: <NAME>_SERVICE_HOST, <NAME>_SERVICE_PORT[_<PORTNAME>],
 * <NAME>_PORT[_<port>_<PROTO>[_PROTO|_PORT|_ADDR]]); the first group is the
 * Service name, upper-cased with dashes turned into underscores.
 */
const SERVICE_LINK = /^(.+?)_(?:SERVICE_HOST|SERVICE_PORT(?:_.+)?|PORT(?:_\d+_(?:TCP|UDP|SCTP)(?:_(?:PROTO|PORT|ADDR))?)?)$/;

/** Why a name is ignored, and for a service link where it came from and how to stop it. */
function ignored(name: string, key: string, problem: string): ConfigWarning {
  const file = envOrigin(name);
  const service = SERVICE_LINK.exec(name)?.[1];
  const hint = service === undefined ? '' : `; if Kubernetes set it (service links of a Service named "${service.toLowerCase().replaceAll('_', '-')}"), set enableServiceLinks: false in the pod spec`;
  return { file, key, message: `${file}: ${key}: ${problem}; ignored${hint}` };
}

interface Overrides {
  sections: Map<TableSection, Map<string, Entry>>;
  warnings: ConfigWarning[];
}

/**
 * BERTH_CACHE_MAX_SIZE -> cache.max_size: the first word is the section, the
 * rest, lower-cased, the key. Values are strings, coerced by the key's kind;
 * a list is comma-separated. Sorted so the first error is the same every run.
 *
 * A name that is no key is a warning, not an error: Kubernetes puts
 * BERTH_PORT=tcp://… into every pod of a namespace with a Service named
 * berth (BERTH_SERVER_PORT for berth-server…), and a daemon that refused
 * those would crash-loop on every node. A bad value for a real key is still
 * an error, as is a key set where it cannot be (a list section, an inline
 * table such as peers.kubernetes, a password).
 */
function envOverrides(env: NodeJS.ProcessEnv): Overrides {
  const sections = new Map<TableSection, Map<string, Entry>>();
  const warnings: ConfigWarning[] = [];
  for (const name of Object.keys(env).sort()) {
    const raw = env[name];
    if (!name.startsWith('BERTH_') || name === DEFAULTS.configEnv || raw === undefined) continue;
    const origin = envOrigin(name);
    const [first = '', ...rest] = name.slice('BERTH_'.length).split('_');
    const section = first.toLowerCase();
    const key = rest.join('_').toLowerCase();
    const dotted = key === '' ? section : `${section}.${key}`;
    if (isListSection(section)) {
      const keys: Readonly<Record<string, string>> = LIST_SECTIONS[section];
      if (!Object.hasOwn(keys, key)) {
        warnings.push(ignored(name, dotted, `no such key of [[${section}]] (known: ${Object.keys(keys).join(', ')})`));
        continue;
      }
      throw new ConfigError(origin, dotted, `[[${section}]] is a list of tables and can be set in the config file only`);
    }
    if (!isTableSection(section)) {
      warnings.push(ignored(name, dotted, `no such section (BERTH_<SECTION>_<KEY> with SECTION one of ${Object.keys(TABLE_SECTIONS).join(', ')})`));
      continue;
    }
    if (key === '') {
      warnings.push(ignored(name, section, 'names a section but no key (BERTH_<SECTION>_<KEY>)'));
      continue;
    }
    const kinds: Readonly<Record<string, string>> = TABLE_SECTIONS[section];
    // "password" goes in as it is: Fields.checkKnown refuses it, pointing at password_file.
    if (!Object.hasOwn(kinds, key) && !(key === 'password' && Object.hasOwn(kinds, 'password_file'))) {
      warnings.push(ignored(name, dotted, `unknown key (known: ${Object.keys(kinds).join(', ')})`));
      continue;
    }
    if (kinds[key] === 'table') {
      throw new ConfigError(origin, dotted, 'is an inline table and can be set in the config file only');
    }
    let value: unknown = raw;
    if (kinds[key] === 'bool') value = coerceBool(raw, origin, dotted);
    if (kinds[key] === 'list') value = raw.split(',').map((s) => s.trim()).filter((s) => s !== '');
    const entries = sections.get(section) ?? new Map<string, Entry>();
    entries.set(key, { value, origin });
    sections.set(section, entries);
  }
  return { sections, warnings };
}

/**
 * @param doc the parsed file, or null for none
 * @param file how errors name the file
 */
export function buildLayers(doc: Doc | null, file: string, env: NodeJS.ProcessEnv, cwd: string): Layers {
  if (doc) checkTopLevel(doc, file);
  const { sections: fromEnv, warnings } = envOverrides(env);

  const table = (section: TableSection, defaults: object): Fields => {
    const fileValues = doc?.[section];
    const envValues = fromEnv.get(section);
    const entries = new Map<string, Entry>();
    add(entries, defaults, BUILT_IN);
    if (section === 'cache') {
      // systemd's CacheDirectory= replaces the built-in dir, not the user's; several entries are ':'-joined, the first is ours.
      const systemd = env[DEFAULTS.cacheDirEnv]?.split(':')[0];
      if (systemd) entries.set('dir', { value: systemd, origin: envOrigin(DEFAULTS.cacheDirEnv) });
    }
    if (isTable(fileValues)) add(entries, fileValues, file);
    for (const [key, entry] of envValues ?? []) entries.set(key, entry);
    const firstEnv = envValues?.values().next().value;
    const origin = isTable(fileValues) ? file : (firstEnv?.origin ?? BUILT_IN);
    return new Fields(section, entries, origin, cwd);
  };

  const list = (section: 'upstream' | 'prefetch', keyDefaults: object, fallback: readonly object[]): Fields[] => {
    const items = doc?.[section];
    const fromFile = Array.isArray(items);
    const tables: object[] = fromFile ? items.filter(isTable) : [...fallback];
    return tables.map((values, i) => {
      const entries = new Map<string, Entry>();
      add(entries, keyDefaults, BUILT_IN);
      add(entries, values, fromFile ? file : BUILT_IN);
      return new Fields(`${section}[${i}]`, entries, fromFile ? file : BUILT_IN, cwd);
    });
  };

  return {
    server: table('server', DEFAULTS.server),
    cache: table('cache', DEFAULTS.cache),
    log: table('log', DEFAULTS.log),
    airgap: table('airgap', DEFAULTS.airgap),
    // Harbor is optional: its defaults apply only once the file or a variable mentions it.
    harbor: doc?.harbor !== undefined || fromEnv.has('harbor') ? table('harbor', DEFAULTS.harbor) : null,
    // So are peers; a service-link variable (BERTH_PEERS_PORT…) is no key, so it does not switch them on.
    peers: doc?.peers !== undefined || fromEnv.has('peers') ? table('peers', DEFAULTS.peers) : null,
    upstreams: list('upstream', DEFAULTS.upstreamKeys, DEFAULTS.upstream),
    prefetch: list('prefetch', DEFAULTS.prefetchKeys, []),
    warnings,
  };
}
