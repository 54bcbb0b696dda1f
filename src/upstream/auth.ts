/**
 * Authentication for one upstream. The first request goes out anonymously; a
 * 401 tells us the scheme (Bearer token service or Basic), which we remember,
 * so every later request carries credentials up front instead of paying a 401
 * round trip each time. A 401 to a cached token gets one more try with a
 * freshly fetched one (it may have been revoked); a 401 to a token fetched just
 * now is final. Whatever 401/403 remains is the caller's UPSTREAM_AUTH.
 */
import type { Logger } from 'pino';
import { parseChallenges, pickChallenge, type Challenge } from './challenge.js';
import type { Answer, Exchange, Send } from './transport.js';
import { TokenSource, type TokenRequest } from './token.js';

/** What the upstream asked for the last time it challenged us. */
type Scheme =
  | { kind: 'anonymous' }
  | { kind: 'basic' }
  | { kind: 'bearer'; realm: string; service: string | undefined };

interface Credential {
  header: string | undefined;
  /** A Bearer token taken from the cache: the registry may have revoked it since. */
  cachedToken: boolean;
}

/**
 * A password as it is, or a source read when first needed (the config's
 * Secret): a command that never meets a challenge never reads it.
 */
export type Password = string | { reveal(): string };

/** `Basic …` for the pair, computed on first call and kept; the password is read then, not before. */
export function lazyBasic(username: string, password: Password | undefined): () => string {
  let header: string | undefined;
  return () => {
    header ??= 'Basic ' + Buffer.from(`${username}:${typeof password === 'object' ? password.reveal() : (password ?? '')}`, 'utf8').toString('base64');
    return header;
  };
}

export interface AuthOptions {
  registry: string;
  upstream: URL;
  username?: string | undefined;
  password?: Password | undefined;
  send: Send;
  log: Logger;
}

/** /v2/ answers `{}` or a short error; the probe reads at most this. */
const PROBE_BODY_LIMIT = 64 * 1024;

export class Authenticator {
  readonly #send: Send;
  readonly #log: Logger;
  /** Undefined without an account; reads the password on first call. */
  readonly #basic: (() => string) | undefined;
  readonly #tokens: TokenSource;
  #scheme: Scheme = { kind: 'anonymous' };

  constructor(opts: AuthOptions) {
    this.#send = opts.send;
    this.#log = opts.log;
    this.#basic = opts.username !== undefined && opts.username !== '' ? lazyBasic(opts.username, opts.password) : undefined;
    this.#tokens = new TokenSource({ registry: opts.registry, upstream: opts.upstream, basic: this.#basic, send: opts.send, log: opts.log });
  }

  /**
   * Sends `ex` with whatever credentials the upstream wants for `scope`
   * ("repository:<name>:pull", or undefined for /v2/). Returns the final
   * answer, which may still be a 401/403 for the caller to turn into an error.
   */
  async send(ex: Exchange, scope: string | undefined): Promise<Answer> {
    const scheme = this.#scheme;
    const sent = await this.#credential(scheme, scope, false);
    const first = await this.#send(withAuth(ex, sent.header));
    // A 401 from object storage after a redirect is not the registry's challenge.
    if (first.status !== 401 || first.redirected) return first;

    const challenge = pickChallenge(parseChallenges(first.headers['www-authenticate']));
    const next = challenge ? learn(challenge) : undefined;
    if (!next || !this.#worthRetrying(next, scheme, sent)) return first;
    first.discard();
    this.#scheme = next;
    this.#log.debug({ scheme: next.kind }, 'upstream asked for authentication');
    // For /v2/ (no repository) ask for whatever scope the challenge named.
    const retry = await this.#credential(next, scope ?? challenge?.params.get('scope'), sent.cachedToken);
    return this.#send(withAuth(ex, retry.header));
  }

  /**
   * Sends `ex` as it is (the start-up warm-up's GET /v2/) and, from a 401's
   * challenge, learns the scheme without fetching a token: the first real
   * request then asks the token service for its own scope up front instead
   * of paying an anonymous 401 first. A no-op once a scheme is known.
   */
  async learnScheme(ex: Exchange): Promise<void> {
    if (this.#scheme.kind !== 'anonymous') return;
    const answer = await this.#send(ex);
    // Read, not discarded: the socket is back in the pool when this resolves.
    await answer.read(PROBE_BODY_LIMIT);
    if (answer.status !== 401 || answer.redirected || this.#scheme.kind !== 'anonymous') return;
    const challenge = pickChallenge(parseChallenges(answer.headers['www-authenticate']));
    const next = challenge ? learn(challenge) : undefined;
    if (!next) return;
    this.#scheme = next;
    this.#log.debug({ scheme: next.kind }, 'upstream asked for authentication');
  }

  /** Whether a second try with `next` can succeed where `sent` (under `scheme`) just failed. */
  #worthRetrying(next: Scheme, scheme: Scheme, sent: Credential): boolean {
    if (next.kind === 'basic') return this.#basic !== undefined && scheme.kind !== 'basic';
    if (next.kind !== 'bearer') return false;
    // A token fetched a moment ago for this very realm was refused: a new one
    // would be refused too (Docker Hub answers 401 for unknown repositories).
    const sameRealm = scheme.kind === 'bearer' && scheme.realm === next.realm && scheme.service === next.service;
    return !(sameRealm && sent.header !== undefined && !sent.cachedToken);
  }

  async #credential(scheme: Scheme, scope: string | undefined, fresh: boolean): Promise<Credential> {
    switch (scheme.kind) {
      case 'anonymous':
        return { header: undefined, cachedToken: false };
      case 'basic':
        return { header: this.#basic?.(), cachedToken: false };
      case 'bearer': {
        const req: TokenRequest = { realm: scheme.realm, service: scheme.service, scope };
        const { token, cached } = await this.#tokens.get(req, fresh);
        return { header: 'Bearer ' + token, cachedToken: cached };
      }
    }
  }
}

function learn(c: Challenge): Scheme | undefined {
  if (c.scheme === 'basic') return { kind: 'basic' };
  const realm = c.params.get('realm');
  if (c.scheme !== 'bearer' || realm === undefined) return undefined;
  return { kind: 'bearer', realm, service: c.params.get('service') };
}

function withAuth(ex: Exchange, authorization: string | undefined): Exchange {
  if (authorization === undefined) return ex;
  return { ...ex, headers: { ...ex.headers, authorization } };
}
