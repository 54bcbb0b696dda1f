/**
 * Checks for single config values that are more than a type: addresses, URLs,
 * names. Each returns the normalised value or throws an Error whose message is
 * the problem alone; the caller adds the file and key.
 */
import { isIPv4, isIPv6 } from 'node:net';
import { isValidRegistryHost } from '../oci/paths.js';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

const HOSTNAME_RE = /^(?=.{1,253}$)[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$/;
/** A project is the first component of a repository path, so it obeys the distribution name-component grammar. */
const PROJECT_RE = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$/;
/** os/arch[/variant] as in an image index ("linux/arm64/v8"). */
const PLATFORM_RE = /^[a-z0-9]+\/[a-z0-9_]+(?:\/[a-z0-9]+)?$/;

export function show(s: string): string {
  return JSON.stringify(s.length > 80 ? `${s.slice(0, 80)}…` : s);
}

export interface Listen {
  listen: string;
  /** Without brackets, as net.Server.listen wants it. */
  host: string;
  port: number;
}

/** "127.0.0.1:5050", "localhost:5050", "[::1]:5050". */
export function parseListen(s: string): Listen {
  const hint = 'use host:port, e.g. "127.0.0.1:5050", "0.0.0.0:5050" or "[::1]:5050"';
  const bracketed = /^\[([^\]]*)\]:([^:]*)$/.exec(s);
  const plain = /^([^:[\]]*):([^:]*)$/.exec(s);
  const m = bracketed ?? plain;
  if (!m) {
    if (isIPv6(s.replace(/:\d+$/, '')) || isIPv6(s)) throw new Error(`${show(s)}: an IPv6 address needs brackets, e.g. "[::1]:5050"`);
    throw new Error(`${show(s)} is not host:port (${hint})`);
  }
  const host = m[1]!;
  const portText = m[2]!;
  if (host === '') throw new Error(`${show(s)} has no host (${hint})`);
  if (bracketed ? !isIPv6(host) : !(isIPv4(host) || HOSTNAME_RE.test(host))) {
    throw new Error(`${show(s)}: ${show(host)} is not ${bracketed ? 'an IPv6 address' : 'an IPv4 address or host name'} (${hint})`);
  }
  const port = /^\d{1,5}$/.test(portText) ? Number(portText) : NaN;
  if (!(port >= 1 && port <= 65535)) throw new Error(`${show(s)}: the port must be a number from 1 to 65535`);
  return { listen: bracketed ? `[${host}]:${port}` : `${host}:${port}`, host, port };
}

/**
 * An http(s) base URL without credentials, query or fragment; the trailing
 * slash is dropped so callers can append "/v2/…". A value with an "@" is not
 * echoed: it may hold a password someone pasted into the URL.
 */
export function parseHttpUrl(s: string): string {
  const shown = s.includes('@') ? 'the value' : show(s);
  let url: URL;
  try {
    url = new URL(s);
  } catch {
    throw new Error(`${shown} is not a URL (use e.g. "https://registry.example.com")`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error(`${shown} must start with http:// or https://`);
  if (url.username !== '' || url.password !== '') {
    throw new Error('the URL must not carry credentials; set username and password_file instead');
  }
  if (s.includes('?') || s.includes('#')) throw new Error(`${shown} must not have a query (?) or fragment (#)`);
  return `${url.protocol}//${url.host}${url.pathname.replace(/\/+$/, '')}`;
}

/** The host containerd names with ?ns= ("docker.io", "harbor.example.com:8443"), lower-cased. */
export function parseRegistryHost(s: string): string {
  if (s.includes('://') || s.includes('/')) {
    throw new Error(`${show(s)} is not a registry host: write the host alone (e.g. "docker.io") and put the address in url`);
  }
  if (!isValidRegistryHost(s)) throw new Error(`${show(s)} is not a registry host (e.g. "docker.io", "harbor.example.com:8443")`);
  return s.toLowerCase();
}

export function checkProjectName(s: string): string {
  if (s.length > 255 || !PROJECT_RE.test(s)) {
    throw new Error(`${show(s)} is not a Harbor project name (lower-case letters and digits, joined by . _ or -)`);
  }
  return s;
}

export function checkPlatform(s: string): string {
  if (!PLATFORM_RE.test(s)) throw new Error(`${show(s)} is not a platform (use os/arch[/variant], e.g. "linux/amd64", "linux/arm64/v8")`);
  return s;
}

/** An RFC 1123 label, as Kubernetes names namespaces and Service ports: "berth", "peer". */
export function checkDnsLabel(s: string, what: string): string {
  if (!/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/.test(s)) {
    throw new Error(`${show(s)} is not ${what} (a DNS label: at most 63 lower-case letters, digits and '-', starting and ending with a letter or digit)`);
  }
  return s;
}

/** An RFC 1035 label, as Kubernetes names Services: like a DNS label, but starting with a letter. */
export function checkServiceName(s: string): string {
  if (!/^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$/.test(s)) {
    throw new Error(`${show(s)} is not a Service name (at most 63 lower-case letters, digits and '-', starting with a letter and ending with a letter or digit)`);
  }
  return s;
}

export function checkLogLevel(s: string): LogLevel {
  const level = LOG_LEVELS.find((l) => l === s);
  if (level === undefined) throw new Error(`${show(s)} is not a log level (one of ${LOG_LEVELS.join(', ')})`);
  return level;
}
