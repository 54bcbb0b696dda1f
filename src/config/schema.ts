/**
 * Every key berth.toml may hold, by section, with the kind of value it takes.
 * The kind decides how a BERTH_<SECTION>_<KEY> string is coerced; the key
 * lists are what "unknown key" is measured against.
 */
export type Kind = 'string' | 'bool' | 'list' | 'duration' | 'size' | 'table';

type Keys = Readonly<Record<string, Kind>>;

/**
 * Sections that are one table ([server]); their keys can be overridden from the
 * environment, except a 'table' key (an inline table such as peers.kubernetes).
 */
export const TABLE_SECTIONS = {
  server: { listen: 'string', tls_cert_file: 'string', tls_key_file: 'string', drain_timeout: 'duration', metrics_listen: 'string', sendfile: 'bool' },
  cache: { dir: 'string', max_size: 'size', tag_ttl: 'duration', serve_stale: 'bool', revalidate_timeout: 'duration', prefetch_interval: 'duration' },
  log: { level: 'string' },
  harbor: {
    url: 'string',
    username: 'string',
    password_file: 'string',
    ca_file: 'string',
    skip_verify: 'bool',
    projects: 'list',
    sync_interval: 'duration',
    offline_grace: 'duration',
    on_expired: 'string',
    prefetch_labels: 'list',
    prefetch_preheat: 'bool',
  },
  peers: {
    listen: 'string',
    key_file: 'string',
    members: 'list',
    dns: 'string',
    dns_servers: 'list',
    // An inline table: set in the file only, like the list sections.
    kubernetes: 'table',
    tls_cert_file: 'string',
    tls_key_file: 'string',
    ca_file: 'string',
    resolve_interval: 'duration',
    connect_timeout: 'duration',
    header_timeout: 'duration',
    body_timeout: 'duration',
    clock_window: 'duration',
  },
  airgap: { trust: 'list' },
} as const satisfies Record<string, Keys>;

/**
 * Sections that are arrays of tables ([[upstream]]). An environment variable
 * cannot say which entry it means, so these are set in the file only.
 */
export const LIST_SECTIONS = {
  upstream: {
    registry: 'string',
    url: 'string',
    username: 'string',
    password_file: 'string',
    ca_file: 'string',
    skip_verify: 'bool',
    via_harbor_project: 'string',
    connect_timeout: 'duration',
    header_timeout: 'duration',
    body_timeout: 'duration',
  },
  prefetch: { image: 'string', platforms: 'list' },
} as const satisfies Record<string, Keys>;

export type TableSection = keyof typeof TABLE_SECTIONS;
export type ListSection = keyof typeof LIST_SECTIONS;

export const SECTION_NAMES: readonly string[] = [...Object.keys(TABLE_SECTIONS), ...Object.keys(LIST_SECTIONS)];

export function isTableSection(name: string): name is TableSection {
  return Object.hasOwn(TABLE_SECTIONS, name);
}

export function isListSection(name: string): name is ListSection {
  return Object.hasOwn(LIST_SECTIONS, name);
}

/**
 * Keys that hold a secret value, wherever they appear; never echoed, redacted on output.
 * (A Secret or SiteKey object is redacted whatever its key: see redactedConfig.)
 */
export const SECRET_KEYS: ReadonlySet<string> = new Set(['password']);
