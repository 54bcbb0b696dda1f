/**
 * The transport: one undici Agent per upstream, with the redirect interceptor
 * composed on top. It must be an Agent (not a Pool/Client): registries answer
 * blob GETs with a 307 to object storage on another origin, and only an Agent
 * can open a pool for that origin. The interceptor drops `Authorization` on a
 * cross-origin hop; nothing here may add it back (presigned S3 URLs reject a
 * second credential, and it would hand our token to a third party).
 *
 * undici itself is loaded, and the Agent built, at the first request, not at
 * import: a CLI command that asks no upstream never carries it (~2-3 MiB of
 * RSS). The daemon's first request is its start-up warm-up (GET /v2/,
 * UpstreamClient.warm), so a client's first pull does not pay the ~20-80 ms
 * of loading it (docs/performance.md, Memory). `ca_file` is still read here,
 * so an unreadable one fails at start as before.
 */
import { readFileSync } from 'node:fs';
import { rootCertificates } from 'node:tls';
import { createRequire } from 'node:module';
import type * as Undici from 'undici';
import type { Agent, Dispatcher } from 'undici';
import { UpstreamError } from './types.js';

export interface DispatcherOptions {
  registry: string;
  timeouts: { connectMs: number; headersMs: number; bodyIdleMs: number };
  /** PEM bundle trusted in addition to the system roots (a site's private Harbor CA). */
  caFile?: string;
  skipVerify?: boolean;
  /** Sockets per origin; enough for containerd's parallel layer pulls. */
  connections?: number;
  keepAliveTimeoutMs?: number;
}

/** What berth asks of a dispatcher: `request()` (a whole undici Dispatcher fits too). */
export interface RequestDispatcher {
  request(options: Dispatcher.RequestOptions): Promise<Dispatcher.ResponseData>;
}

export interface UpstreamDispatcher {
  dispatcher: RequestDispatcher;
  close(): Promise<void>;
}

/** The parts of undici berth uses. */
export interface UndiciParts {
  Agent: typeof Undici.Agent;
  interceptors: { redirect: typeof Undici.interceptors.redirect };
}

let undici: Promise<UndiciParts> | undefined;
/**
 * undici, loaded once, when a dispatcher first sends: its Agent, the
 * Dispatcher API (`request()`, as the package's index.js adds it) and the
 * redirect interceptor, module by module. The package's index also loads
 * fetch, WebSocket, the caches and the mocks (~5 MiB and ~100 ms more here).
 */
export const loadUndici = (): Promise<UndiciParts> =>
  (undici ??= Promise.resolve().then(() => {
    const require = createRequire(import.meta.url);
    const Dispatcher = require('undici/lib/dispatcher/dispatcher.js') as typeof Undici.Dispatcher;
    if (!('request' in Dispatcher.prototype)) Object.assign(Dispatcher.prototype, require('undici/lib/api/index.js'));
    return {
      Agent: require('undici/lib/dispatcher/agent.js') as typeof Undici.Agent,
      interceptors: { redirect: require('undici/lib/interceptor/redirect.js') as typeof Undici.interceptors.redirect },
    };
  }));

const MAX_REDIRECTIONS = 5;

function trustedCas(opts: DispatcherOptions): string[] | undefined {
  if (!opts.caFile) return undefined;
  let pem: string;
  try {
    pem = readFileSync(opts.caFile, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    throw new UpstreamError('UPSTREAM_TLS', opts.registry, `cannot read ca_file ${opts.caFile} (${code})`, { cause: err });
  }
  // Setting `ca` replaces Node's trust store, so keep the public roots: a
  // private CA for Harbor must not break the redirect to a public CDN.
  return [...rootCertificates, pem];
}

export function createDispatcher(opts: DispatcherOptions): UpstreamDispatcher {
  const ca = trustedCas(opts);
  let agent: Agent | undefined;
  let composed: Promise<Dispatcher> | undefined;
  let closed = false;
  const ready = (): Promise<Dispatcher> =>
    (composed ??= loadUndici().then(async ({ Agent, interceptors }) => {
      agent = new Agent({
        connections: opts.connections ?? 16,
        keepAliveTimeout: opts.keepAliveTimeoutMs ?? 30_000,
        headersTimeout: opts.timeouts.headersMs,
        // Between chunks, not for the whole body: a 2 GB layer on a slow link is fine
        // as long as bytes keep arriving.
        bodyTimeout: opts.timeouts.bodyIdleMs,
        connect: {
          timeout: opts.timeouts.connectMs,
          rejectUnauthorized: opts.skipVerify !== true,
          ...(ca ? { ca } : {}),
        },
      });
      // Closed before the first request: the Agent is closed too, so requests fail as on a closed Agent.
      if (closed) await agent.close();
      return agent.compose(interceptors.redirect({ maxRedirections: MAX_REDIRECTIONS }));
    }));
  return {
    dispatcher: { request: async (options) => (await ready()).request(options) },
    async close() {
      closed = true;
      if (composed) await composed;
      await agent?.close();
    },
  };
}
