/**
 * Assembles a running berth from a Config: the store, the upstream clients,
 * the mirror, the HTTP listener, and the order in which they stop.
 */
import fs from 'node:fs';
import type { AddressInfo } from 'node:net';
import { serve, type ServerType } from '@hono/node-server';
import type { Logger } from 'pino';
import type { Config } from './config/types.js';
import { Layout } from './store/layout.js';
import { BlobFiles } from './store/blobs.js';
import { Index } from './store/index-db.js';
import { Metrics } from './metrics/metrics.js';
import { Upstreams } from './cache/upstreams.js';
import { Mirror } from './cache/mirror.js';
import { createApp } from './http/app.js';
import { createRegistryClient } from './upstream/client.js';
import type { RegistryClient } from './upstream/types.js';

export interface Daemon {
  url: string;
  port: number;
  mirror: Mirror;
  metrics: Metrics;
  index: Index;
  /** Stops accepting, drains transfers for up to drainMs, closes everything. */
  stop(drainMs?: number): Promise<void>;
}

export async function startDaemon(config: Config, logger: Logger): Promise<Daemon> {
  const layout = new Layout(config.cache.dir);
  const files = new BlobFiles(layout);
  const removed = await files.init();
  if (removed > 0) logger.info({ removed }, 'removed leftovers of interrupted writes');
  const index = new Index(layout.indexFile);
  const metrics = new Metrics({ cacheStats: () => index.stats() });

  const clients: RegistryClient[] = config.upstreams.map((u) => {
    const opts: Parameters<typeof createRegistryClient>[0] = {
      registry: u.registry,
      url: u.url,
      timeouts: u.timeouts,
      skipVerify: u.skipVerify,
      logger: logger.child({ upstream: u.registry }),
      observer: (e) => {
        metrics.upstreamRequests.inc({ upstream: e.registry, kind: e.kind, code: String(e.status) });
        metrics.upstreamDuration.observe({ upstream: e.registry, kind: e.kind }, e.durationMs / 1000);
        metrics.upstreamUp.set({ upstream: e.registry }, e.status === 'error' || (typeof e.status === 'number' && e.status >= 500) ? 0 : 1);
      },
    };
    if (u.username !== undefined) opts.username = u.username;
    if (u.password !== undefined) opts.password = u.password;
    if (u.caFile !== undefined) opts.caFile = u.caFile;
    if (u.skipVerify) logger.warn({ upstream: u.registry }, 'TLS verification is OFF for this upstream (skip_verify)');
    return createRegistryClient(opts);
  });
  const upstreams = new Upstreams(clients);
  const mirror = new Mirror({
    index,
    files,
    upstreams,
    metrics,
    logger,
    tagTtlMs: config.cache.tagTtlMs,
    serveStale: config.cache.serveStale,
  });

  const readiness = (): string[] => {
    const problems: string[] = [];
    if (!index.db.open) problems.push('index closed');
    try {
      fs.accessSync(layout.tmpDir, fs.constants.W_OK);
    } catch {
      problems.push('cache directory not writable');
    }
    return problems;
  };
  const app = createApp({ mirror, metrics, logger, readiness });

  const server: ServerType = await new Promise((resolve, reject) => {
    const s = serve({ fetch: app.fetch, port: config.server.port, hostname: config.server.host }, () => resolve(s));
    s.once('error', reject);
  });
  const addr = server.address() as AddressInfo;
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  const url = `http://${host}:${addr.port}`;
  logger.info({ url, cacheDir: layout.root, upstreams: config.upstreams.map((u) => u.registry) }, 'berth is serving');

  let stopping: Promise<void> | null = null;
  const stop = (drainMs = config.server.drainTimeoutMs): Promise<void> => {
    stopping ??= (async () => {
      logger.info({ fills: mirror.blobs.fills.size, drainMs }, 'stopping: draining transfers');
      const closed = new Promise<void>((res) => server.close(() => res()));
      await mirror.drain(drainMs);
      // Idle keep-alive sockets would hold close() open; responses still streaming get drainMs.
      (server as unknown as { closeIdleConnections?: () => void }).closeIdleConnections?.();
      const timer = setTimeout(() => (server as unknown as { closeAllConnections?: () => void }).closeAllConnections?.(), drainMs);
      timer.unref();
      await closed;
      clearTimeout(timer);
      await upstreams.close();
      index.close();
      logger.info('stopped');
    })();
    return stopping;
  };

  return { url, port: addr.port, mirror, metrics, index, stop };
}
