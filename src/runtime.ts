/**
 * What the daemon and every CLI command that touches the cache share: the
 * index, the content store, the upstream clients and the mirror, built from
 * a Config in one direction (each part from those before it). CLI commands
 * run beside a live daemon on the same cache (SQLite WAL takes care of the
 * index), so only the daemon cleans tmp/ at start.
 */
import type { Logger } from 'pino';
import type { Config, UpstreamConfig } from './config/types.js';
import { viaHarborProject } from './upstream/via-harbor.js';
import type { HarborGate } from './harbor/gate.js';
import { Layout } from './store/layout.js';
import { BlobFiles } from './store/blobs.js';
import { Index } from './store/index-db.js';
import { Metrics } from './metrics/metrics.js';
import { Upstreams } from './cache/upstreams.js';
import { Mirror } from './cache/mirror.js';
import { ContentStore } from './cache/content-store.js';
import type { SitePeers } from './peers/index.js';
import { createRegistryClient } from './upstream/client.js';
import type { RegistryClient } from './upstream/types.js';

export interface Runtime {
  config: Config;
  logger: Logger;
  layout: Layout;
  index: Index;
  store: ContentStore;
  metrics: Metrics;
  upstreams: Upstreams;
  mirror: Mirror;
  /** The site's other berths, when [peers] is configured (the daemon only). */
  site: SitePeers | null;
  /** Harbor access and policy, when [harbor] is configured. */
  gate: HarborGate | null;
  close(): Promise<void>;
}

export function createUpstreamClients(config: Config, logger: Logger, metrics?: Metrics): RegistryClient[] {
  return config.upstreams.map((u) => {
    const direct = upstreamClient(u, logger, metrics);
    if (!u.viaHarborProject || !config.harbor) return direct;
    const h = config.harbor;
    // Harbor gets Harbor's credentials only, never the upstream's.
    const throughHarbor: UpstreamConfig = { registry: u.registry, url: h.url, skipVerify: h.skipVerify, timeouts: u.timeouts };
    if (h.username !== undefined) throughHarbor.username = h.username;
    if (h.password !== undefined) throughHarbor.password = h.password;
    if (h.caFile !== undefined) throughHarbor.caFile = h.caFile;
    return viaHarborProject(direct, upstreamClient(throughHarbor, logger, metrics), u.viaHarborProject, logger.child({ upstream: u.registry }));
  });
}

function upstreamClient(u: UpstreamConfig, logger: Logger, metrics?: Metrics): RegistryClient {
  const opts: Parameters<typeof createRegistryClient>[0] = {
    registry: u.registry,
    url: u.url,
    timeouts: u.timeouts,
    skipVerify: u.skipVerify,
    logger: logger.child({ upstream: u.registry }),
  };
  if (metrics) {
    opts.observer = (e) => {
      metrics.upstreamRequests.inc({ upstream: e.registry, kind: e.kind, code: String(e.status) });
      metrics.upstreamDuration.observe({ upstream: e.registry, kind: e.kind }, e.durationMs / 1000);
      const up = e.status === 'error' || (typeof e.status === 'number' && e.status >= 500) ? 0 : 1;
      metrics.upstreamUp.set({ upstream: e.registry }, up);
      if (up === 1) metrics.upstreamLastSuccess.set({ upstream: e.registry }, Date.now() / 1000);
    };
  }
  if (u.username !== undefined) opts.username = u.username;
  if (u.password !== undefined) opts.password = u.password;
  if (u.caFile !== undefined) opts.caFile = u.caFile;
  return createRegistryClient(opts);
}

export async function openRuntime(config: Config, logger: Logger, opts: { daemon: boolean }): Promise<Runtime> {
  const layout = new Layout(config.cache.dir);
  const files = new BlobFiles(layout);
  const removed = await files.init({ cleanTmp: opts.daemon });
  if (removed > 0) logger.info({ removed }, 'removed leftovers of interrupted writes');
  const index = new Index(layout.indexFile, {
    onBackgroundError: (err) => logger.warn({ code: (err as { code?: unknown }).code, err: (err as Error).message }, 'could not write batched index updates (disk full?); will retry'),
  });
  if (opts.daemon) {
    const completed = index.content.recoverPublishes((d) => files.sizeOnDisk(d));
    if (completed > 0) logger.info({ completed }, 'completed blob publishes a crash interrupted');
  }
  const metrics = new Metrics({ cacheStats: () => index.content.stats(), defaultMetrics: opts.daemon });
  if (opts.daemon) {
    for (const u of config.upstreams) if (u.skipVerify) logger.warn({ upstream: u.registry }, 'TLS verification is OFF for this upstream (skip_verify)');
  }
  const store = new ContentStore({ files, index: index.content, logger, metrics, maxBytes: config.cache.maxSizeBytes });
  const upstreams = new Upstreams(createUpstreamClients(config, logger, metrics));
  // Harbor's and the site peers' modules are imported only when configured (idle RSS, docs/performance.md).
  const gate = config.harbor
    ? new (await import('./harbor/gate.js')).HarborGate({ harbor: config.harbor, upstreams: config.upstreams, db: index.db, heldManifests: (r) => store.heldManifests(r), cachedManifest: (d) => store.manifestBody(d), logger: logger.child({ module: 'harbor' }), metrics })
    : null;
  // Only the daemon asks the site's peers; a CLI command is one node's business.
  const site = opts.daemon && config.peers ? await (await import('./peers/index.js')).openSite(config.peers, logger, metrics) : null;
  const mirror = new Mirror({
    gate,
    site,
    store,
    refusals: index.refusals,
    upstreams,
    metrics,
    logger,
    tagTtlMs: config.cache.tagTtlMs,
    serveStale: config.cache.serveStale,
    revalidateTimeoutMs: config.cache.revalidateTimeoutMs,
  });
  let closed = false;
  return {
    config,
    logger,
    layout,
    index,
    store,
    metrics,
    upstreams,
    mirror,
    gate,
    site,
    async close() {
      if (closed) return;
      closed = true;
      store.close();
      await site?.close();
      await gate?.close();
      await upstreams.close();
      index.close();
    },
  };
}
