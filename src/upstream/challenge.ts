/**
 * `WWW-Authenticate` parsing (RFC 9110 §11.6.1) and the rule for where
 * credentials may go. A header can hold several challenges, and a response can
 * carry several headers; registries send `Bearer realm="…",service="…",scope="…"`
 * or `Basic realm="…"`.
 */
import { isIP } from 'node:net';

export interface Challenge {
  /** Lower-cased scheme: "bearer", "basic", … */
  scheme: string;
  /** Parameters with lower-cased names. */
  params: Map<string, string>;
}

const TOKEN = /[!#$%&'*+.^_`|~0-9A-Za-z-]+/y;

export function parseChallenges(header: string | string[] | undefined): Challenge[] {
  if (header === undefined) return [];
  const text = Array.isArray(header) ? header.join(', ') : header;
  const out: Challenge[] = [];
  let current: Challenge | undefined;
  let pos = 0;

  const skip = (chars: RegExp): void => {
    while (pos < text.length && chars.test(text.charAt(pos))) pos++;
  };
  const token = (): string | undefined => {
    TOKEN.lastIndex = pos;
    const m = TOKEN.exec(text);
    if (!m) return undefined;
    pos = TOKEN.lastIndex;
    return m[0];
  };
  const quoted = (): string => {
    let value = '';
    pos++; // opening quote
    while (pos < text.length && text.charAt(pos) !== '"') {
      if (text.charAt(pos) === '\\') pos++;
      value += text.charAt(pos);
      pos++;
    }
    pos++; // closing quote
    return value;
  };

  while (pos < text.length) {
    skip(/[\s,]/);
    const name = token();
    if (name === undefined) {
      pos++; // stray character: step over it rather than loop forever
      continue;
    }
    skip(/\s/);
    if (text.charAt(pos) === '=') {
      pos++;
      skip(/\s/);
      const value = text.charAt(pos) === '"' ? quoted() : (token() ?? '');
      current?.params.set(name.toLowerCase(), value);
    } else {
      current = { scheme: name.toLowerCase(), params: new Map() };
      out.push(current);
    }
  }
  return out;
}

/** Bearer wins over Basic when a registry offers both: tokens are scoped, passwords are not. */
export function pickChallenge(challenges: Challenge[]): Challenge | undefined {
  return challenges.find((c) => c.scheme === 'bearer' && c.params.has('realm')) ?? challenges.find((c) => c.scheme === 'basic');
}

/** "registry-1.docker.io" -> "docker.io"; IP literals and single labels stay whole. */
function registrableDomain(host: string): string {
  const bare = host.replace(/^\[|\]$/g, '').toLowerCase();
  if (isIP(bare) !== 0) return bare;
  const labels = bare.replace(/\.$/, '').split('.');
  return labels.slice(-2).join('.');
}

/**
 * Whether credentials for `upstream` may be sent to a token `realm`: same host,
 * or same registrable domain (the last two DNS labels), as Distribution's
 * proxyauth `realmAllowed` decides. Without this, an upstream answering with a
 * realm of its choosing could harvest our password. A realm over plain HTTP
 * for an HTTPS upstream is refused too: it would expose the password on the wire.
 */
export function realmAllowed(realm: URL, upstream: URL): boolean {
  if (upstream.protocol === 'https:' && realm.protocol !== 'https:') return false;
  if (realm.hostname.toLowerCase() === upstream.hostname.toLowerCase()) return true;
  return registrableDomain(realm.hostname) === registrableDomain(upstream.hostname);
}
