/**
 * One HTTP exchange with the upstream: circuit gate, undici request, metrics
 * event, error mapping. Retry and auth are layered on top of `Send` (retry.ts,
 * auth.ts), the way undici composes small handlers around a dispatcher.
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import type { Dispatcher } from 'undici';
import type { Circuit } from './circuit.js';
import { toUpstreamError } from './errors.js';
import { reportTlsFailure } from './tls-probe.js';
import { contentLength } from './headers.js';
import { UpstreamError, isUnreachable, type UpstreamEvent } from './types.js';
import type { RequestDispatcher } from './dispatcher.js';

export interface Exchange {
  kind: UpstreamEvent['kind'];
  method: 'GET' | 'HEAD';
  url: URL;
  headers: Record<string, string>;
  signal?: AbortSignal | undefined;
  reqId?: string | undefined;
  /** The start-up warm-up: outside the circuit and the metrics (an upstream away at start opens nothing). */
  warmUp?: boolean | undefined;
}

export interface Answer {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  /** Open until read, returned to a caller, or discarded. */
  readonly body: Readable;
  /** The final response came from another URL than the one requested (a followed redirect). */
  readonly redirected: boolean;
  /** The whole body, at most `limit` bytes (more is UPSTREAM_PROTOCOL). */
  read(limit: number): Promise<Buffer>;
  /** Drains a body we will not use so its socket goes back to the pool. */
  discard(): void;
}

export type Send = (ex: Exchange) => Promise<Answer>;

export interface TransportOptions {
  registry: string;
  dispatcher: RequestDispatcher;
  circuit: Circuit;
  observer?: ((e: UpstreamEvent) => void) | undefined;
  log: Logger;
  /** Headers that authenticate each attempt on its own (site peers sign method and target per request). */
  sign?: ((method: 'GET' | 'HEAD', target: string) => Record<string, string>) | undefined;
}

/** Registries log it; "undici" would tell an operator nothing. */
const USER_AGENT = 'berth';

/** undici drains up to this much to keep the socket; bigger bodies close it instead. */
const DISCARD_LIMIT = 64 * 1024;

/** Destroys a body we stopped reading; the error undici then emits has no one to tell. */
function abandon(body: Readable): void {
  body.on('error', () => {});
  body.destroy();
}

function wasRedirected(context: object): boolean {
  const history = (context as { history?: unknown }).history;
  return Array.isArray(history) && history.length > 1;
}

export function createTransport(opts: TransportOptions): Send {
  const { registry, dispatcher, circuit, log } = opts;

  const emit = (ex: Exchange, status: number | 'error', started: number): void => {
    if (!opts.observer || ex.warmUp) return;
    try {
      opts.observer({ registry, kind: ex.kind, method: ex.method, status, durationMs: performance.now() - started });
    } catch (err) {
      // A metrics bug must not fail a pull.
      log.warn({ err }, 'upstream observer threw');
    }
  };

  const answer = (res: Dispatcher.ResponseData, signal: AbortSignal | undefined): Answer => {
    const body = res.body;
    return {
      status: res.statusCode,
      headers: res.headers,
      body,
      redirected: wasRedirected(res.context),
      async read(limit: number): Promise<Buffer> {
        const declared = contentLength(res.headers);
        if (declared !== undefined && declared > limit) {
          abandon(body);
          throw new UpstreamError('UPSTREAM_PROTOCOL', registry, `upstream ${registry} answered ${declared} bytes, more than the ${limit} allowed`);
        }
        const chunks: Buffer[] = [];
        let size = 0;
        try {
          for await (const chunk of body) {
            const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as Uint8Array);
            size += buf.length;
            if (size > limit) {
              abandon(body);
              throw new UpstreamError('UPSTREAM_PROTOCOL', registry, `upstream ${registry} answer exceeds ${limit} bytes`);
            }
            chunks.push(buf);
          }
        } catch (err) {
          if (signal?.aborted) throw err;
          const mapped = toUpstreamError(err, registry);
          // A body that stalls is as much a sign of a dead link as a connect timeout.
          if (isUnreachable(mapped)) circuit.failed(mapped);
          throw mapped;
        }
        return Buffer.concat(chunks, size);
      },
      discard(): void {
        body.dump({ limit: DISCARD_LIMIT }).catch(() => {
          // the socket is destroyed instead of reused: nothing leaks, nothing to report
        });
      },
    };
  };

  return async function send(ex: Exchange): Promise<Answer> {
    if (!ex.warmUp) circuit.admit();
    const started = performance.now();
    let res: Dispatcher.ResponseData;
    const path = ex.url.pathname + ex.url.search;
    try {
      res = await dispatcher.request({
        origin: ex.url.origin,
        path,
        method: ex.method,
        headers: { 'user-agent': USER_AGENT, ...ex.headers, ...opts.sign?.(ex.method, path) },
        signal: ex.signal,
      });
    } catch (err) {
      emit(ex, 'error', started);
      if (ex.signal?.aborted) {
        // The caller gave up; that says nothing about the upstream.
        circuit.released();
        throw err;
      }
      const mapped = toUpstreamError(err, registry);
      if (ex.warmUp) throw mapped;
      circuit.failed(mapped);
      if (mapped.code === 'UPSTREAM_TLS' && ex.url.protocol === 'https:') reportTlsFailure(ex.url, mapped.message, log);
      log.debug({ kind: ex.kind, method: ex.method, path: ex.url.pathname, code: mapped.code, reqId: ex.reqId }, 'upstream exchange failed');
      throw mapped;
    }
    if (!ex.warmUp) circuit.succeeded();
    emit(ex, res.statusCode, started);
    if (log.isLevelEnabled('debug')) {
      log.debug(
        { kind: ex.kind, method: ex.method, path: ex.url.pathname, status: res.statusCode, ms: Math.round(performance.now() - started), reqId: ex.reqId },
        'upstream exchange',
      );
    }
    return answer(res, ex.signal);
  };
}
