/**
 * Authentication for one upstream. The first request goes out anonymously; a
 * 401 tells us the scheme (Bearer token service or Basic), which we remember,
 * so every later request carries credentials up front instead of paying a 401
 * round trip each time. A 401 on a request that carried credentials gets one
 * more try with a freshly fetched token (the cached one may have been revoked
 * or the scope may differ); a second 401 is the caller's UPSTREAM_AUTH.
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

export interface AuthOptions {
  registry: string;
  upstream: URL;
  username?: string | undefined;
  password?: string | undefined;
  send: Send;
  log: Logger;
}

export class Authenticator {
  readonly #send: Send;
  readonly #log: Logger;
  readonly #basic: string | undefined;
  readonly #tokens: TokenSource;
  #scheme: Scheme = { kind: 'anonymous' };

  constructor(opts: AuthOptions) {
    this.#send = opts.send;
    this.#log = opts.log;
    this.#basic =
      opts.username !== undefined && opts.username !== ''
        ? 'Basic ' + Buffer.from(`${opts.username}:${opts.password ?? ''}`).toString('base64')
        : undefined;
    this.#tokens = new TokenSource({ registry: opts.registry, upstream: opts.upstream, basic: this.#basic, send: opts.send, log: opts.log });
  }

  /** The remembered scheme, for tests and `status`. */
  get scheme(): Scheme['kind'] {
    return this.#scheme.kind;
  }

  /**
   * Sends `ex` with whatever credentials the upstream wants for `scope`
   * ("repository:<name>:pull", or undefined for /v2/). Returns the final
   * answer, which may still be a 401/403 for the caller to turn into an error.
   */
  async send(ex: Exchange, scope: string | undefined): Promise<Answer> {
    const sent = await this.#authorization(this.#scheme, scope, false);
    const first = await this.#send(withAuth(ex, sent));
    // A 401 from object storage after a redirect is not the registry's challenge.
    if (first.status !== 401 || first.redirected) return first;

    const challenge = pickChallenge(parseChallenges(first.headers['www-authenticate']));
    const next = challenge ? this.#learn(challenge) : undefined;
    if (!next) return first;
    if (next.kind === 'basic' && (this.#basic === undefined || sent === this.#basic)) {
      // Nothing (new) to offer: no account configured, or it was just refused.
      return first;
    }
    first.discard();
    this.#scheme = next;
    this.#log.debug({ scheme: next.kind }, 'upstream asked for authentication');
    // For /v2/ (no repository) ask for whatever scope the challenge named.
    const retry = await this.#authorization(next, scope ?? challenge?.params.get('scope'), sent !== undefined);
    return this.#send(withAuth(ex, retry));
  }

  #learn(c: Challenge): Scheme | undefined {
    if (c.scheme === 'basic') return { kind: 'basic' };
    const realm = c.params.get('realm');
    if (c.scheme !== 'bearer' || realm === undefined) return undefined;
    return { kind: 'bearer', realm, service: c.params.get('service') };
  }

  async #authorization(scheme: Scheme, scope: string | undefined, fresh: boolean): Promise<string | undefined> {
    switch (scheme.kind) {
      case 'anonymous':
        return undefined;
      case 'basic':
        return this.#basic;
      case 'bearer': {
        const req: TokenRequest = { realm: scheme.realm, service: scheme.service, scope };
        return 'Bearer ' + (await this.#tokens.get(req, fresh));
      }
    }
  }
}

function withAuth(ex: Exchange, authorization: string | undefined): Exchange {
  if (authorization === undefined) return ex;
  return { ...ex, headers: { ...ex.headers, authorization } };
}
