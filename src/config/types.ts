/**
 * The validated, frozen configuration every part of berth reads. Durations are
 * milliseconds and sizes are bytes here; the TOML file spells them as strings
 * ("90s", "20GiB") and `load.ts` converts them in one place.
 */
import type { Secret, SiteKey } from './secret.js';

export interface TimeoutConfig {
  /** TCP (and TLS) connect to an upstream (or a peer). */
  connectMs: number;
  /** From request sent to response headers received. */
  headersMs: number;
  /** Longest silence between two body chunks. */
  bodyIdleMs: number;
}

export interface UpstreamConfig {
  /** The registry host name containerd asks about with ?ns= (e.g. "docker.io"). */
  registry: string;
  /** Base URL of the registry API (e.g. "https://registry-1.docker.io"). */
  url: string;
  username?: string;
  /** password_file's contents, read when first used; never logged. */
  password?: Secret;
  passwordFile?: string;
  caFile?: string;
  skipVerify: boolean;
  viaHarborProject?: string;
  timeouts: TimeoutConfig;
}

export interface HarborConfig {
  url: string;
  username?: string;
  /** password_file's contents, read when first used; never logged. */
  password?: Secret;
  passwordFile?: string;
  caFile?: string;
  skipVerify: boolean;
  projects: string[];
  syncIntervalMs: number;
  offlineGraceMs: number;
  onExpired: 'deny' | 'allow';
  /** Artifacts carrying any of these Harbor labels are prefetched and pinned. */
  prefetchLabels: string[];
  /** Also prefetch what the projects' enabled P2P preheat policies select (filters evaluated locally). */
  prefetchPreheat: boolean;
}

/** Where the site's members come from: exactly one of `members`, `dns`, `kubernetes`. */
export type PeerMembershipConfig =
  /** `members = [...]`: each in parseMember's normal form, in the order written, no duplicates; may include this node. */
  | { kind: 'static'; members: string[] }
  /**
   * `dns = "name:port"`: the name's A/AAAA records, each with `port`; re-resolved every resolveIntervalMs.
   * `servers` (`dns_servers`): the DNS servers to ask, each "ip" or "ip:port" ("[ipv6]:port"), as
   * node:dns setServers takes them; absent: the system's (resolv.conf).
   */
  | { kind: 'dns'; name: string; port: number; servers?: string[] }
  /**
   * `kubernetes = { namespace, service, port }`: the ready endpoints of that Service's EndpointSlices; `port` is the port's name.
   * `apiServer` ("https://host:port", no path), `tokenFile`, `caFile`: absent, the in-cluster
   * environment (KUBERNETES_SERVICE_HOST/PORT) and the pod's service account token and ca.crt.
   */
  | { kind: 'kubernetes'; namespace: string; service: string; port: string; apiServer?: string; tokenFile?: string; caFile?: string };

export interface PeersConfig {
  /** The peer listener, in parseMember's normal form ("10.0.0.11:5051", "[fd00::11]:5051"): this node's id among the members. */
  listen: string;
  /** listen's host without brackets, as net.Server.listen wants it. */
  host: string;
  port: number;
  /** key_file's bytes (surrounding whitespace removed, >= 32 bytes), read when first used; never logged. */
  key: SiteKey;
  keyFile: string;
  membership: PeerMembershipConfig;
  /** TLS on the peer listener, and https:// to the other peers; null: plain HTTP. */
  tls: { certFile: string; keyFile: string } | null;
  /** Verifies the other peers' certificates (only with tls). Absent: the system CAs. */
  caFile?: string;
  /** DNS membership: time between two look-ups. */
  resolveIntervalMs: number;
  /** To a peer: connect, first byte of the answer, longest silence in a body; past them the next source is tried. */
  timeouts: TimeoutConfig;
  /** How far a signed request's time may be from ours (ReplayGuard's windowMs). */
  clockWindowMs: number;
}

export interface PrefetchConfig {
  image: string;
  platforms: string[];
}

export interface Config {
  /** The file the config came from, or null for built-in defaults. */
  source: string | null;
  server: {
    /** host:port */
    listen: string;
    host: string;
    port: number;
    tlsCertFile?: string;
    tlsKeyFile?: string;
    /** How long SIGTERM waits for in-flight transfers before closing sockets. */
    drainTimeoutMs: number;
    /** metrics_listen: a second listener for /metrics and /healthz only (none: /metrics stays on listen alone). */
    metricsListen?: { listen: string; host: string; port: number };
    /** Blobs (cached, or followed while filled) go to plain-HTTP clients with sendfile(2) when the addon is built. */
    sendfile: boolean;
  };
  cache: {
    dir: string;
    maxSizeBytes: number;
    tagTtlMs: number;
    serveStale: boolean;
    /** How long a cached tag waits on its revalidation before answering from the last known digest. */
    revalidateTimeoutMs: number;
    /** How often the daemon runs the [[prefetch]] list (0: never, only `berth prefetch`). */
    prefetchIntervalMs: number;
  };
  log: {
    level: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
  };
  airgap: {
    /** Public key files (SPKI PEM, ed25519): `berth import` refuses an archive none of them signed. Empty: not checked. */
    trust: string[];
  };
  upstreams: UpstreamConfig[];
  harbor: HarborConfig | null;
  /** null without a [peers] section: this node is a site of one. */
  peers: PeersConfig | null;
  prefetch: PrefetchConfig[];
}
