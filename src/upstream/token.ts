/**
 * Bearer tokens from a registry's token service (the Docker token protocol that
 * Docker Hub, Harbor and Distribution speak): GET <realm>?service=…&scope=…,
 * with Basic credentials when we have them and the realm may receive them.
 * Tokens are cached per (realm, service, scope) until shortly before they
 * expire, and concurrent requests for the same scope share one fetch, so a pod
 * pulling twenty layers costs one token round trip, not twenty.
 */
import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import { realmAllowed } from './challenge.js';
import { statusError } from './errors.js';
import type { Send } from './transport.js';
import { UpstreamError } from './types.js';

export interface TokenRequest {
  realm: string;
  service: string | undefined;
  scope: string | undefined;
}

export interface TokenSourceOptions {
  registry: string;
  upstream: URL;
  /** `Basic …` for the configured account, if any; called only when the realm may receive it. */
  basic: (() => string) | undefined;
  send: Send;
  log: Logger;
}

/** Docker's token spec: a token without `expires_in` lives 60 s. */
const DEFAULT_EXPIRES_S = 60;
const TOKEN_BODY_LIMIT = 1024 * 1024;

function keyOf(req: TokenRequest): string {
  return `${req.realm}\n${req.service ?? ''}\n${req.scope ?? ''}`;
}

/**
 * Renew a little early: the token must still be valid when the registry checks
 * it. At least 1 ms, because a ttl of 0 means "forever" to lru-cache.
 */
export function cacheTtlMs(expiresInS: number): number {
  const lifetime = expiresInS * 1000;
  return Math.max(1, Math.floor(lifetime - Math.min(30_000, lifetime / 10)));
}

export class TokenSource {
  readonly #opts: TokenSourceOptions;
  readonly #cache = new LRUCache<string, string>({ max: 1_000 });
  readonly #inflight = new Map<string, Promise<string>>();
  readonly #warnedRealms = new Set<string>();

  constructor(opts: TokenSourceOptions) {
    this.#opts = opts;
  }

  /** A token for `req`; `fresh` skips the cache (the registry just rejected the cached one). */
  async get(req: TokenRequest, fresh = false): Promise<{ token: string; cached: boolean }> {
    const key = keyOf(req);
    if (fresh) this.#cache.delete(key);
    else {
      const cached = this.#cache.get(key);
      if (cached !== undefined) return { token: cached, cached: true };
    }
    return { token: await this.#shared(key, req), cached: false };
  }

  /** One fetch per key at a time; latecomers wait for it. */
  #shared(key: string, req: TokenRequest): Promise<string> {
    const pending = this.#inflight.get(key);
    if (pending) return pending;
    // Deliberately no caller signal: other requests wait on this fetch too, and
    // one client hanging up must not fail theirs. Timeouts still bound it.
    const settled = this.#fetch(req)
      .then(({ token, ttlMs }) => {
        this.#cache.set(key, token, { ttl: ttlMs });
        return token;
      })
      .finally(() => this.#inflight.delete(key));
    this.#inflight.set(key, settled);
    return settled;
  }

  async #fetch(req: TokenRequest): Promise<{ token: string; ttlMs: number }> {
    const { registry, upstream, log } = this.#opts;
    let url: URL;
    try {
      url = new URL(req.realm);
    } catch {
      throw new UpstreamError('UPSTREAM_PROTOCOL', registry, `upstream ${registry} sent an unusable token realm`);
    }
    if (url.protocol !== 'https:' && url.protocol !== 'http:') {
      throw new UpstreamError('UPSTREAM_PROTOCOL', registry, `upstream ${registry} sent a token realm with scheme ${url.protocol}`);
    }
    if (req.service !== undefined) url.searchParams.set('service', req.service);
    if (req.scope !== undefined) url.searchParams.set('scope', req.scope);

    const headers: Record<string, string> = {};
    const allowed = realmAllowed(url, upstream);
    if (this.#opts.basic !== undefined) {
      if (allowed) headers['authorization'] = this.#opts.basic();
      else if (!this.#warnedRealms.has(url.origin)) {
        this.#warnedRealms.add(url.origin);
        log.warn({ realm: url.origin }, 'token realm is outside the upstream domain; fetching tokens anonymously');
      }
    }

    const answer = await this.#opts.send({ kind: 'token', method: 'GET', url, headers });
    if (answer.status !== 200) throw await statusError(answer, registry, 'the token request');
    const body = await answer.read(TOKEN_BODY_LIMIT);
    let parsed: unknown;
    try {
      parsed = JSON.parse(body.toString('utf8'));
    } catch {
      throw new UpstreamError('UPSTREAM_PROTOCOL', registry, `upstream ${registry} token service answered non-JSON`);
    }
    const { token, access_token: accessToken, expires_in: expiresIn } = (parsed ?? {}) as Record<string, unknown>;
    const value = typeof token === 'string' && token !== '' ? token : accessToken;
    if (typeof value !== 'string' || value === '') {
      throw new UpstreamError('UPSTREAM_PROTOCOL', registry, `upstream ${registry} token service answered without a token`);
    }
    const seconds = typeof expiresIn === 'number' && expiresIn > 0 ? expiresIn : DEFAULT_EXPIRES_S;
    return { token: value, ttlMs: cacheTtlMs(seconds) };
  }
}
