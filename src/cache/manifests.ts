/**
 * Manifests and tags. A manifest by digest is immutable: cached forever
 * (until evicted), served verbatim with the upstream's media type. A tag is
 * the only mutable thing: trusted for tag_ttl, then revalidated with an
 * upstream HEAD (free on Docker Hub's pull limits; an unchanged digest costs
 * no body). When the upstream cannot be reached, a tag answers from its last
 * known digest if serve_stale allows, with a Warning header; so it does when
 * the revalidation takes longer than revalidate_timeout, which then goes on
 * in the background.
 */
import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import { OciError } from '../oci/errors.js';
import { sha256 } from '../oci/digest.js';
import { acceptAdmitsManifest, acceptAllows, acceptsIndex, baseMediaType, pickMediaType, upstreamAccept } from '../oci/mediatypes.js';
import { manifestChildren } from '../oci/manifest.js';
import type { ContentIndex, TagRow } from '../store/content-index.js';
import type { Refusals } from '../store/refusals.js';
import type { Metrics } from '../metrics/metrics.js';
import { formatDuration } from '../config/units.js';
import { UpstreamError, isUnreachable, type ManifestAnswer, type RegistryClient, type RequestOptions } from '../upstream/types.js';
import { SingleFlight } from './singleflight.js';
import type { Site } from './site.js';
import { toClientError } from './errors.js';

/** `peer`: the upstream was away and a site peer's cache had it (verified by digest). */
export type ManifestSource = 'cache' | 'upstream' | 'stale' | 'peer';

export interface ManifestResult {
  digest: string;
  mediaType: string;
  size: number;
  /** Absent for HEAD answers. */
  body?: Buffer;
  source: ManifestSource;
  /** A Warning header value (stale answers). */
  warning?: string;
}

export interface ManifestRequest {
  client: RegistryClient;
  repository: string;
  reference: string;
  byDigest: boolean;
  head: boolean;
  accept: string | undefined;
  reqId?: string;
}

const MAX_MANIFEST_CACHE_BYTES = 64 * 1024 * 1024;

/** Calls `fire` after `ms`; returns a cancel. Tests pass their own. */
export type Timer = (fire: () => void, ms: number) => () => void;

const realTimer: Timer = (fire, ms) => {
  const handle = setTimeout(fire, ms);
  return () => clearTimeout(handle);
};

type UpstreamHead = Awaited<ReturnType<RegistryClient['headManifest']>>;

export class ManifestCache {
  private readonly bodies = new LRUCache<string, { mediaType: string; body: Buffer }>({
    maxSize: MAX_MANIFEST_CACHE_BYTES,
    sizeCalculation: (v) => v.body.length + 64,
  });
  private readonly flights = new SingleFlight<ManifestResult>();
  /** One upstream HEAD per tag (and Accept) at a time, shared by the HEAD and GET revalidations. */
  private readonly tagHeads = new SingleFlight<UpstreamHead>();
  /** Revalidations already past revalidate_timeout: whoever joins one answers at once. */
  private readonly overdue = new WeakSet<Promise<ManifestResult>>();
  /** Aborted at shutdown, so a revalidation left waiting on a silent upstream does not hold the daemon open. */
  private readonly stopping = new AbortController();

  constructor(
    private readonly index: ContentIndex,
    private readonly refusals: Refusals,
    private readonly metrics: Metrics,
    private readonly logger: Logger,
    private readonly opts: { tagTtlMs: number; serveStale: boolean; revalidateTimeoutMs: number; now?: () => number; timer?: Timer; site?: Site | null; projectOf?: (registry: string, repository: string) => string | undefined },
  ) {}

  private now(): number {
    return (this.opts.now ?? Date.now)();
  }

  async get(req: ManifestRequest): Promise<ManifestResult> {
    const result = req.byDigest ? await this.byDigest(req) : await this.byTag(req);
    this.metrics.cacheResult('manifest', result.source === 'cache' ? 'hit' : result.source === 'stale' ? 'stale' : 'miss');
    if (result.source === 'stale') this.metrics.staleAnswers.inc({ upstream: req.client.registry });
    return result;
  }

  /** The cached manifest for a digest, from memory or the index. */
  cached(digest: string): { mediaType: string; body: Buffer } | undefined {
    const hot = this.bodies.get(digest);
    if (hot) return hot;
    const row = this.index.getManifest(digest);
    if (!row) return undefined;
    const v = { mediaType: row.media_type, body: row.body };
    this.bodies.set(digest, v);
    return v;
  }

  /**
   * Stores a verified manifest (the caller has checked its digest). Best
   * effort: on a full disk the verified bytes are still served, just not kept.
   */
  store(registry: string, repository: string, digest: string, mediaType: string, body: Buffer): void {
    try {
      this.index.putManifest(digest, mediaType, body, manifestChildren(body));
      this.index.link(registry, repository, digest);
      this.bodies.set(digest, { mediaType, body });
    } catch (err) {
      this.logger.warn({ digest, registry, repository, code: (err as { code?: unknown }).code, err: (err as Error).message }, 'could not cache a manifest (disk full?); serving it uncached');
    }
  }

  private fromCache(digest: string, head: boolean, source: ManifestSource = 'cache', warning?: string): ManifestResult | undefined {
    const m = this.cached(digest);
    if (!m) return undefined;
    this.index.touch(digest);
    const r: ManifestResult = { digest, mediaType: m.mediaType, size: m.body.length, source };
    if (!head) r.body = m.body;
    if (warning) r.warning = warning;
    return r;
  }

  private async byDigest(req: ManifestRequest): Promise<ManifestResult> {
    const hit = this.fromCache(req.reference, req.head);
    if (hit) return admitted(hit, req.accept);
    const { client, repository, reference } = req;
    const key = `d\0${client.registry}\0${repository}\0${reference}`;
    const { promise } = this.flights.run(key, async () => {
      try {
        const got = await client.getManifest(repository, reference, { accept: upstreamAccept(req.accept), reqId: req.reqId });
        if (!got || !got.body) throw new OciError('MANIFEST_UNKNOWN', 'manifest unknown', { digest: reference });
        const actual = sha256(got.body);
        if (actual !== reference) {
          this.metrics.verifyFailures.inc({ upstream: client.registry, source: 'upstream' });
          this.logger.warn({ upstream: client.registry, repository, expected: reference, actual }, 'upstream manifest does not match its digest; discarded');
          throw new OciError('BAD_GATEWAY', 'the upstream sent a manifest that does not match its digest; nothing was cached', { digest: reference });
        }
        const mediaType = pickMediaType(got.mediaType, got.body);
        this.store(client.registry, repository, reference, mediaType, got.body);
        this.refusals.clear(client.registry, repository, reference);
        return { digest: reference, mediaType, size: got.body.length, body: got.body, source: 'upstream' };
      } catch (err) {
        if (isStaleWorthy(err) && !this.refusals.get(client.registry, repository, reference)) {
          const p = await this.fromPeers(req, reference);
          if (p) return { ...p, size: p.body.length, source: 'peer' as const };
        }
        throw this.refusalAware(client.registry, repository, reference, err);
      }
    });
    // A shared exchange may have been started by a request with another Accept.
    const r = admitted(await promise, req.accept);
    return req.head ? { digest: r.digest, mediaType: r.mediaType, size: r.size, source: r.source } : r;
  }

  /**
   * Tags are read through the index every time, never kept here: another
   * process (`berth import`, `berth prefetch`) may move a tag while the
   * daemon runs, and the daemon must serve what the index holds. The index
   * keeps its own copy, emptied when another connection commits.
   */
  private tagRow(registry: string, repository: string, tag: string): TagRow | undefined {
    return this.index.getTag(registry, repository, tag);
  }

  private saveTag(registry: string, repository: string, tag: string, row: TagRow): void {
    try {
      this.index.putTag(registry, repository, tag, row);
    } catch (err) {
      this.logger.warn({ registry, repository, tag, code: (err as { code?: unknown }).code }, 'could not record a tag (disk full?)');
    }
  }

  private async byTag(req: ManifestRequest): Promise<ManifestResult> {
    const { client, repository, reference: tag } = req;
    const registry = client.registry;
    const known = this.tagRow(registry, repository, tag);
    const usable = known !== undefined && acceptAllows(req.accept, known.media_type);
    if (usable && this.now() - known.fetched_at < this.opts.tagTtlMs) {
      const hit = req.head ? headOf(known, 'cache') : this.fromCache(known.digest, false);
      if (hit) return hit;
      // The tag was resolved by a HEAD only: fetch the body by digest.
      return this.byDigest({ ...req, reference: known.digest, byDigest: true });
    }
    // Concurrent requests for one stale or unknown tag share one upstream exchange.
    const key = `t\0${registry}\0${repository}\0${tag}\0${req.head ? 'H' : 'G'}\0${req.accept ?? ''}`;
    const { promise } = this.flights.run(key, () => this.revalidate(req, usable ? known : undefined));
    try {
      // A cached answer waits on its revalidation only so long (and only when it may be served stale).
      return await (usable && this.opts.serveStale ? this.withinRevalidateTimeout(req, known, promise) : promise);
    } catch (err) {
      // A refusal on record is the upstream's last word on this tag (a success
      // clears it): it holds while the upstream is away, not the older digest.
      if (usable && this.opts.serveStale && isStaleWorthy(err) && !this.refusals.get(registry, repository, tag)) {
        const warning = `299 - "berth: upstream ${registry} is unreachable; serving the last known digest of ${repository}:${tag}"`;
        const stale = req.head ? { ...headOf(known, 'stale'), warning } : this.fromCache(known.digest, false, 'stale', warning);
        if (stale) {
          this.logger.warn({ upstream: registry, repository, tag, digest: known.digest, err: (err as Error).message }, 'serving stale tag');
          return stale;
        }
      }
      // Never seen here: a site peer may know the tag's last digest (the gate still decides, in Mirror).
      if (!usable && this.opts.serveStale && isStaleWorthy(err) && !this.refusals.get(registry, repository, tag)) {
        const p = await this.fromPeers(req, tag);
        if (p) {
          if (acceptsIndex(req.accept)) {
            // Known from a peer, not from the upstream: the next request with the upstream back revalidates it.
            this.saveTag(registry, repository, tag, { digest: p.digest, media_type: p.mediaType, size: p.body.length, fetched_at: 0 });
          }
          const warning = `299 - "berth: upstream ${registry} is unreachable; serving the last known digest of ${repository}:${tag} from a site peer"`;
          const r: ManifestResult = { digest: p.digest, mediaType: p.mediaType, size: p.body.length, source: 'peer', warning };
          if (!req.head) r.body = p.body;
          return r;
        }
      }
      throw this.refusalAware(registry, repository, tag, err);
    }
  }

  /**
   * With the upstream away: a reference this node lacks, from a site peer's
   * cache. The peer answers only from what it holds under this repository;
   * the bytes are checked against the digest here (the client checks the
   * digest it was asked for, and the peer's Docker-Content-Digest) and
   * stored like an upstream answer.
   */
  private async fromPeers(req: ManifestRequest, reference: string): Promise<{ digest: string; mediaType: string; body: Buffer } | undefined> {
    const { client, repository } = req;
    const registry = client.registry;
    for (const peer of this.opts.site?.manifestPeers(`${registry}\0${repository}\0${reference}`) ?? []) {
      try {
        const got = await peer.getManifest(repository, reference, { accept: upstreamAccept(req.accept), query: { ns: registry }, ...(req.reqId ? { reqId: req.reqId } : {}) });
        if (!got?.body) continue;
        const digest = sha256(got.body);
        if (reference.startsWith('sha256:') ? digest !== reference : got.digest !== digest) {
          this.metrics.verifyFailures.inc({ upstream: registry, source: 'peer' });
          continue;
        }
        const mediaType = pickMediaType(got.mediaType, got.body);
        this.store(registry, repository, digest, mediaType, got.body);
        this.logger.info({ upstream: registry, repository, reference, digest, peer: peer.registry }, 'manifest from a site peer (upstream unreachable)');
        return { digest, mediaType, body: got.body };
      } catch (err) {
        this.logger.debug({ peer: peer.registry, reference, err: (err as Error).message }, 'site peer could not answer a manifest');
      }
    }
    return undefined;
  }

  /**
   * An upstream policy refusal (Harbor's 412) is remembered, so that with the
   * upstream gone (or failing) the same reference is still refused with the
   * same words rather than merely unavailable. Also for Mirror's link checks.
   */
  refusalAware(registry: string, repository: string, reference: string, err: unknown): OciError {
    if (err instanceof UpstreamError && err.code === 'UPSTREAM_POLICY') {
      this.refusals.put(registry, repository, reference, err.upstreamMessage);
      this.metrics.policyDenials.inc({ reason: 'upstream', project: this.opts.projectOf?.(registry, repository) ?? '' });
      this.logger.warn({ registry, repository, reference, reason: 'upstream', message: err.upstreamMessage }, 'pull refused by policy');
    } else if (isStaleWorthy(err)) {
      const refused = this.refusals.get(registry, repository, reference);
      if (refused) return new OciError('PROJECTPOLICYVIOLATION', refused.message || `upstream ${registry} refused this image by policy`);
    }
    return toClientError(err);
  }

  private async revalidate(req: ManifestRequest, known: TagRow | undefined): Promise<ManifestResult> {
    const { client, repository, reference: tag } = req;
    const registry = client.registry;
    const opts = { accept: upstreamAccept(req.accept), reqId: req.reqId };
    // Only a request that admits indexes may move the tag: a narrow Accept gets a narrower answer.
    const broad = acceptsIndex(req.accept);
    if (known || req.head) {
      const { promise: asked } = this.tagHeads.run(`${registry}\0${repository}\0${tag}\0${opts.accept}`, () => this.headTag(client, repository, tag, opts));
      const head = await asked;
      if (!head) {
        if (known) this.forgetTag(registry, repository, tag);
        throw new OciError('MANIFEST_UNKNOWN', 'manifest unknown', { tag });
      }
      const row: TagRow = { digest: head.digest, media_type: head.mediaType, size: head.size, fetched_at: this.now() };
      this.refusals.clear(registry, repository, tag);
      if (known && head.digest === known.digest) {
        this.index.touchTag(registry, repository, tag, row.fetched_at);
        if (req.head) return headOf(known, 'cache');
        const hit = this.fromCache(known.digest, false);
        if (hit) return hit;
      } else if (broad) this.saveTag(registry, repository, tag, row);
      if (req.head) return headOf(row, 'upstream');
      // Changed (or body not cached): fetch by digest, which verifies the bytes.
      return this.byDigest({ ...req, reference: head.digest, byDigest: true });
    }
    const got = await client.getManifest(repository, tag, opts);
    if (!got || !got.body) throw new OciError('MANIFEST_UNKNOWN', 'manifest unknown', { tag });
    const actual = sha256(got.body);
    if (got.digest !== actual) {
      this.metrics.verifyFailures.inc({ upstream: registry, source: 'upstream' });
      this.logger.warn({ upstream: registry, repository, tag, announced: got.digest, actual }, 'upstream manifest does not match its Docker-Content-Digest; discarded');
      throw new OciError('BAD_GATEWAY', 'the upstream sent a manifest that does not match its digest; nothing was cached', { tag });
    }
    const mediaType = pickMediaType(got.mediaType, got.body);
    this.store(registry, repository, actual, mediaType, got.body);
    this.refusals.clear(registry, repository, tag);
    if (broad) this.saveTag(registry, repository, tag, { digest: actual, media_type: mediaType, size: got.body.length, fetched_at: this.now() });
    return { digest: actual, mediaType, size: got.body.length, body: got.body, source: 'upstream' };
  }

  /** The upstream HEAD of a tag; at shutdown it ends as unavailable instead of running on to header_timeout. */
  private async headTag(client: RegistryClient, repository: string, tag: string, opts: RequestOptions): Promise<UpstreamHead> {
    try {
      return await headManifestWithReason(client, repository, tag, { ...opts, signal: this.stopping.signal });
    } catch (err) {
      if (this.stopping.signal.aborted) throw new OciError('UNAVAILABLE', 'berth is shutting down');
      throw err;
    }
  }

  /** Shutdown: ends the tag revalidations still waiting on an upstream (those in the background above all). */
  stop(): void {
    this.stopping.abort();
  }

  /**
   * The revalidation's answer if it comes within revalidate_timeout; past it,
   * the last known digest (stale, with a Warning) while the revalidation goes
   * on in the background and updates the tag when it ends. A request that
   * joins a revalidation already past its deadline answers at once. A tag
   * whose body is not cached (resolved by a HEAD only) has nothing to serve a
   * GET with, so that GET waits the revalidation out.
   */
  private async withinRevalidateTimeout(req: ManifestRequest, known: TagRow, revalidation: Promise<ManifestResult>): Promise<ManifestResult> {
    if (!this.overdue.has(revalidation)) {
      let cancel = (): void => {};
      const late = new Promise<'late'>((resolve) => {
        cancel = (this.opts.timer ?? realTimer)(() => resolve('late'), this.opts.revalidateTimeoutMs);
      });
      const first = await Promise.race([revalidation, late]).finally(() => cancel());
      if (first !== 'late') return first;
    }
    const { client, repository, reference: tag } = req;
    const registry = client.registry;
    const warning = `299 - "berth: upstream ${registry} did not answer within ${formatDuration(this.opts.revalidateTimeoutMs)}; serving the last known digest of ${repository}:${tag}"`;
    const stale = req.head ? { ...headOf(known, 'stale'), warning } : this.fromCache(known.digest, false, 'stale', warning);
    if (!stale) return revalidation;
    if (!this.overdue.has(revalidation)) {
      this.overdue.add(revalidation);
      this.finishInBackground(registry, repository, tag, known, revalidation);
    }
    this.metrics.revalidationsDeferred.inc({ upstream: registry });
    this.logger.debug({ upstream: registry, repository, tag, digest: known.digest }, 'revalidation outlasted revalidate_timeout; serving the last known digest');
    return stale;
  }

  /** Logs how a revalidation that outlasted its deadline ended (the tag itself is updated by `revalidate`). */
  private finishInBackground(registry: string, repository: string, tag: string, known: TagRow, revalidation: Promise<ManifestResult>): void {
    const started = this.now();
    this.logger.warn({ upstream: registry, repository, tag, digest: known.digest, timeoutMs: this.opts.revalidateTimeoutMs }, 'tag revalidation is slow; serving the last known digest meanwhile');
    revalidation.then(
      (r) => this.logger.info({ upstream: registry, repository, tag, digest: r.digest, previous: known.digest, ms: this.now() - started }, 'tag revalidated in the background'),
      (err: unknown) => this.logger.warn({ upstream: registry, repository, tag, digest: known.digest, err: (err as Error).message }, 'background tag revalidation failed'),
    );
  }

  private forgetTag(registry: string, repository: string, tag: string): void {
    this.index.deleteTag(registry, repository, tag);
  }

  /** Tags berth knows for a repository (the offline answer to tags/list). */
  knownTags(registry: string, repository: string): string[] {
    return this.index.listTags(registry, repository);
  }
}

/** Harbor's answer to a refused HEAD: a 412 without a body, so without its words. */
function isBareRefusal(err: unknown): boolean {
  return err instanceof UpstreamError && err.code === 'UPSTREAM_POLICY' && err.upstreamMessage === undefined;
}

/**
 * A manifest HEAD whose refusal carries the upstream's own words. Harbor
 * answers a refused HEAD with a bare 412 (reference §2), so a refusal is asked
 * again with a GET, whose 412 has Harbor's message: one request more, on a
 * refusal only, for the exact current text, which the client hears and berth
 * remembers for answers while Harbor is away. Should the GET be let through
 * (the policy changed in between), its answer stands; should it fail another
 * way, the HEAD's refusal does.
 */
export async function headManifestWithReason(client: RegistryClient, repository: string, reference: string, opts?: RequestOptions): Promise<Omit<ManifestAnswer, 'body'> | null> {
  try {
    return await client.headManifest(repository, reference, opts);
  } catch (err) {
    if (!isBareRefusal(err)) throw err;
    let got: ManifestAnswer | null;
    try {
      got = await client.getManifest(repository, reference, opts);
    } catch (again) {
      throw again instanceof UpstreamError && again.code === 'UPSTREAM_POLICY' ? again : err;
    }
    return got && { digest: got.digest, mediaType: got.mediaType, size: got.size };
  }
}

function headOf(row: TagRow, source: ManifestSource): ManifestResult {
  return { digest: row.digest, mediaType: row.media_type, size: row.size, source };
}

/**
 * Distribution answers 404 for an OCI manifest or index whose type an
 * explicit Accept leaves out, by tag or by digest (Docker types it serves by
 * digest whatever the Accept). A digest berth holds answers the same, so the
 * answer does not depend on whether berth had it yet.
 */
function admitted<T extends { mediaType: string }>(r: T, accept: string | undefined): T {
  if (!acceptAdmitsManifest(accept, r.mediaType)) {
    throw new OciError('MANIFEST_UNKNOWN', `manifest unknown: it is an ${baseMediaType(r.mediaType)}, which the Accept header does not name`);
  }
  return r;
}

/** Failures of the upstream itself (not answers like 404) that a stale tag may paper over. */
function isStaleWorthy(err: unknown): boolean {
  if (err instanceof UpstreamError) return isUnreachable(err) || err.code === 'UPSTREAM_STATUS' || err.code === 'UPSTREAM_RATE_LIMITED';
  if (err instanceof OciError) return ['UNAVAILABLE', 'BAD_GATEWAY', 'TOOMANYREQUESTS'].includes(err.code);
  return false;
}
