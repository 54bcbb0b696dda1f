/**
 * Turns each merged table into its typed part of Config. Every key of the
 * schema is read here exactly once; unknown keys are refused before any other
 * check so a typo is reported as itself.
 */
import { isIP, isIPv4, isIPv6 } from 'node:net';
import { formatImageReference, parseImageReference } from '../oci/paths.js';
import { parseMember, type PeerAddress } from '../peers/membership.js';
import type { Fields } from './fields.js';
import { LIST_SECTIONS, TABLE_SECTIONS } from './schema.js';
import type { Config, HarborConfig, PeerMembershipConfig, PeersConfig, PrefetchConfig, UpstreamConfig } from './types.js';
import { formatDuration } from './units.js';
import {
  checkDnsLabel,
  checkLogLevel,
  checkPlatform,
  checkProjectName,
  checkServiceName,
  parseHttpUrl,
  parseListen,
  parseRegistryHost,
  show,
} from './values.js';

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

/** tls_cert_file and tls_key_file, both or neither, each readable now. */
function tlsPair(f: Fields): { certFile: string; keyFile: string } | null {
  const hasCert = f.has('tls_cert_file');
  if (hasCert !== f.has('tls_key_file')) {
    f.fail(hasCert ? 'tls_key_file' : 'tls_cert_file', 'missing: tls_cert_file and tls_key_file go together');
  }
  const certFile = f.readablePath('tls_cert_file');
  const keyFile = f.readablePath('tls_key_file');
  return certFile === undefined || keyFile === undefined ? null : { certFile, keyFile };
}

export function buildServer(f: Fields): Config['server'] {
  f.checkKnown(keysOf(TABLE_SECTIONS.server));
  const { listen, host, port } = f.checked('listen', f.required('listen', '127.0.0.1:5050'), parseListen);
  const server: Config['server'] = { listen, host, port, drainTimeoutMs: f.duration('drain_timeout', { timer: true }), sendfile: f.bool('sendfile') };
  const tls = tlsPair(f);
  if (tls !== null) {
    server.tlsCertFile = tls.certFile;
    server.tlsKeyFile = tls.keyFile;
  }
  const metrics = f.string('metrics_listen');
  if (metrics !== undefined) {
    const m = f.checked('metrics_listen', metrics, parseListen);
    const wildcard = (h: string) => h === '0.0.0.0' || h === '::';
    if (m.port === port && (m.host.toLowerCase() === host.toLowerCase() || wildcard(m.host) || wildcard(host))) {
      f.fail('metrics_listen', `${show(m.listen)} is also listen (${show(listen)}): the metrics listener needs an address or port of its own`);
    }
    server.metricsListen = m;
  }
  return server;
}

export function buildCache(f: Fields): Config['cache'] {
  f.checkKnown(keysOf(TABLE_SECTIONS.cache));
  return {
    dir: f.dataDir('dir') ?? f.fail('dir', 'missing (e.g. dir = "/var/cache/berth")'),
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

export function buildAirgap(f: Fields): Config['airgap'] {
  f.checkKnown(keysOf(TABLE_SECTIONS.airgap));
  // Each a public key file (berth keygen's PREFIX.pub), readable now; `berth import` checks it is one.
  return { trust: f.readablePathList('trust') };
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

const MEMBERSHIP_KEYS = ['members', 'dns', 'kubernetes'] as const;
const MEMBERSHIP_HINT = 'members = ["10.0.0.11:5051", …], dns = "name:port" or kubernetes = { namespace, service, port }';
const KUBERNETES_EXAMPLE = '{ namespace = "berth", service = "berth-peers", port = "peer" }';
/** A longer window lets a captured request be replayed for longer; clocks that far apart want NTP instead. */
const MAX_CLOCK_WINDOW_MS = 5 * 60_000;

/** Would the containerd listener and the peer listener want the same socket? */
function sameSocket(peer: PeerAddress, server: Config['server']): boolean {
  if (peer.port !== server.port) return false;
  const host = isIPv6(server.host) ? new URL(`http://[${server.host}]/`).hostname.slice(1, -1) : server.host.toLowerCase();
  return host === peer.host || host === '0.0.0.0' || host === '::';
}

function buildMembership(f: Fields): PeerMembershipConfig {
  const given = MEMBERSHIP_KEYS.filter((k) => f.has(k));
  const [kind, other] = given;
  if (kind === undefined) f.fail('members', `missing: [peers] needs exactly one of ${MEMBERSHIP_HINT}`);
  if (other !== undefined) f.fail(other, `${f.key(kind)} is set too: [peers] takes exactly one of members, dns or kubernetes`);
  if (kind !== 'dns' && f.has('dns_servers')) {
    f.fail('dns_servers', `only goes with dns = "name:port" (the servers asked for the members' records); ${f.key(kind)} does not use DNS`);
  }


  if (kind === 'members') {
    const members: string[] = [];
    for (const text of f.list('members')) {
      const { id } = f.checked('members', text, parseMember);
      if (members.includes(id)) f.fail('members', `${show(text)} is listed twice (as ${show(id)})`);
      members.push(id);
    }
    if (members.length === 0) f.fail('members', 'is empty: list every berth of the site, e.g. ["10.0.0.11:5051", "10.0.0.12:5051"]');
    return { kind: 'static', members };
  }

  if (kind === 'dns') {
    const { host, port } = f.checked('dns', f.required('dns', 'berth-peers.berth.svc.cluster.local:5051'), parseMember);
    if (isIP(host) !== 0) {
      f.fail('dns', `${show(host)} is an address, not a name whose A/AAAA records list the members (for fixed addresses use members = [...])`);
    }
    if (!f.has('dns_servers')) return { kind: 'dns', name: host, port };
    const servers = f.list('dns_servers').map((s) => f.checked('dns_servers', s, parseDnsServer));
    if (servers.length === 0) f.fail('dns_servers', "is empty: list at least one server, or leave the key out for the system's resolvers");
    const twice = servers.find((s, i) => servers.indexOf(s) !== i);
    if (twice !== undefined) f.fail('dns_servers', `${show(twice)} is listed twice`);
    return { kind: 'dns', name: host, port, servers };
  }

  const k = f.table('kubernetes', KUBERNETES_EXAMPLE) ?? f.fail('kubernetes', `missing (e.g. kubernetes = ${KUBERNETES_EXAMPLE})`);
  k.checkKnown(['namespace', 'service', 'port', 'api_server', 'token_file', 'ca_file']);
  const membership: PeerMembershipConfig = {
    kind: 'kubernetes',
    namespace: k.checked('namespace', k.required('namespace', 'berth'), (s) => checkDnsLabel(s, 'a namespace')),
    service: k.checked('service', k.required('service', 'berth-peers'), checkServiceName),
    port: k.checked('port', k.required('port', 'peer'), (s) => checkDnsLabel(s, "a Service port's name")),
  };
  const apiServer = k.string('api_server');
  if (apiServer !== undefined) membership.apiServer = k.checked('api_server', apiServer, parseApiServer);
  const tokenFile = k.readablePath('token_file');
  if (tokenFile !== undefined) membership.tokenFile = tokenFile;
  const caFile = k.readablePath('ca_file');
  if (caFile !== undefined) membership.caFile = caFile;
  return membership;
}

const DNS_SERVER_HINT = 'an IP address with an optional port, e.g. "10.0.0.2", "10.0.0.2:5353", "fd00::2" or "[fd00::2]:53"';

/**
 * A `dns_servers` entry, in the form node:dns setServers takes: "10.0.0.2", "10.0.0.2:5353",
 * "fd00::2", "[fd00::2]:53". Addresses only: a server named by a name would need a resolver itself.
 */
function parseDnsServer(s: string): string {
  if (isIP(s) !== 0) return isIPv6(s) ? new URL(`http://[${s}]/`).hostname.slice(1, -1) : s;
  const m = /^\[([^\]]*)\]:([^:]*)$/.exec(s) ?? /^([^:[\]]*):([^:]*)$/.exec(s);
  if (m === null) throw new Error(`${show(s)} is not a DNS server (${DNS_SERVER_HINT})`);
  const [, host = '', portText = ''] = m;
  const bracketed = s.startsWith('[');
  if (bracketed ? !isIPv6(host) : !isIPv4(host)) {
    const name = !bracketed && host !== '' && !/^[0-9.]+$/.test(host);
    throw new Error(`${show(s)}: ${show(host)} is not ${bracketed ? 'an IPv6 address' : 'an IPv4 address'}${name ? ' (a DNS server is named by its address, not a host name)' : ''} (${DNS_SERVER_HINT})`);
  }
  const port = /^[0-9]{1,5}$/.test(portText) ? Number(portText) : NaN;
  if (!(port >= 1 && port <= 65535)) throw new Error(`${show(s)}: the port must be a number from 1 to 65535`);
  return bracketed ? `[${new URL(`http://[${host}]/`).hostname.slice(1, -1)}]:${port}` : `${host}:${port}`;
}

/** `api_server`: the Kubernetes API's https origin ("https://10.0.0.1:6443"); it is spoken to with the cluster CA only. */
function parseApiServer(s: string): string {
  const url = parseHttpUrl(s);
  if (!url.startsWith('https://')) throw new Error(`${show(s)} must start with https:// (the Kubernetes API is reached over TLS, with ca_file)`);
  if (new URL(url).pathname !== '/') throw new Error(`${show(s)} must be the API server's address alone, without a path (e.g. "https://10.0.0.1:6443")`);
  return new URL(url).origin;
}

export function buildPeers(f: Fields, server: Config['server']): PeersConfig {
  f.checkKnown(keysOf(TABLE_SECTIONS.peers));
  const self = f.checked('listen', f.required('listen', '10.0.0.11:5051'), parseMember);
  if (sameSocket(self, server)) {
    f.fail('listen', `${show(self.id)} is also server.listen (${show(server.listen)}): the peer listener needs an address or port of its own`);
  }
  f.required('key_file', '/etc/berth/site.key');
  const key = f.siteKey('key_file') ?? f.fail('key_file', 'missing');
  const membership = buildMembership(f);
  const tls = tlsPair(f);
  const peers: PeersConfig = {
    listen: self.id,
    host: self.host,
    port: self.port,
    key,
    keyFile: key.path,
    membership,
    tls,
    resolveIntervalMs: f.duration('resolve_interval', TIMER),
    timeouts: {
      connectMs: f.duration('connect_timeout', TIMER),
      headersMs: f.duration('header_timeout', TIMER),
      bodyIdleMs: f.duration('body_timeout', TIMER),
    },
    clockWindowMs: f.duration('clock_window', { positive: true }),
  };
  if (peers.clockWindowMs > MAX_CLOCK_WINDOW_MS) {
    f.fail('clock_window', `is more than ${formatDuration(MAX_CLOCK_WINDOW_MS)}: a captured request could be replayed for that long; keep the nodes' clocks in step (NTP) instead`);
  }
  const ca = f.readablePath('ca_file');
  if (ca !== undefined) {
    if (tls === null) f.fail('ca_file', 'needs tls_cert_file and tls_key_file: peers speak TLS only when they serve it');
    peers.caFile = ca;
  }
  return peers;
}
