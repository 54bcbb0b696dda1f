/**
 * The transport: one undici Agent per upstream, with the redirect interceptor
 * composed on top. It must be an Agent (not a Pool/Client): registries answer
 * blob GETs with a 307 to object storage on another origin, and only an Agent
 * can open a pool for that origin. The interceptor drops `Authorization` on a
 * cross-origin hop; nothing here may add it back (presigned S3 URLs reject a
 * second credential, and it would hand our token to a third party).
 */
import { readFileSync } from 'node:fs';
import { rootCertificates } from 'node:tls';
import { Agent, interceptors, type Dispatcher } from 'undici';
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

export interface UpstreamDispatcher {
  dispatcher: Dispatcher;
  close(): Promise<void>;
}

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
  const agent = new Agent({
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
  const dispatcher = agent.compose(interceptors.redirect({ maxRedirections: MAX_REDIRECTIONS }));
  return {
    dispatcher,
    close: () => agent.close(),
  };
}
