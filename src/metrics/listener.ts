/**
 * The optional metrics listener ([server] metrics_listen): plain HTTP with
 * GET /metrics and GET /healthz and nothing else, so a scrape address can be
 * opened to the network (a hostNetwork pod's node address) without opening
 * the registry API with it. Without metrics_listen there is none and
 * /metrics is served on the main listener only, as before.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import type { Metrics } from './metrics.js';

export interface MetricsListener {
  /** http://host:port */
  url: string;
  close(): Promise<void>;
}

export async function startMetricsListener(at: { host: string; port: number; listen: string }, metrics: Metrics, logger: Logger): Promise<MetricsListener> {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const method = req.method ?? 'GET';
    const answer = (status: number, type: string, body: string, extra: Record<string, string> = {}) => {
      res.writeHead(status, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body), ...extra });
      res.end(method === 'HEAD' ? undefined : body);
    };
    if (path !== '/metrics' && path !== '/healthz') return answer(404, 'text/plain; charset=utf-8', 'not found: this listener serves /metrics and /healthz only\n');
    if (method !== 'GET' && method !== 'HEAD') return answer(405, 'text/plain; charset=utf-8', 'method not allowed\n', { Allow: 'GET, HEAD' });
    if (path === '/healthz') return answer(200, 'text/plain; charset=utf-8', 'ok\n');
    metrics.render().then(
      ({ contentType, body }) => answer(200, contentType, body),
      (err: unknown) => {
        logger.error({ err: err instanceof Error ? err.message : String(err) }, 'cannot render /metrics');
        answer(500, 'text/plain; charset=utf-8', 'metrics unavailable\n');
      },
    );
  });
  // A scraper keeps its connection open between scrapes; close() must not wait on it.
  server.keepAliveTimeout = 65_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(at.port, at.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address() as AddressInfo;
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  const url = `http://${host}:${addr.port}`;
  logger.info({ url, listen: at.listen }, 'serving /metrics on the metrics listener');
  return {
    url,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
