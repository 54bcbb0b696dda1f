/**
 * Assembles a running berth from a Config: the store, the upstream clients,
 * the mirror, the HTTP listener, and the order in which they stop.
 */
import fs from 'node:fs';
import https from 'node:https';
import { setTimeout as delay } from 'node:timers/promises';
import type http from 'node:http';
import type { AddressInfo } from 'node:net';
import { serve, type ServerType } from '@hono/node-server';
import type { Logger } from 'pino';
import type { Config } from './config/types.js';
import type { Index } from './store/index-db.js';
import type { Metrics } from './metrics/metrics.js';
import type { Mirror } from './cache/mirror.js';
import { createApp } from './http/app.js';
import { describeCert, loadPair, watchCertificate } from './http/tls.js';
import { zeroCopy } from './http/sendfile.js';
import { answerClientErrors } from './http/client-errors.js';
import { openRuntime } from './runtime.js';
import { schedulePrefetch } from './cache/prefetch.js';
import { hostPlatform, parsePlatform } from './oci/platform.js';
import { watchDaemon } from './metrics/watch.js';
import { startMetricsListener } from './metrics/listener.js';
import { memoryTrim } from './memory.js';
import { writeProbe } from './store/write-probe.js';

/** How long start-up waits on the upstream warm-up before it says it is serving (it goes on in the background). */
const WARM_WAIT_MS = 500;

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
  const rt = await openRuntime(config, logger, { daemon: true });
  const { index, mirror, metrics, layout } = rt;
  // Counters `berth status` reads from another process.
  metrics.onCacheResult = (kind, result) => index.counters.bump(`${kind}_${result}`);
  metrics.onServedBytes = (source, n) => index.counters.bump(`served_bytes_${source}`, n);

  // A file written in tmp/ (not access(W_OK), which says yes to root): src/store/write-probe.ts.
  const cacheWritable = writeProbe(layout.tmpDir, { logger });
  const readiness = async (): Promise<string[]> => {
    const problems: string[] = [];
    if (!index.db.open) problems.push('index closed');
    const unwritable = await cacheWritable();
    if (unwritable !== null) problems.push(unwritable);
    return problems;
  };
  // Cached blobs to plain-HTTP clients with sendfile(2) when the addon is there (TLS copies).
  const zc = zeroCopy(config.server.sendfile, logger);
  const app = createApp({ mirror, metrics, logger, readiness, audit: (e) => index.audit.record(e), zeroCopy: zc });
  // The audit record stays bounded: 30 days, 200 000 requests.
  const pruneAudit = () => index.audit.prune(Date.now() - 30 * 86_400_000, 200_000);
  pruneAudit();
  const auditTimer = setInterval(pruneAudit, 3_600_000);
  auditTimer.unref();
  const gate = rt.gate;
  if (gate) {
    metrics.watchPolicy(() => {
      const age = gate.snapshotAge();
      const s = gate.snapshotSyncedAt();
      return { ageSeconds: age === null ? null : age / 1000, lastSuccessSeconds: s === null ? null : s / 1000 };
    }, config.harbor!.offlineGraceMs / 1000);
    gate.start();
  }

  watchDaemon(rt);

  const tlsFiles = config.server.tlsCertFile && config.server.tlsKeyFile ? { certFile: config.server.tlsCertFile, keyFile: config.server.tlsKeyFile } : null;
  const server: ServerType = await new Promise((resolve, reject) => {
    const options = { fetch: app.fetch, port: config.server.port, hostname: config.server.host };
    const s = tlsFiles
      ? serve({ ...options, createServer: https.createServer, serverOptions: loadPair(tlsFiles) }, () => resolve(s))
      : serve(options, () => resolve(s));
    s.once('error', reject);
  });
  answerClientErrors(server as http.Server);
  // Memory start-up and bursts leave behind goes back once they are over (src/memory.ts); registry requests mark activity.
  const trimmer = memoryTrim({ logger, busy: () => mirror.fillsInFlight > 0 });
  const touch = (req: http.IncomingMessage): void => {
    if (req.url?.startsWith('/v2/')) trimmer.touch();
  };
  server.on('request', touch);
  const certWatch = tlsFiles ? watchCertificate(server as https.Server, tlsFiles, logger) : null;
  if (tlsFiles) logger.info({ certificate: describeCert(fs.readFileSync(tlsFiles.certFile)) }, 'serving HTTPS');
  // The peer listener: the node's own address, for the site's other berths only (signed requests).
  const peersConfig = config.peers;
  let peerServer: ServerType | null = null;
  let peerCertWatch: { stop(): void } | null = null;
  if (peersConfig && rt.site) {
    const { createPeerApp } = await import('./peers/server.js');
    const peerApp = createPeerApp({ mirror, metrics, logger, key: () => peersConfig.key.reveal(), clockWindowMs: peersConfig.clockWindowMs, zeroCopy: zc });
    const peerTls = peersConfig.tls;
    peerServer = await new Promise<ServerType>((resolve, reject) => {
      const options = { fetch: peerApp.fetch, port: peersConfig.port, hostname: peersConfig.host };
      const s = peerTls ? serve({ ...options, createServer: https.createServer, serverOptions: loadPair(peerTls) }, () => resolve(s)) : serve(options, () => resolve(s));
      s.once('error', reject);
    });
    answerClientErrors(peerServer as http.Server);
    peerServer.on('request', touch);
    if (peerTls) peerCertWatch = watchCertificate(peerServer as https.Server, peerTls, logger);
    logger.info({ listen: peersConfig.listen, tls: peerTls !== null, members: rt.site.members() }, 'listening for site peers');
  }
  // [server] metrics_listen: /metrics (and /healthz) alone on an address of its own, for a scraper.
  const metricsListener = config.server.metricsListen ? await startMetricsListener(config.server.metricsListen, metrics, logger) : null;
  const addr = server.address() as AddressInfo;
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  const url = `${tlsFiles ? 'https' : 'http'}://${host}:${addr.port}`;
  // Already answering: each upstream learns its auth scheme and opens a socket now, so the first pull
  // pays no 401 round trip, connect or parser compile. An upstream slow to answer does not hold the log line.
  const warming = rt.upstreams.warm();
  await Promise.race([warming, delay(WARM_WAIT_MS, undefined, { ref: false })]);
  logger.info({ url, cacheDir: layout.root, upstreams: config.upstreams.map((u) => u.registry) }, 'berth is serving');
  // Start-up is over once the warm-up is: one memory-reducing GC and malloc_trim (~6 MiB of idle RSS), at a quiet moment.
  void warming.then(async () => {
    if (!stopping) await trimmer.afterStartup();
  });
  // Over max_size already (max_size lowered, or a cache carried over): trim in the background.
  rt.store.scheduleEviction(0);
  const configured = config.prefetch.map((p) => ({ image: p.image, platforms: p.platforms.length > 0 ? p.platforms.map(parsePlatform) : [hostPlatform()] }));
  const prefetch = schedulePrefetch(
    mirror,
    index.pins,
    logger,
    // The [[prefetch]] list, plus what Harbor marks for the site, asked anew each run.
    async () => [...configured, ...(rt.gate ? (await rt.gate.markedImages()).map((image) => ({ image, platforms: [hostPlatform()] })) : [])],
    config.cache.prefetchIntervalMs,
    // With site peers each node prefetches the blobs it owns: the site's prefetch crosses the WAN once.
    rt.site ? (d) => rt.site!.owns(d) : undefined,
  );

  let stopping: Promise<void> | null = null;
  const stop = (drainMs = config.server.drainTimeoutMs): Promise<void> => {
    stopping ??= (async () => {
      logger.info({ fills: mirror.fillsInFlight, drainMs }, 'stopping: draining transfers');
      prefetch.stop();
      trimmer.stop();
      clearInterval(auditTimer);
      certWatch?.stop();
      peerCertWatch?.stop();
      const closed = new Promise<void>((res) => server.close(() => res()));
      const peerClosed = peerServer ? new Promise<void>((res) => peerServer!.close(() => res())) : Promise.resolve();
      await mirror.drain(drainMs);
      // Idle keep-alive sockets would hold close() open; responses still streaming get drainMs.
      (server as unknown as { closeIdleConnections?: () => void }).closeIdleConnections?.();
      (peerServer as unknown as { closeIdleConnections?: () => void } | null)?.closeIdleConnections?.();
      const timer = setTimeout(() => {
        (server as unknown as { closeAllConnections?: () => void }).closeAllConnections?.();
        (peerServer as unknown as { closeAllConnections?: () => void } | null)?.closeAllConnections?.();
      }, drainMs);
      timer.unref();
      await closed;
      await peerClosed;
      await metricsListener?.close();
      clearTimeout(timer);
      await rt.close();
      logger.info('stopped');
    })();
    return stopping;
  };

  return { url, port: addr.port, mirror, metrics, index, stop };
}
