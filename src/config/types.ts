/**
 * The validated, frozen configuration every part of berth reads. Durations are
 * milliseconds and sizes are bytes here; the TOML file spells them as strings
 * ("90s", "20GiB") and `load.ts` converts them in one place.
 */
import type { Secret } from './secret.js';

export interface TimeoutConfig {
  /** TCP (and TLS) connect to an upstream. */
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
  upstreams: UpstreamConfig[];
  harbor: HarborConfig | null;
  prefetch: PrefetchConfig[];
}
