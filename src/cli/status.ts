import type { Command } from './command.js';
import { EXIT, out } from './command.js';
import { COMMON_FLAGS, ConfigError, configFrom, parse, withRuntime } from './common.js';
import { formatDuration, formatSize } from '../config/units.js';
import type { Runtime } from '../runtime.js';
import { describeSkew, listSite, probePeers, siteKeyOrError, type PeerProbe } from '../host/peer-checks.js';
import { auditImage } from '../store/audit.js';

export interface StatusReport {
  daemon: { url: string; running: boolean };
  cache: { dir: string; bytes: number; maxBytes: number; usePercent: number; blobs: number; manifests: number; pinnedImages: number; pinnedBytes: number };
  hits: { requests: number; hitRatio: number | null; byteHitRatio: number | null; staleAnswers: number; counters: Record<string, number> };
  upstreams: { registry: string; url: string; reachable: boolean; error?: string; skipVerify: boolean }[];
  policy: {
    configured: boolean;
    snapshotAgeMs: number | null;
    expired: boolean;
    onExpired: string | null;
    projects: ReturnType<NonNullable<Runtime['gate']>['projectsState']>;
  };
  audit: { last24h: Record<string, number>; recentRefusals: { at: string; image: string; reason: string | null }[] };
  /** null without [peers]. */
  peers: {
    /** This node's id among the members ([peers] listen). */
    self: string;
    /** "the static list", "DNS name …", "EndpointSlices of ns/svc …". */
    source: string;
    /** The list could not be read here (DNS failed, no Kubernetes API outside a pod). */
    error?: string;
    members: Omit<PeerProbe, 'problem'>[];
  } | null;
}

/**
 * The site as seen from here: status runs apart from the daemon and cannot read its circuits, so
 * it reads the membership the way the daemon does and asks each member now.
 */
async function sitePeers(rt: Runtime): Promise<StatusReport['peers']> {
  const peers = rt.config.peers;
  if (!peers) return null;
  // A DNS failure is reported below, not logged as the daemon's warning.
  const site = await listSite(peers, { logger: rt.logger.child({}, { level: 'silent' }), timeoutMs: 5000 });
  const probes = await probePeers(site.members, {
    scheme: peers.tls ? 'https' : 'http',
    key: siteKeyOrError(peers),
    timeoutMs: 2000,
    clockWindowMs: peers.clockWindowMs,
    ...(peers.caFile ? { caFile: peers.caFile } : {}),
  });
  const members = probes.map(({ problem: _problem, ...p }) => p);
  return { self: site.self, source: site.source, ...(site.error !== undefined ? { error: site.error } : {}), members };
}

async function daemonRunning(listen: string): Promise<boolean> {
  try {
    const res = await fetch(`http://${listen}/readyz`, { signal: AbortSignal.timeout(2000) });
    await res.body?.cancel();
    return res.status === 200;
  } catch {
    return false;
  }
}

export async function buildStatus(rt: Runtime): Promise<StatusReport> {
  const { config, index, store } = rt;
  const peers = sitePeers(rt);
  const stats = store.stats();
  const bytes = store.totalBytes();
  const c = index.counters.all();
  const get = (k: string) => c[k] ?? 0;
  const hits = get('manifest_hit') + get('blob_hit') + get('manifest_stale');
  const requests = hits + get('manifest_miss') + get('blob_miss') + get('blob_coalesced');
  const fromCache = get('served_bytes_cache');
  const served = fromCache + get('served_bytes_upstream');
  const upstreams = await Promise.all(
    rt.upstreams.all().map(async (client) => {
      const u = config.upstreams.find((x) => x.registry === client.registry)!;
      try {
        const ok = await client.ping({ signal: AbortSignal.timeout(5000) });
        return { registry: u.registry, url: u.url, reachable: ok, skipVerify: u.skipVerify, ...(ok ? {} : { error: 'answered, but not as a registry' }) };
      } catch (e) {
        // It answered, asking for credentials from a password_file this user may not read.
        if (e instanceof ConfigError) return { registry: u.registry, url: u.url, reachable: true, skipVerify: u.skipVerify, error: `asks for credentials: ${e.message}` };
        return { registry: u.registry, url: u.url, reachable: false, skipVerify: u.skipVerify, error: e instanceof Error ? e.message : String(e) };
      }
    }),
  );
  return {
    daemon: { url: `http://${config.server.listen}`, running: await daemonRunning(config.server.listen) },
    cache: {
      dir: rt.layout.root,
      bytes,
      maxBytes: config.cache.maxSizeBytes,
      usePercent: config.cache.maxSizeBytes > 0 ? Math.round((bytes / config.cache.maxSizeBytes) * 1000) / 10 : 0,
      blobs: stats.blobs,
      manifests: stats.manifests,
      pinnedImages: index.pins.list().length,
      pinnedBytes: index.pins.pinnedBytes(),
    },
    hits: { requests, hitRatio: requests > 0 ? hits / requests : null, byteHitRatio: served > 0 ? fromCache / served : null, staleAnswers: get('manifest_stale'), counters: c },
    upstreams,
    policy: {
      configured: config.harbor !== null,
      snapshotAgeMs: rt.gate?.snapshotAge() ?? null,
      expired: config.harbor !== null && (rt.gate?.snapshotAge() ?? Infinity) > config.harbor.offlineGraceMs,
      onExpired: config.harbor?.onExpired ?? null,
      projects: rt.gate?.projectsState() ?? [],
    },
    audit: {
      last24h: Object.fromEntries(index.audit.summary(Date.now() - 86_400_000).map((r) => [r.decision, r.n])),
      recentRefusals: index.audit
        .since(Date.now() - 86_400_000, 100_000)
        .filter((r) => r.decision === 'refused')
        .slice(-5)
        .map((r) => ({ at: new Date(r.at).toISOString(), image: auditImage(r), reason: r.reason })),
    },
    peers: await peers,
  };
}

const pct = (x: number | null) => (x === null ? 'n/a' : `${(x * 100).toFixed(1)}%`);

export const statusCommand: Command = {
  name: 'status',
  options: COMMON_FLAGS,
  summary: 'cache size and use, hit ratio, upstream reachability, policy age',
  help: `Usage: berth status [--json]

Reports the cache (bytes against max_size, blobs, manifests, pinned images
and bytes), the hit ratio since the cache was created (requests answered
from the cache, and bytes served from it rather than the WAN), whether the
daemon answers on [server] listen, each upstream's reachability (a /v2/
ping, 5 s at most), and the Harbor policy snapshot's age when [harbor] is
configured.

With [peers], the site: this node's peer address, where the members come
from and who they are (the static list, one DNS look-up, or one list of the
EndpointSlices, read as the daemon reads them), and each member's answer to
a signed GET /v2/ on its peer listener (2 s at most): signature accepted,
refused (401: it holds another site key, or its clock is past clock_window),
not a peer listener, or unreachable; and its clock against this node's, from
its Date header. status runs apart from the daemon: this is what each peer
answers now, not the daemon's own view of it.

Exit 0 unless the report could not be made.

Options:
  --json          machine-readable output
  -v, --verbose   log to stderr
  --config FILE   configuration file
  -h, --help      show this help
`,
  async run(argv) {
    const { values } = parse(argv, COMMON_FLAGS);
    const config = configFrom(values.config);
    return withRuntime(config, values.verbose === true, async (rt) => {
      const s = await buildStatus(rt);
      if (values.json) {
        out(JSON.stringify(s, null, 2));
        return EXIT.ok;
      }
      out(`daemon      ${s.daemon.running ? 'running' : 'not answering'} at ${s.daemon.url}`);
      out(`cache       ${formatSize(s.cache.bytes)} of ${formatSize(s.cache.maxBytes)} (${s.cache.usePercent}%) in ${s.cache.dir}`);
      out(`            ${s.cache.blobs} blobs, ${s.cache.manifests} manifests; ${s.cache.pinnedImages} pinned images holding ${formatSize(s.cache.pinnedBytes)}`);
      out(`hits        ${pct(s.hits.hitRatio)} of ${s.hits.requests} requests; ${pct(s.hits.byteHitRatio)} of blob bytes served from the cache; ${s.hits.staleAnswers} stale answers`);
      for (const u of s.upstreams) out(`upstream    ${u.registry} (${u.url}): ${u.reachable ? `reachable${u.error !== undefined ? `, but ${u.error}` : ''}` : `UNREACHABLE: ${u.error ?? ''}`}${u.skipVerify ? '  [TLS verification off]' : ''}`);
      out(`policy      ${s.policy.configured ? (s.policy.snapshotAgeMs === null ? 'no snapshot yet' : `snapshot ${formatDuration(s.policy.snapshotAgeMs)} old${s.policy.expired ? ` — EXPIRED (on_expired = ${s.policy.onExpired})` : ''}`) : 'no [harbor] configured'}`);
      for (const p of s.policy.projects) {
        const rules = [p.public ? 'public' : 'private', p.preventVul ? `prevent_vul >= ${p.severity}` : null, p.cosign ? 'cosign' : null, p.notation ? 'notation' : null].filter(Boolean).join(', ');
        out(`  project   ${p.name}: ${rules}`);
      }
      const a = s.audit.last24h;
      out(`audit 24h  ${Object.entries(a).map(([k, v]) => `${v} ${k}`).join(', ') || 'no manifest requests'}`);
      for (const r of s.audit.recentRefusals) out(`  refused   ${r.at} ${r.image}: ${r.reason ?? ''}`);
      if (s.peers) {
        const p = s.peers;
        const n = p.members.length;
        out(`peers       ${p.self} is this node; ${p.error !== undefined ? `members from ${p.source}: ${p.error}` : `${n === 0 ? 'no' : n} other member${n === 1 ? '' : 's'} from ${p.source}`}`);
        for (const m of p.members) {
          const clock = m.skewMs !== undefined ? `; its clock is ${describeSkew(m.skewMs)}` : '';
          out(`  peer      ${m.peer}: ${m.signed ? 'signature accepted' : (m.error ?? 'not sharing')}${m.reachable ? clock : ''}`);
        }
      }
      return EXIT.ok;
    });
  },
};
