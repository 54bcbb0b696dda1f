/**
 * The peer listener: what the site's other berths may ask this one, on its
 * own address (`[peers] listen`), never on containerd's. Every request must
 * be signed with the site key (auth.ts): anything unsigned, badly signed,
 * outside the clock window or replayed is 401 with nothing served; a signed
 * write is 405. A signed caller may read blobs (from the cache, or filled
 * from this node's upstream, never from a third node) and manifests or a
 * tag's last known digest (from the cache only). Per-repository links hold
 * here as everywhere; the access and policy checks are the asking node's.
 */
import { randomUUID } from 'node:crypto';
import { Hono } from 'hono';
import type { Logger } from 'pino';
import type { Mirror, Target } from '../cache/mirror.js';
import type { Metrics } from '../metrics/metrics.js';
import { OciError } from '../oci/errors.js';
import { parseV2Path } from '../oci/paths.js';
import type { AppEnv } from '../http/app.js';
import { API_VERSION_HEADER, errorResponse } from '../http/respond.js';
import { rawTarget, sendBlob } from '../http/registry-routes.js';
import type { ZeroCopy } from '../http/sendfile.js';
import { ReplayGuard, verifyPeerRequest } from './auth.js';

export interface PeerAppDeps {
  mirror: Mirror;
  metrics: Metrics;
  logger: Logger;
  key: () => Buffer;
  clockWindowMs: number;
  now?: () => number;
  /** sendfile(2) for cached blobs on a plain-HTTP peer listener. */
  zeroCopy?: ZeroCopy | null;
}

export function createPeerApp(deps: PeerAppDeps): Hono<AppEnv> {
  const { mirror, metrics, logger } = deps;
  const now = deps.now ?? Date.now;
  const replay = new ReplayGuard({ windowMs: deps.clockWindowMs });
  const app = new Hono<AppEnv>();
  const log = logger.child({ listener: 'peers' });

  app.use('*', async (c, next) => {
    const reqId = randomUUID();
    c.set('reqId', reqId);
    c.set('route', 'other');
    const started = performance.now();
    await next();
    c.res.headers.set('X-Request-Id', reqId);
    const finish = (status: number) => {
      const route = c.get('route');
      const result = status < 300 ? 'ok' : status === 401 ? 'unauthorized' : status === 404 ? 'not_found' : status === 412 || status === 403 ? 'refused' : 'error';
      metrics.peerServed.inc({ kind: route === 'blob' || route === 'manifest' ? route : 'other', result });
      log.info({ reqId, method: c.req.method, path: c.req.path.slice(0, 300), status, ms: Math.round(performance.now() - started), peer: c.env?.incoming?.socket?.remoteAddress }, 'peer request');
    };
    const outgoing = c.env?.outgoing;
    if (outgoing && outgoing.headersSent) outgoing.once('close', () => finish(outgoing.statusCode));
    else finish(c.res.status);
  });

  app.use('*', async (c) => {
    const { path, query } = rawTarget(c);
    // The signature covers the request target exactly as sent.
    const url = new URL(c.req.url);
    const signed = c.env?.incoming?.url ?? url.pathname + url.search;
    const verdict = verifyPeerRequest(deps.key(), { method: c.req.method, path: signed, headers: c.req.raw.headers, now: now() }, replay);
    if (!verdict.ok) {
      log.warn({ reason: verdict.reason, detail: verdict.detail, peer: c.env?.incoming?.socket?.remoteAddress }, 'peer request refused: not signed with the site key');
      throw new OciError('UNAUTHORIZED', 'site peers only: sign requests with the site key');
    }
    const method = c.req.method;
    if (method !== 'GET' && method !== 'HEAD') throw new OciError('UNSUPPORTED', 'site peers only read');
    if (path !== '/v2' && !path.startsWith('/v2/')) throw new OciError('NOT_FOUND', 'not found');
    const route = parseV2Path(path);
    c.set('route', route.kind);
    const head = method === 'HEAD';
    const t: Target = { ns: query.get('ns'), name: 'name' in route ? route.name : '', reqId: c.get('reqId') };
    switch (route.kind) {
      case 'base':
        return c.json({}, 200, API_VERSION_HEADER);
      case 'blob': {
        const handle = await mirror.blob(t, route.digest, { head, fromPeer: true });
        return sendBlob(c, handle, head, (_source, n) => metrics.peerBytes.inc({ direction: 'sent' }, n), deps.zeroCopy ?? null);
      }
      case 'manifest': {
        const m = mirror.peerManifest(t, route.reference, route.byDigest);
        if (!m) throw new OciError('MANIFEST_UNKNOWN', 'manifest unknown to this peer', { reference: route.reference });
        c.set('digest', m.digest);
        const headers = { ...API_VERSION_HEADER, 'Content-Type': m.mediaType, 'Content-Length': String(m.body.length), 'Docker-Content-Digest': m.digest };
        return new Response(head ? null : new Uint8Array(m.body.buffer as ArrayBuffer, m.body.byteOffset, m.body.length), { status: 200, headers });
      }
      default:
        throw new OciError('NOT_FOUND', 'not served to peers');
    }
  });

  app.onError((err, c) => {
    if (!(err instanceof OciError)) log.error({ reqId: c.get('reqId'), err }, 'unexpected error on the peer listener');
    return errorResponse(c, err);
  });
  return app;
}
