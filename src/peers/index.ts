/**
 * Site peers, assembled from `[peers]`: the membership source the config
 * names (a static list, DNS, or a Kubernetes EndpointSlice watch) and the
 * SitePeers the cache asks. The peer listener is the daemon's (server.ts).
 */
import type { Logger } from 'pino';
import type { PeersConfig } from '../config/types.js';
import type { Metrics } from '../metrics/metrics.js';
import { DnsMembership, StaticMembership, type Membership } from './membership.js';
import { kubernetesMembership } from './kubernetes.js';
import { SitePeers } from './site.js';

export { SitePeers } from './site.js';
export { createPeerApp } from './server.js';

export function createMembership(peers: PeersConfig, logger: Logger): Membership {
  const m = peers.membership;
  const log = logger.child({ module: 'peers' });
  switch (m.kind) {
    case 'static':
      return new StaticMembership(m.members, peers.listen);
    case 'dns':
      return new DnsMembership({ name: m.name, port: m.port, intervalMs: peers.resolveIntervalMs, self: peers.listen, log, ...(m.servers ? { servers: m.servers } : {}) });
    case 'kubernetes':
      // api_server, token_file and ca_file, when set, stand in for the in-cluster env and the service account's files.
      return kubernetesMembership({
        namespace: m.namespace,
        service: m.service,
        port: m.port,
        self: peers.listen,
        log,
        ...(m.apiServer ? { apiServer: m.apiServer } : {}),
        ...(m.tokenFile ? { tokenFile: m.tokenFile } : {}),
        ...(m.caFile ? { caFile: m.caFile } : {}),
      });
  }
}

/** Starts the membership (its first look-up) and returns the site as the cache sees it. */
export async function openSite(peers: PeersConfig, logger: Logger, metrics: Metrics): Promise<SitePeers> {
  const membership = createMembership(peers, logger);
  await membership.start();
  const site = new SitePeers({
    membership,
    key: () => peers.key.reveal(),
    scheme: peers.tls ? 'https' : 'http',
    ...(peers.caFile ? { caFile: peers.caFile } : {}),
    timeouts: peers.timeouts,
    logger: logger.child({ module: 'peers' }),
    metrics,
  });
  logger.info({ self: peers.listen, members: site.members(), source: peers.membership.kind }, 'site peers');
  return site;
}
