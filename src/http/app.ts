/**
 * The hono application: request ids and access logs, the registry routes,
 * the ops endpoints, and one onError that turns any error into the OCI
 * envelope (never a stack trace).
 */
import { randomUUID } from 'node:crypto';
import { Hono } from 'hono';
import type { HttpBindings } from '@hono/node-server';
import type { Logger } from 'pino';
import type { Mirror } from '../cache/mirror.js';
import type { Metrics } from '../metrics/metrics.js';
import { OciError } from '../oci/errors.js';
import { errorResponse } from './respond.js';
import { registerRegistryRoutes } from './registry-routes.js';
import type { AuditEntry } from '../store/index-db.js';
import type { ZeroCopy } from './sendfile.js';

export type AppEnv = {
  Bindings: Partial<HttpBindings>;
  Variables: { reqId: string; route: string; source: string; digest: string };
};

export interface AppDeps {
  mirror: Mirror;
  metrics: Metrics;
  logger: Logger;
  /** Why berth is not ready, or [] when it is. */
  readiness: () => Promise<string[]>;
  /** Records each manifest request (the audit record). */
  audit?: (e: AuditEntry) => void;
  /** sendfile(2) for cached blobs, or null/absent for the copying path. */
  zeroCopy?: ZeroCopy | null;
}

const REQ_ID_RE = /^[A-Za-z0-9._-]{1,64}$/;

export function createApp(deps: AppDeps): Hono<AppEnv> {
  const { mirror, metrics, logger } = deps;
  const app = new Hono<AppEnv>();

  app.use('*', async (c, next) => {
    const incoming = c.req.header('x-request-id');
    const reqId = incoming && REQ_ID_RE.test(incoming) ? incoming : randomUUID();
    c.set('reqId', reqId);
    c.set('route', 'other');
    const started = process.hrtime.bigint();
    await next();
    c.res.headers.set('X-Request-Id', reqId);
    const finish = (status: number) => {
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      const route = c.get('route');
      metrics.httpRequests.inc({ route, method: c.req.method, code: String(status) });
      metrics.httpDuration.observe({ route, method: c.req.method }, seconds);
      if (route === 'ops') return;
      const line = { reqId, method: c.req.method, path: c.req.path.slice(0, 300), status, ms: Math.round(seconds * 1000), source: c.get('source'), digest: c.get('digest') };
      if (status >= 500) logger.warn(line, 'request');
      else logger.info(line, 'request');
    };
    const outgoing = c.env?.outgoing;
    if (outgoing && outgoing.headersSent) {
      // A body written straight to the socket: log when it is done.
      outgoing.once('close', () => finish(outgoing.statusCode));
    } else finish(c.res.status);
  });

  app.get('/healthz', (c) => {
    c.set('route', 'ops');
    return c.text('ok\n');
  });
  app.get('/readyz', async (c) => {
    c.set('route', 'ops');
    const problems = await deps.readiness();
    return problems.length === 0 ? c.text('ready\n') : c.json({ ready: false, problems }, 503);
  });
  app.get('/metrics', async (c) => {
    c.set('route', 'ops');
    const { contentType, body } = await metrics.render();
    return c.body(body, 200, { 'Content-Type': contentType });
  });

  registerRegistryRoutes(app, mirror, metrics, deps.audit, deps.zeroCopy);

  app.notFound((c) => errorResponse(c, new OciError('NOT_FOUND', 'not found')));
  app.onError((err, c) => {
    if (!(err instanceof OciError)) logger.error({ reqId: c.get('reqId'), err }, 'unexpected error');
    return errorResponse(c, err);
  });
  return app;
}
