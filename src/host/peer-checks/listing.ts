/**
 * Who the site's members are, read from outside the daemon with the daemon's own sources and
 * rules: the static list, one DNS look-up, or one EndpointSlice list.
 */
import { Resolver } from 'node:dns/promises';
import type { Logger } from 'pino';
import type { PeersConfig } from '../../config/types.js';
import { DnsMembership, StaticMembership, type DnsResolver, type Membership } from '../../peers/membership.js';
import { kubernetesMembership, type KubernetesMembershipOptions } from '../../peers/kubernetes.js';

export interface SiteListing {
  /** This node's id among the members ([peers] listen, normalised). */
  self: string;
  /** Where the list comes from, for people: "the static list", "DNS name …", "EndpointSlices of ns/svc …". */
  source: string;
  /** The other members, as the daemon would see them now (self left out). */
  members: string[];
  /** The list could not be read (then members is empty); the daemon may still know one. */
  error?: string;
}

export interface ListOptions {
  logger: Logger;
  /** Bounds one EndpointSlice list. */
  timeoutMs: number;
  /** Tests: a resolver that asks their own DNS server. */
  resolver?: DnsResolver;
  /** Tests: the API server, token and CA of a simulator. */
  kubernetes?: Partial<KubernetesMembershipOptions>;
}

export function describeSource(peers: PeersConfig): string {
  const m = peers.membership;
  switch (m.kind) {
    case 'static':
      return 'the static list';
    case 'dns':
      return `DNS name ${m.name} (port ${m.port})`;
    case 'kubernetes':
      return `EndpointSlices of ${m.namespace}/${m.service} (port "${m.port}")`;
  }
}

/** Codes that mean "the name has no records", which is an answer (no peers), not a failure. */
const NO_RECORDS = new Set(['ENODATA', 'ENOTFOUND']);

/** Wraps a resolver so a failed look-up is seen here; DnsMembership only logs it and keeps the last list. */
function watchedResolver(inner: DnsResolver, failed: (why: string) => void): DnsResolver {
  const watch = async (p: Promise<string[]>): Promise<string[]> => {
    try {
      return await p;
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      if (typeof code !== 'string' || !NO_RECORDS.has(code)) failed(typeof code === 'string' ? code : (err as Error).message);
      throw err;
    }
  };
  return {
    resolve4: (name) => watch(inner.resolve4(name)),
    resolve6: (name) => watch(inner.resolve6(name)),
    cancel: () => inner.cancel(),
  };
}

/** One reading of the membership, with the daemon's own sources and rules; never throws. */
export async function listSite(peers: PeersConfig, opts: ListOptions): Promise<SiteListing> {
  const self = peers.listen;
  const source = describeSource(peers);
  const m = peers.membership;
  const log = opts.logger;
  let failure: string | undefined;
  let membership: Membership;
  switch (m.kind) {
    case 'static':
      return { self, source, members: [...new StaticMembership(m.members, self).members()] };
    case 'dns':
      membership = new DnsMembership({
        name: m.name,
        port: m.port,
        intervalMs: peers.resolveIntervalMs,
        self,
        log,
        resolver: watchedResolver(opts.resolver ?? siteResolver(m.servers), (why) => (failure ??= `cannot resolve ${m.name} (${why})`)),
      });
      break;
    case 'kubernetes':
      // The daemon's own API server, token and CA when the config names them (berth outside a pod).
      membership = kubernetesMembership({
        namespace: m.namespace,
        service: m.service,
        port: m.port,
        self,
        log,
        requestTimeoutMs: opts.timeoutMs,
        ...(m.apiServer ? { apiServer: m.apiServer } : {}),
        ...(m.tokenFile ? { tokenFile: m.tokenFile } : {}),
        ...(m.caFile ? { caFile: m.caFile } : {}),
        ...opts.kubernetes,
      });
      break;
  }
  try {
    await membership.start();
    const members = [...membership.members()];
    return failure === undefined ? { self, source, members } : { self, source, members: [], error: failure };
  } catch (err) {
    return { self, source, members: [], error: `cannot list them: ${err instanceof Error ? err.message : String(err)}` };
  } finally {
    await membership.stop().catch(() => undefined);
  }
}

/** The resolver the daemon uses for `dns` membership: `dns_servers` when set, else the system's. */
function siteResolver(servers: readonly string[] | undefined): Resolver {
  const r = new Resolver({ timeout: 2_000, tries: 2 });
  if (servers && servers.length > 0) r.setServers([...servers]);
  return r;
}
