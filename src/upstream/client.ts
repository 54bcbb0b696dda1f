/**
 * The registry client the cache talks to: the read half of the OCI
 * Distribution API over a stack of small layers, each owning one concern:
 *
 *   operations (this file)  -> what a 200/206/404 means for manifests, blobs, tags
 *   Authenticator (auth.ts) -> 401 challenges, remembered scheme, tokens
 *   withRetry (retry.ts)    -> 429 Retry-After, 5xx backoff, stale-socket resets
 *   transport.ts            -> circuit gate, one undici request, metrics event
 *   dispatcher.ts           -> Agent + redirect interceptor, timeouts, TLS trust
 */
import { setFlagsFromString } from 'node:v8';
import type { Logger } from 'pino';
import { isDigest, sha256 } from '../oci/digest.js';
import { DEFAULT_ACCEPT, MEDIA_TYPES, acceptAllows, baseMediaType } from '../oci/mediatypes.js';
import { Authenticator, type Password } from './auth.js';
import { Circuit } from './circuit.js';
import { createDispatcher } from './dispatcher.js';
import { statusError } from './errors.js';
import { contentLength, header, parseContentRange } from './headers.js';
import { withRetry } from './retry.js';
import { createTransport, type Answer } from './transport.js';
import {
  UpstreamError,
  type BlobAnswer,
  type ManifestAnswer,
  type RegistryClient,
  type RequestOptions,
  type UpstreamEvent,
  type UpstreamHealth,
} from './types.js';

export interface ClientOptions {
  registry: string;
  /** Base URL of the registry API, e.g. "https://registry-1.docker.io". */
  url: string;
  username?: string;
  /** Read when the upstream first asks for credentials. */
  password?: Password;
  /** PEM bundle added to the system roots (not replacing them). */
  caFile?: string;
  skipVerify?: boolean;
  timeouts: { connectMs: number; headersMs: number; bodyIdleMs: number };
  logger: Logger;
  /** Called once per upstream HTTP exchange (for metrics). */
  observer?: (e: UpstreamEvent) => void;
  retry?: { maxRetries?: number; maxRetryAfterMs?: number };
  circuit?: { maxFails?: number; failTimeoutMs?: number };
  /** Socket pool per origin; tests use a tiny keep-alive so the process exits at once. */
  pool?: { connections?: number; keepAliveTimeoutMs?: number };
  /** Headers that authenticate each attempt (site peers); see transport.ts. */
  sign?: (method: 'GET' | 'HEAD', target: string) => Record<string, string>;
}

/*
 * undici parses HTTP with llhttp compiled to WebAssembly. V8 runs it with its
 * baseline compiler (Liftoff) and, once the parser is hot, recompiles it with
 * TurboFan: for llhttp's one huge function that is 200-250 ms of CPU on a
 * background thread, in every new process, during its first upstream
 * requests. On a 2-core node that is a cold pull's CPU (bench measure 5: a
 * fresh berth's 16 MiB cold fetch went from ~540 to ~350 CPU-ms), while the
 * Liftoff code parses no slower that we can measure (a 128 MiB fill: 900 and
 * 910 CPU-ms): bodies pass through as spans, the parser only frames them.
 * Wasm flags are read when a module is compiled, and undici compiles llhttp
 * on its first connection, after this module is loaded.
 */
setFlagsFromString('--liftoff-only');

/** Registries cap manifests at 4 MiB (Distribution's default); more is not a manifest. */
const MANIFEST_LIMIT = 4 * 1024 * 1024;
/** Tag lists are paginated upstream; this only stops a runaway answer. */
const TAGS_LIMIT = 16 * 1024 * 1024;
/** Docker schema1 types: Distribution serves them only as a rewrite of a schema2 image. */
const SCHEMA1: readonly string[] = [MEDIA_TYPES.dockerManifestV1Signed, MEDIA_TYPES.dockerManifestV1];

/** Path-safe repository/reference: keeps `/` between name components and the `:` of a digest. */
function encodePath(value: string): string {
  return value
    .split('/')
    .map((part) => encodeURIComponent(part).replace(/%3A/gi, ':'))
    .join('/');
}

function pullScope(repository: string): string {
  return `repository:${repository}:pull`;
}

class UpstreamClient implements RegistryClient {
  readonly registry: string;
  readonly #base: URL;
  readonly #circuit: Circuit;
  readonly #auth: Authenticator;
  readonly #close: () => Promise<void>;
  readonly #log: Logger;

  constructor(opts: ClientOptions) {
    this.registry = opts.registry;
    this.#base = new URL(opts.url);
    const log = opts.logger.child({ module: 'upstream', registry: opts.registry });
    this.#log = log;
    const { dispatcher, close } = createDispatcher({
      registry: opts.registry,
      timeouts: opts.timeouts,
      caFile: opts.caFile,
      skipVerify: opts.skipVerify,
      connections: opts.pool?.connections,
      keepAliveTimeoutMs: opts.pool?.keepAliveTimeoutMs,
    });
    this.#close = close;
    this.#circuit = new Circuit({
      registry: opts.registry,
      maxFails: opts.circuit?.maxFails ?? 3,
      failTimeoutMs: opts.circuit?.failTimeoutMs ?? 10_000,
    });
    const transport = createTransport({ registry: opts.registry, dispatcher, circuit: this.#circuit, observer: opts.observer, log, sign: opts.sign });
    const send = withRetry(transport, {
      maxRetries: opts.retry?.maxRetries ?? 2,
      maxRetryAfterMs: opts.retry?.maxRetryAfterMs ?? 5_000,
      log,
    });
    this.#auth = new Authenticator({ registry: opts.registry, upstream: this.#base, username: opts.username, password: opts.password, send, log });
  }

  #url(path: string, query = '', extra?: Record<string, string>): URL {
    // A base URL with a path prefix (a registry behind a reverse proxy) keeps it.
    const prefix = this.#base.pathname.replace(/\/+$/, '');
    const url = new URL(this.#base.origin + prefix + path);
    url.search = query;
    for (const [k, v] of Object.entries(extra ?? {})) url.searchParams.set(k, v);
    return url;
  }

  #exchange(
    kind: UpstreamEvent['kind'],
    method: 'GET' | 'HEAD',
    url: URL,
    scope: string | undefined,
    headers: Record<string, string>,
    ro: RequestOptions | undefined,
  ): Promise<Answer> {
    return this.#auth.send({ kind, method, url, headers, signal: ro?.signal, reqId: ro?.reqId }, scope);
  }

  async #manifest(method: 'GET' | 'HEAD', repository: string, reference: string, ro?: RequestOptions): Promise<ManifestAnswer | null> {
    const url = this.#url(`/v2/${encodePath(repository)}/manifests/${encodePath(reference)}`, '', ro?.query);
    const what = `${method} manifest ${repository}${isDigest(reference) ? '@' : ':'}${reference}`;
    const accept = ro?.accept || DEFAULT_ACCEPT;
    const answer = await this.#exchange('manifest', method, url, pullScope(repository), { accept }, ro);
    if (answer.status === 404) {
      answer.discard();
      return null;
    }
    if (answer.status !== 200) throw await statusError(answer, this.registry, what);

    const headerDigest = header(answer.headers, 'docker-content-digest')?.trim() || undefined;
    const mediaType = baseMediaType(header(answer.headers, 'content-type'));
    if (SCHEMA1.includes(mediaType) && !acceptAllows(accept, mediaType)) {
      // Distribution rewrites a schema2 image (or a list's linux/amd64 image) into a signed
      // schema1 manifest for a tag asked for with an Accept that names no type the tag has.
      // That is no stored manifest (its digest is not its bytes'): nothing of a type asked for.
      answer.discard();
      return null;
    }
    if (method === 'HEAD') {
      answer.discard();
      const size = contentLength(answer.headers);
      const digest = headerDigest ?? (isDigest(reference) ? reference : undefined);
      if (digest === undefined) throw this.#protocol(`${what}: no Docker-Content-Digest`);
      if (size === undefined) throw this.#protocol(`${what}: no Content-Length`);
      return { digest, mediaType, size };
    }

    const body = await answer.read(MANIFEST_LIMIT);
    const computed = sha256(body);
    // Verify what we can: a sha256 the upstream claims, and the digest we asked for.
    if (headerDigest !== undefined && headerDigest.startsWith('sha256:') && headerDigest !== computed) {
      throw this.#protocol(`${what}: body does not match Docker-Content-Digest ${headerDigest}`);
    }
    if (isDigest(reference) && reference !== computed) throw this.#protocol(`${what}: body does not match the requested digest`);
    return { digest: headerDigest ?? computed, mediaType, size: body.length, body };
  }

  getManifest(repository: string, reference: string, ro?: RequestOptions): Promise<ManifestAnswer | null> {
    return this.#manifest('GET', repository, reference, ro);
  }

  headManifest(repository: string, reference: string, ro?: RequestOptions): Promise<Omit<ManifestAnswer, 'body'> | null> {
    return this.#manifest('HEAD', repository, reference, ro);
  }

  async headBlob(repository: string, digest: string, ro?: RequestOptions): Promise<{ size: number } | null> {
    const url = this.#url(`/v2/${encodePath(repository)}/blobs/${encodePath(digest)}`, '', ro?.query);
    const what = `HEAD blob ${repository}@${digest}`;
    const answer = await this.#exchange('blob', 'HEAD', url, pullScope(repository), {}, ro);
    if (answer.status !== 200 && answer.status !== 404) throw await statusError(answer, this.registry, what);
    answer.discard();
    if (answer.status === 404) return null;
    const size = contentLength(answer.headers);
    if (size === undefined) throw this.#protocol(`${what}: no Content-Length`);
    return { size };
  }

  async getBlob(repository: string, digest: string, ro?: RequestOptions & { offset?: number }): Promise<BlobAnswer | null> {
    const offset = ro?.offset ?? 0;
    if (!Number.isSafeInteger(offset) || offset < 0) throw new RangeError(`blob offset must be a non-negative integer, got ${offset}`);
    const url = this.#url(`/v2/${encodePath(repository)}/blobs/${encodePath(digest)}`, '', ro?.query);
    const what = `GET blob ${repository}@${digest}`;
    const headers: Record<string, string> = offset > 0 ? { range: `bytes=${offset}-` } : {};
    const answer = await this.#exchange('blob', 'GET', url, pullScope(repository), headers, ro);
    if (answer.status === 404) {
      answer.discard();
      return null;
    }
    // undici emits UND_ERR_ABORTED when an unfinished body is destroyed; a caller
    // that destroys the body it is done with must not crash the daemon with an
    // unhandled 'error'. Readers (for await, pipeline) still see every error.
    if (answer.status === 200 || answer.status === 206) answer.body.on('error', () => {});
    if (answer.status === 200) {
      return { status: 200, offset: 0, size: contentLength(answer.headers), body: answer.body };
    }
    if (answer.status === 206 && offset > 0) {
      const range = parseContentRange(header(answer.headers, 'content-range'));
      if (!range || range.first !== offset) {
        answer.discard();
        throw this.#protocol(`${what}: 206 with Content-Range ${header(answer.headers, 'content-range') ?? '(none)'} for offset ${offset}`);
      }
      return { status: 206, offset, size: range.total, body: answer.body };
    }
    throw await statusError(answer, this.registry, what);
  }

  async getTags(repository: string, query: string, ro?: RequestOptions): Promise<{ body: Buffer; link?: string } | null> {
    const url = this.#url(`/v2/${encodePath(repository)}/tags/list`, query.replace(/^\?/, ''), ro?.query);
    const answer = await this.#exchange('tags', 'GET', url, pullScope(repository), { accept: 'application/json' }, ro);
    if (answer.status === 404) {
      answer.discard();
      return null;
    }
    if (answer.status !== 200) throw await statusError(answer, this.registry, `GET tags of ${repository}`);
    const body = await answer.read(TAGS_LIMIT);
    const link = header(answer.headers, 'link');
    return link === undefined ? { body } : { body, link };
  }

  /**
   * True on 200. Answers that are not a registry's (404, a 3xx left over) are
   * false; reachability, auth and rate-limit failures throw so `doctor` can
   * say which it was.
   */
  async ping(ro?: RequestOptions): Promise<boolean> {
    const answer = await this.#exchange('ping', 'GET', this.#url('/v2/'), undefined, {}, ro);
    if (answer.status === 200) {
      answer.discard();
      return true;
    }
    if (answer.status === 401 || answer.status === 403 || answer.status === 429 || answer.status >= 500) {
      throw await statusError(answer, this.registry, 'GET /v2/');
    }
    answer.discard();
    return false;
  }

  /**
   * GET /v2/ anonymously, answer ignored: a 401's challenge teaches the
   * Authenticator the scheme (so the first manifest request carries its
   * token on the first try instead of paying an anonymous 401 round trip),
   * and the socket stays in the pool. In a fresh process it also compiles
   * undici's parser, which otherwise the first pull waits for. Outside the
   * circuit and the metrics: it is nobody's request.
   */
  async warm(): Promise<void> {
    try {
      await this.#auth.learnScheme({ kind: 'ping', method: 'GET', url: this.#url('/v2/'), headers: {}, warmUp: true });
    } catch (err) {
      this.#log.debug({ err: (err as Error).message }, 'upstream warm-up failed; the first request will find out itself');
    }
  }

  health(): UpstreamHealth {
    return this.#circuit.health();
  }

  close(): Promise<void> {
    return this.#close();
  }

  #protocol(message: string): UpstreamError {
    return new UpstreamError('UPSTREAM_PROTOCOL', this.registry, `upstream ${this.registry} ${message}`);
  }
}

export function createRegistryClient(opts: ClientOptions): RegistryClient {
  return new UpstreamClient(opts);
}
