/**
 * Picks the upstream for a request from containerd's ?ns= parameter. Only
 * configured registries are served: berth is no open proxy, and never
 * connects to an address a client chose.
 */
import { OciError } from '../oci/errors.js';
import { isValidRegistryHost } from '../oci/paths.js';
import type { RegistryClient } from '../upstream/types.js';

/** Hosts that name Docker Hub; containerd sends "docker.io". */
const DOCKER_HUB_ALIASES = new Set(['docker.io', 'index.docker.io', 'registry-1.docker.io']);

export class Upstreams {
  private readonly byRegistry = new Map<string, RegistryClient>();
  readonly first: RegistryClient | undefined;

  constructor(clients: readonly RegistryClient[]) {
    for (const c of clients) this.byRegistry.set(c.registry, c);
    this.first = clients[0];
  }

  all(): RegistryClient[] {
    return [...this.byRegistry.values()];
  }

  get(registry: string): RegistryClient | undefined {
    return this.byRegistry.get(registry);
  }

  /** The client for `ns` (null: the first upstream). Throws a 4xx OciError otherwise. */
  resolve(ns: string | null | undefined): RegistryClient {
    if (ns === null || ns === undefined || ns === '') {
      if (!this.first) throw new OciError('DENIED', 'berth has no upstream configured');
      return this.first;
    }
    if (!isValidRegistryHost(ns)) throw new OciError('NAME_INVALID', 'invalid ns parameter', { ns: ns.slice(0, 100) });
    const host = ns.toLowerCase();
    const client = this.byRegistry.get(DOCKER_HUB_ALIASES.has(host) ? 'docker.io' : host);
    if (!client) throw new OciError('DENIED', `registry ${host} is not mirrored by this berth`, { ns: host });
    return client;
  }

  /** The daemon at start: every upstream learns its auth scheme and opens a socket now, not on the first pull. */
  async warm(): Promise<void> {
    await Promise.all(this.all().map((c) => c.warm?.()));
  }

  async close(): Promise<void> {
    await Promise.all(this.all().map((c) => c.close()));
  }
}
