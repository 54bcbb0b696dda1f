/**
 * Where things are on a node: containerd's hosts directory (plain containerd
 * or MicroK8s), and the URL containerd should use to reach berth.
 */
import { existsSync } from 'node:fs';
import type { Config } from '../config/types.js';

/** The conventional `config_path` of a plain containerd install. */
export const DEFAULT_HOSTS_DIR = '/etc/containerd/certs.d';
/** MicroK8s' containerd-template.toml sets config_path = "${SNAP_DATA}/args/certs.d". */
export const MICROK8S_HOSTS_DIR = '/var/snap/microk8s/current/args/certs.d';

export interface HostsDirChoice {
  dir: string;
  /** How it was chosen, for the operator. */
  why: 'flag' | 'microk8s' | 'microk8s-detected' | 'default';
}

/**
 * --hosts-dir wins; --microk8s picks MicroK8s' directory; with neither, MicroK8s
 * is used when its directory exists (a MicroK8s node has no other containerd
 * that pulls for Kubernetes), else the plain containerd default.
 */
export function resolveHostsDir(
  opts: { hostsDir?: string | undefined; microk8s?: boolean | undefined },
  exists: (p: string) => boolean = existsSync,
): HostsDirChoice {
  if (opts.hostsDir !== undefined && opts.hostsDir !== '') return { dir: opts.hostsDir, why: 'flag' };
  if (opts.microk8s) return { dir: MICROK8S_HOSTS_DIR, why: 'microk8s' };
  if (exists(MICROK8S_HOSTS_DIR)) return { dir: MICROK8S_HOSTS_DIR, why: 'microk8s-detected' };
  return { dir: DEFAULT_HOSTS_DIR, why: 'default' };
}

/**
 * The URL containerd on this node uses for berth, from `[server] listen`:
 * https when berth serves TLS, and a wildcard listener reached over loopback.
 */
export function berthUrlFromConfig(config: Config): string {
  const scheme = config.server.tlsCertFile !== undefined ? 'https' : 'http';
  let host = config.server.host;
  if (host === '0.0.0.0') host = '127.0.0.1';
  else if (host === '::') host = '::1';
  const hostPart = host.includes(':') ? `[${host}]` : host;
  return `${scheme}://${hostPart}:${config.server.port}`;
}

/** An http(s) URL with nothing but scheme, host and port (what a hosts.toml host needs). */
export function checkBerthUrl(u: string): string {
  let url: URL;
  try {
    url = new URL(u);
  } catch {
    throw new Error(`--berth-url ${JSON.stringify(u)} is not a URL (e.g. http://127.0.0.1:5050)`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error(`--berth-url must be http:// or https://, not ${url.protocol}`);
  if (url.username || url.password || url.search || url.hash || (url.pathname !== '/' && url.pathname !== '')) {
    throw new Error('--berth-url takes scheme://host:port only (no path, query or credentials)');
  }
  return `${url.protocol}//${url.host}`;
}

/**
 * A registry as a directory name under certs.d: host[:port], exactly as
 * containerd looks it up. Anything else (a slash, "..") is refused rather than
 * joined into a path.
 */
export function registryDirName(registry: string): string {
  if (!/^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?$/.test(registry) || registry.includes('..')) {
    throw new Error(`registry ${JSON.stringify(registry)} is not host[:port]; cannot name its certs.d directory`);
  }
  return registry;
}
