/**
 * The cache as the HTTP layer sees it: manifests, blobs and tag lists for a
 * (registry, repository), from disk when it can, from the upstream when it
 * must. Handlers never know which it was, except through `source`.
 */
import type { Logger } from 'pino';
import { growingLru } from './lru.js';
import { canonicalRepository } from '../oci/paths.js';
import { OciError } from '../oci/errors.js';
import type { Refusals } from '../store/refusals.js';
import type { Metrics } from '../metrics/metrics.js';
import { isUnreachable } from '../upstream/types.js';
import type { Upstreams } from './upstreams.js';
import { ManifestCache, headManifestWithReason, type ManifestResult } from './manifests.js';
import { BlobCache, type BlobHandle } from './blobs.js';
import { blobUnknown, toClientError } from './errors.js';
import type { ClientCredentials, PolicyGate } from './gate.js';
import type { ContentStore } from './content-store.js';
import type { Site } from './site.js';

export interface MirrorOptions {
  store: ContentStore;
  refusals: Refusals;
  upstreams: Upstreams;
  metrics: Metrics;
  logger: Logger;
  tagTtlMs: number;
  serveStale: boolean;
  /** How long a cached tag waits on its revalidation before answering from the last known digest. */
  revalidateTimeoutMs: number;
  /** How often an interrupted blob transfer is resumed with Range. */
  maxResumes?: number;
  /** Access and policy checks (Harbor); none: everything is served. */
  gate?: PolicyGate | null;
  /** The site's other berths (site peers), when [peers] is configured. */
  site?: Site | null;
  now?: () => number;
}

export interface Target {
  /** ?ns= as the client sent it (null: the first upstream). */
  ns: string | null;
  /** Repository name as the client sent it. */
  name: string;
  reqId?: string;
  /** Basic credentials the client sent (pull secrets for private projects). */
  credentials?: ClientCredentials | null;
}

/**
 * Closed: what the daemon, prefetch, export and the CLI need are methods
 * here; the caches and clients behind it are its own.
 */
export class Mirror {
  private readonly upstreams: Upstreams;
  private readonly manifests: ManifestCache;
  private readonly blobs: BlobCache;
  private readonly store: ContentStore;
  private readonly logger: Logger;

  constructor(private readonly opts: MirrorOptions) {
    this.upstreams = opts.upstreams;
    this.store = opts.store;
    this.logger = opts.logger;
    const { tagTtlMs, serveStale, revalidateTimeoutMs, now } = opts;
    const site = opts.site ?? null;
    const gate = opts.gate;
    const projectOf = gate?.locate ? (registry: string, repository: string) => gate.locate?.(registry, repository)?.project : undefined;
    this.manifests = new ManifestCache(opts.store.index, opts.refusals, opts.metrics, opts.logger, { tagTtlMs, serveStale, revalidateTimeoutMs, site, ...(now ? { now } : {}), ...(projectOf ? { projectOf } : {}) });
    this.blobs = new BlobCache(opts.store, opts.metrics, opts.logger, { maxResumes: opts.maxResumes ?? 3, site });
  }

  private locate(t: Target): { client: ReturnType<Upstreams['resolve']>; repository: string } {
    const client = this.upstreams.resolve(t.ns);
    return { client, repository: canonicalRepository(client.registry, t.name) };
  }

  /** Names the target for a caller that must know where it resolves (audit) before asking. */
  where(t: Target): { registry: string; repository: string } {
    const { client, repository } = this.locate(t);
    return { registry: client.registry, repository };
  }

  async manifest(t: Target, reference: string, o: { byDigest: boolean; head: boolean; accept: string | undefined }): Promise<ManifestResult & { registry: string; repository: string }> {
    const { client, repository } = this.locate(t);
    const gate = this.opts.gate?.governs(client.registry, repository) ? this.opts.gate : null;
    const access = { registry: client.registry, repository, credentials: t.credentials ?? null };
    // Who may read comes first: a private tag is not even resolved for a stranger.
    await gate?.authorize(access);
    // Cached anywhere berth could answer from (the index, or the in-memory copy an eviction left).
    if (o.byDigest && this.manifests.cached(reference) !== undefined) await this.requireLink(client, repository, reference, 'manifest', t.reqId);
    const r = await this.manifests.get({ client, repository, reference, byDigest: o.byDigest, head: o.head, accept: o.accept, ...(t.reqId ? { reqId: t.reqId } : {}) });
    await gate?.checkManifest({ ...access, digest: r.digest });
    return { ...r, registry: client.registry, repository };
  }

  /**
   * `fromPeer`: a site peer asks (signed). The peer that answers containerd
   * did the access checks with its client's credentials; here the blob is
   * still served per repository (the link rule below), and a miss is filled
   * from the upstream only, never forwarded to a third node.
   */
  async blob(t: Target, digest: string, o: { head: boolean; fromPeer?: boolean }): Promise<BlobHandle> {
    const { client, repository } = this.locate(t);
    const gate = !o.fromPeer && this.opts.gate?.governs(client.registry, repository) ? this.opts.gate : null;
    await gate?.authorize({ registry: client.registry, repository, credentials: t.credentials ?? null });
    // A blob cached, or being filled, through another repository or upstream: confirm this one has it too.
    const origin = this.blobs.fillOrigin(digest);
    const foreignFill = origin !== undefined && (origin.registry !== client.registry || origin.repository !== repository);
    // A link already confirmed settles it without touching the index (the hot path of a warm hit).
    const confirmed = this.linked.has(linkKey(client.registry, repository, digest));
    // Otherwise the row is read once here and handed on.
    const row = confirmed ? undefined : this.store.stat(digest);
    if (!confirmed && (foreignFill || row)) await this.requireLink(client, repository, digest, 'blob', t.reqId);
    return this.blobs.get({ client, repository, digest, head: o.head, ...(t.reqId ? { reqId: t.reqId } : {}), ...(row ? { row } : {}), ...(o.fromPeer ? { fromPeer: true } : {}) });
  }

  /**
   * A site peer asks for a manifest or a tag's last known digest: answered
   * from this node's cache only (never from the upstream: the asking node
   * asks peers only when its own upstream is away), and only what this node
   * holds under that repository.
   */
  peerManifest(t: Target, reference: string, byDigest: boolean): { digest: string; mediaType: string; body: Buffer } | undefined {
    const { client, repository } = this.locate(t);
    const digest = byDigest ? reference : this.store.index.getTag(client.registry, repository, reference)?.digest;
    if (!digest) return undefined;
    if (!this.linked.has(linkKey(client.registry, repository, digest)) && !this.store.repository(client.registry, repository).isLinked(digest)) return undefined;
    const m = this.manifests.cached(digest);
    return m ? { digest, mediaType: m.mediaType, body: m.body } : undefined;
  }

  /**
   * Makes sure a blob of an image is cached, without streaming it to anyone
   * (prefetch, export): joins or starts its fill and waits for it.
   */
  async ensureBlob(t: Target, digest: string): Promise<{ size: number; fetched: boolean }> {
    const { client, repository } = this.locate(t);
    // Held through another repository (or being filled through one): this one must be confirmed
    // and linked too, as for a pull, or the image would not be served offline.
    const origin = this.blobs.fillOrigin(digest);
    const foreignFill = origin !== undefined && (origin.registry !== client.registry || origin.repository !== repository);
    if (foreignFill || this.store.stat(digest)) await this.requireLink(client, repository, digest, 'blob', t.reqId);
    return this.blobs.ensure({ client, repository, digest, ...(t.reqId ? { reqId: t.reqId } : {}) });
  }

  /** A cached manifest's media type and bytes (export). */
  cachedManifest(digest: string): { mediaType: string; body: Buffer } | undefined {
    return this.manifests.cached(digest);
  }

  /** Blob fills under way. */
  get fillsInFlight(): number {
    return this.blobs.inFlight;
  }

  /** (registry, repository, digest) triples known to be linked: the hot path skips the index. */
  private readonly linked = growingLru<string, true>(100_000);

  /**
   * Cached content is served per repository, as a registry does: content
   * cached through one repository (or one upstream) is not handed out under
   * another — a private layer must not leak through a public path, nor
   * through an upstream whose credentials would be refused — until that
   * upstream confirms, with a HEAD and its own credentials, that the
   * repository has it too. Offline, such a request is refused (503).
   */
  private async requireLink(client: ReturnType<Upstreams['resolve']>, repository: string, digest: string, kind: 'blob' | 'manifest', reqId?: string): Promise<void> {
    const key = linkKey(client.registry, repository, digest);
    if (this.linked.has(key)) return;
    const content = this.store.repository(client.registry, repository);
    if (content.isLinked(digest)) {
      this.linked.set(key, true);
      return;
    }
    try {
      const found = kind === 'blob' ? await client.headBlob(repository, digest, reqId ? { reqId } : {}) : await headManifestWithReason(client, repository, digest, reqId ? { reqId } : {});
      if (!found) throw kind === 'blob' ? blobUnknown(digest) : new OciError('MANIFEST_UNKNOWN', 'manifest unknown to registry', { digest });
    } catch (err) {
      // A manifest the upstream refuses by policy is refused in its words, and still so offline.
      throw kind === 'manifest' ? this.manifests.refusalAware(client.registry, repository, digest, err) : toClientError(err);
    }
    content.link(digest);
    this.linked.set(key, true);
  }

  /** tags/list from the upstream; offline, the tags berth has seen. */
  async tags(t: Target, query: string): Promise<{ body: Buffer; link?: string; stale: boolean }> {
    const { client, repository } = this.locate(t);
    if (this.opts.gate?.governs(client.registry, repository)) await this.opts.gate.authorize({ registry: client.registry, repository, credentials: t.credentials ?? null });
    try {
      const r = await client.getTags(repository, query, t.reqId ? { reqId: t.reqId } : {});
      if (!r) throw new OciError('NAME_UNKNOWN', 'repository name not known to registry', { name: t.name });
      return { ...r, stale: false };
    } catch (err) {
      if (isUnreachable(err)) {
        const known = this.manifests.knownTags(client.registry, repository);
        if (known.length > 0) {
          this.logger.warn({ upstream: client.registry, repository }, 'upstream unreachable; answering tags/list from the tags berth has seen');
          return { body: Buffer.from(JSON.stringify({ name: repository, tags: known })), stale: true };
        }
      }
      throw toClientError(err);
    }
  }

  /** Shutdown: let fills under way finish for up to `ms`, then end tag revalidations still waiting on an upstream. */
  async drain(ms: number): Promise<void> {
    await this.blobs.drain(ms);
    // Revalidations left in the background would hold upstream connections (and the exit) open.
    this.manifests.stop();
  }
}

function linkKey(registry: string, repository: string, digest: string): string {
  return `${registry}\0${repository}\0${digest}`;
}
