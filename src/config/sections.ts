/**
 * Turns each merged table into its typed part of Config. Every key of the
 * schema is read here exactly once; unknown keys are refused before any other
 * check so a typo is reported as itself.
 */
import { formatImageReference, parseImageReference } from '../oci/paths.js';
import type { Fields } from './fields.js';
import { LIST_SECTIONS, TABLE_SECTIONS } from './schema.js';
import type { Config, HarborConfig, PrefetchConfig, UpstreamConfig } from './types.js';
import { checkLogLevel, checkPlatform, checkProjectName, parseHttpUrl, parseListen, parseRegistryHost, show } from './values.js';

type Credentials = Pick<UpstreamConfig, 'username' | 'password' | 'passwordFile'>;

const TIMER = { positive: true, timer: true } as const;

function keysOf(schema: object): string[] {
  return Object.keys(schema);
}

/** username and password_file come as a pair; the password itself only ever from the file. */
function credentials(f: Fields): Credentials {
  const username = f.string('username');
  const hasFile = f.has('password_file');
  if (username !== undefined && !hasFile) f.fail('password_file', `missing: ${f.key('username')} needs a password_file beside it`);
  if (username === undefined && hasFile) f.fail('username', `missing: ${f.key('password_file')} needs a username beside it`);
  const secret = f.secret('password_file');
  if (username === undefined || secret === undefined) return {};
  return { username, password: secret, passwordFile: secret.path };
}

export function buildServer(f: Fields): Config['server'] {
  f.checkKnown(keysOf(TABLE_SECTIONS.server));
  const { listen, host, port } = f.checked('listen', f.required('listen', '127.0.0.1:5050'), parseListen);
  const server: Config['server'] = { listen, host, port, drainTimeoutMs: f.duration('drain_timeout', { timer: true }) };
  const hasCert = f.has('tls_cert_file');
  if (hasCert !== f.has('tls_key_file')) {
    f.fail(hasCert ? 'tls_key_file' : 'tls_cert_file', 'missing: tls_cert_file and tls_key_file go together');
  }
  const cert = f.readablePath('tls_cert_file');
  const key = f.readablePath('tls_key_file');
  if (cert !== undefined) server.tlsCertFile = cert;
  if (key !== undefined) server.tlsKeyFile = key;
  return server;
}

export function buildCache(f: Fields): Config['cache'] {
  f.checkKnown(keysOf(TABLE_SECTIONS.cache));
  return {
    dir: f.path('dir') ?? f.fail('dir', 'missing (e.g. dir = "/var/cache/berth")'),
    maxSizeBytes: f.size('max_size', { min: 1 }),
    // 0 is allowed: revalidate every tag on every request.
    tagTtlMs: f.duration('tag_ttl'),
    serveStale: f.bool('serve_stale'),
    // More than 0 (0 would answer every overdue tag stale without waiting at all); given to a timer.
    revalidateTimeoutMs: f.duration('revalidate_timeout', TIMER),
    // 0 turns the daemon's own prefetch runs off ([[prefetch]] then only runs by command).
    prefetchIntervalMs: f.duration('prefetch_interval', { timer: true }),
  };
}

export function buildLog(f: Fields): Config['log'] {
  f.checkKnown(keysOf(TABLE_SECTIONS.log));
  return { level: f.checked('level', f.required('level', 'info'), checkLogLevel) };
}

export function buildHarbor(f: Fields): HarborConfig {
  f.checkKnown(keysOf(TABLE_SECTIONS.harbor));
  const url = f.checked('url', f.required('url', 'https://harbor.example.com'), parseHttpUrl);
  const harbor: HarborConfig = {
    url,
    ...credentials(f),
    skipVerify: f.bool('skip_verify'),
    projects: f.list('projects').map((p) => f.checked('projects', p, checkProjectName)),
    prefetchLabels: f.list('prefetch_labels'),
    prefetchPreheat: f.bool('prefetch_preheat'),
    syncIntervalMs: f.duration('sync_interval', TIMER),
    // Compared with timestamps, never given to a timer, so no timer limit.
    offlineGraceMs: f.duration('offline_grace', { positive: true }),
    onExpired: f.checked('on_expired', f.required('on_expired', 'deny'), (s) => {
      if (s === 'deny' || s === 'allow') return s;
      throw new Error(`${show(s)} is neither "deny" nor "allow"`);
    }),
  };
  const ca = f.readablePath('ca_file');
  if (ca !== undefined) harbor.caFile = ca;
  return harbor;
}

export function buildUpstreams(list: readonly Fields[], harbor: HarborConfig | null): UpstreamConfig[] {
  const seen = new Map<string, string>();
  return list.map((f) => {
    f.checkKnown(keysOf(LIST_SECTIONS.upstream));
    const registry = f.checked('registry', f.required('registry', 'docker.io'), parseRegistryHost);
    const earlier = seen.get(registry);
    if (earlier !== undefined) f.fail('registry', `${show(registry)} is already configured by ${earlier}; one [[upstream]] per registry`);
    seen.set(registry, f.prefix);
    const upstream: UpstreamConfig = {
      registry,
      url: f.checked('url', f.required('url', 'https://registry-1.docker.io'), parseHttpUrl),
      ...credentials(f),
      skipVerify: f.bool('skip_verify'),
      timeouts: {
        connectMs: f.duration('connect_timeout', TIMER),
        headersMs: f.duration('header_timeout', TIMER),
        bodyIdleMs: f.duration('body_timeout', TIMER),
      },
    };
    const ca = f.readablePath('ca_file');
    if (ca !== undefined) upstream.caFile = ca;
    const via = f.string('via_harbor_project');
    if (via !== undefined) {
      if (harbor === null) f.fail('via_harbor_project', 'needs a [harbor] section: the proxy-cache project lives on that Harbor');
      upstream.viaHarborProject = f.checked('via_harbor_project', via, checkProjectName);
    }
    return upstream;
  });
}

export function buildPrefetch(list: readonly Fields[], upstreams: readonly UpstreamConfig[]): PrefetchConfig[] {
  return list.map((f) => {
    f.checkKnown(keysOf(LIST_SECTIONS.prefetch));
    const ref = f.checked('image', f.required('image', 'docker.io/library/nginx:1.27'), parseImageReference);
    if (!upstreams.some((u) => u.registry === ref.registry)) {
      f.fail('image', `no [[upstream]] has registry ${show(ref.registry)}, so berth could not fetch it`);
    }
    const platforms = f.list('platforms').map((p) => f.checked('platforms', p, checkPlatform));
    if (platforms.length === 0) f.fail('platforms', "is empty: list at least one, or leave the key out for this node's platform");
    return { image: formatImageReference(ref), platforms };
  });
}
