/**
 * An upstream reached through a Harbor proxy-cache project (`via_harbor_project`):
 * docker.io's `library/nginx` is asked of Harbor as `<project>/library/nginx`
 * while Harbor answers, so the site's pulls count against Harbor's cache and
 * its policies, and straight from the upstream when Harbor cannot be reached.
 * Harbor's answers (a 404 included) stand while it is reachable.
 */
import type { Logger } from 'pino';
import { isUnreachable, type RegistryClient } from './types.js';

export function viaHarborProject(direct: RegistryClient, harbor: RegistryClient, project: string, logger: Logger): RegistryClient {
  let lastFallbackLog = 0;
  async function either<T>(what: string, viaHarbor: () => Promise<T>, straight: () => Promise<T>): Promise<T> {
    try {
      return await viaHarbor();
    } catch (err) {
      if (!isUnreachable(err)) throw err;
      const now = Date.now();
      if (now - lastFallbackLog > 60_000) {
        lastFallbackLog = now;
        logger.warn({ upstream: direct.registry, project, what, err: (err as Error).message }, 'Harbor proxy-cache project unreachable; fetching straight from the upstream');
      }
      return straight();
    }
  }
  const p = (repository: string) => `${project}/${repository}`;
  return {
    registry: direct.registry,
    getManifest: (repo, ref, o) => either('manifest', () => harbor.getManifest(p(repo), ref, o), () => direct.getManifest(repo, ref, o)),
    headManifest: (repo, ref, o) => either('manifest', () => harbor.headManifest(p(repo), ref, o), () => direct.headManifest(repo, ref, o)),
    headBlob: (repo, d, o) => either('blob', () => harbor.headBlob(p(repo), d, o), () => direct.headBlob(repo, d, o)),
    getBlob: (repo, d, o) => either('blob', () => harbor.getBlob(p(repo), d, o), () => direct.getBlob(repo, d, o)),
    getTags: (repo, q, o) => either('tags', () => harbor.getTags(p(repo), q, o), () => direct.getTags(repo, q, o)),
    ping: (o) => either('ping', () => harbor.ping(o), () => direct.ping(o)),
    health: () => {
      const h = harbor.health();
      return h.up ? h : direct.health();
    },
    close: async () => {
      await Promise.all([harbor.close(), direct.close()]);
    },
  };
}
