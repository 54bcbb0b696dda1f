/**
 * Prometheus metrics, all under `berth_`, in a registry of their own so two
 * daemons in one test process never share counters. Labels stay bounded:
 * upstream names, kinds, results and status codes — never repositories,
 * tags or digests.
 */
import client from 'prom-client';

export type CacheKind = 'manifest' | 'blob' | 'tags';
export type CacheResult = 'hit' | 'miss' | 'stale' | 'coalesced' | 'error' | 'not_found';

export class Metrics {
  readonly registry = new client.Registry();
  readonly httpRequests: client.Counter<'route' | 'method' | 'code'>;
  readonly httpDuration: client.Histogram<'route' | 'method'>;
  readonly cacheRequests: client.Counter<'kind' | 'result'>;
  readonly servedBytes: client.Counter<'source'>;
  readonly staleAnswers: client.Counter<'upstream'>;
  readonly revalidationsDeferred: client.Counter<'upstream'>;
  readonly coalescedWaiters: client.Counter;
  readonly fillsInFlight: client.Gauge;
  readonly upstreamRequests: client.Counter<'upstream' | 'kind' | 'code'>;
  readonly upstreamDuration: client.Histogram<'upstream' | 'kind'>;
  readonly upstreamBytes: client.Counter<'upstream'>;
  readonly upstreamUp: client.Gauge<'upstream'>;
  readonly upstreamLastSuccess: client.Gauge<'upstream'>;
  /** `source`: who sent the bytes, "upstream" or "peer" (a site peer delivered some of them). */
  readonly verifyFailures: client.Counter<'upstream' | 'source'>;
  readonly evictions: client.Counter;
  readonly policyDenials: client.Counter<'reason' | 'project'>;
  readonly credentialFailures: client.Counter;
  readonly credentialLockouts: client.Counter;
  readonly peerRequests: client.Counter<'peer' | 'result'>;
  readonly peerServed: client.Counter<'kind' | 'result'>;
  readonly peerBytes: client.Counter<'direction'>;
  /** Mirrors of two counters into the index, so `berth status` can read them from another process. */
  onCacheResult: ((kind: CacheKind, result: CacheResult) => void) | null = null;
  onServedBytes: ((source: 'cache' | 'upstream', n: number) => void) | null = null;

  constructor(opts: { cacheStats?: () => { bytes: number; blobs: number; manifests: number }; defaultMetrics?: boolean } = {}) {
    const registers = [this.registry];
    this.httpRequests = new client.Counter({ name: 'berth_http_requests_total', help: 'HTTP requests answered, by route, method and status code', labelNames: ['route', 'method', 'code'], registers });
    this.httpDuration = new client.Histogram({
      name: 'berth_http_request_duration_seconds',
      help: 'Time to answer an HTTP request (blobs: until the last byte)',
      labelNames: ['route', 'method'],
      buckets: [0.001, 0.005, 0.02, 0.1, 0.5, 2, 10, 60, 300],
      registers,
    });
    this.cacheRequests = new client.Counter({ name: 'berth_cache_requests_total', help: 'Registry reads by kind and result (hit, miss, stale, coalesced, not_found, error)', labelNames: ['kind', 'result'], registers });
    this.servedBytes = new client.Counter({ name: 'berth_served_bytes_total', help: 'Blob bytes sent to clients, by where they came from (cache = bytes the WAN was spared)', labelNames: ['source'], registers });
    this.staleAnswers = new client.Counter({ name: 'berth_stale_answers_total', help: 'Tag answers served from the last known digest because the upstream was unreachable or slower than revalidate_timeout', labelNames: ['upstream'], registers });
    this.revalidationsDeferred = new client.Counter({
      name: 'berth_revalidations_deferred_total',
      help: 'Tag answers that did not wait past revalidate_timeout for their revalidation (the last known digest was served; the revalidation finished in the background)',
      labelNames: ['upstream'],
      registers,
    });
    this.coalescedWaiters = new client.Counter({ name: 'berth_coalesced_waiters_total', help: 'Blob requests that joined a transfer already under way instead of starting one', registers });
    this.fillsInFlight = new client.Gauge({ name: 'berth_fills_in_flight', help: 'Blob transfers from upstreams under way', registers });
    this.upstreamRequests = new client.Counter({ name: 'berth_upstream_requests_total', help: 'Requests berth sent upstream, by upstream, kind and status code', labelNames: ['upstream', 'kind', 'code'], registers });
    this.upstreamDuration = new client.Histogram({
      name: 'berth_upstream_request_duration_seconds',
      help: 'Upstream latency until response headers',
      labelNames: ['upstream', 'kind'],
      buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    });
    this.upstreamBytes = new client.Counter({ name: 'berth_upstream_bytes_total', help: 'Blob bytes received from upstreams', labelNames: ['upstream'], registers });
    this.upstreamUp = new client.Gauge({ name: 'berth_upstream_up', help: '1 when the upstream answered its last request, 0 while it is failing', labelNames: ['upstream'], registers });
    this.upstreamLastSuccess = new client.Gauge({
      name: 'berth_upstream_last_success_timestamp_seconds',
      help: 'When the upstream last answered a request (unix seconds; any answer below 500 counts)',
      labelNames: ['upstream'],
      registers,
    });
    this.verifyFailures = new client.Counter({
      name: 'berth_digest_mismatches_total',
      help: 'Content that did not match its digest and was discarded, by the upstream it belongs to and its source (upstream or a site peer)',
      labelNames: ['upstream', 'source'],
      registers,
    });
    this.evictions = new client.Counter({ name: 'berth_cache_evictions_total', help: 'Blobs evicted to keep the cache under max_size', registers });
    this.policyDenials = new client.Counter({
      name: 'berth_policy_denials_total',
      help: 'Manifest requests refused by policy, by reason and Harbor project (project is empty for an upstream Harbor does not govern)',
      labelNames: ['reason', 'project'],
      registers,
    });
    this.credentialFailures = new client.Counter({ name: 'berth_credential_failures_total', help: 'Sign-ins to a private project refused for their password (Harbor said no, or offline it did not match the remembered pair)', registers });
    this.credentialLockouts = new client.Counter({ name: 'berth_credential_lockouts_total', help: 'Requests answered 429 because their user name had too many failed sign-ins in the last minutes', registers });
    this.peerRequests = new client.Counter({ name: 'berth_peer_requests_total', help: 'Requests this berth sent to site peers, by peer and result (ok, not_found, unavailable, unauthorized, error)', labelNames: ['peer', 'result'], registers });
    this.peerServed = new client.Counter({ name: 'berth_peer_served_total', help: 'Requests site peers sent to this berth, by kind (blob, manifest, other) and result (ok, not_found, refused, unauthorized, error)', labelNames: ['kind', 'result'], registers });
    this.peerBytes = new client.Counter({ name: 'berth_peer_bytes_total', help: 'Blob bytes received from site peers (received) and sent to them (sent); with berth_upstream_bytes_total, the WAN saving', labelNames: ['direction'], registers });
    // Known label values start at 0, so a panel shows "none yet" rather than no data.
    for (const source of ['cache', 'upstream'] as const) this.servedBytes.inc({ source }, 0);
    const stats = opts.cacheStats;
    if (stats) {
      new client.Gauge({
        name: 'berth_cache_size_bytes',
        help: 'Bytes of verified blobs in the cache',
        registers,
        collect() {
          this.set(stats().bytes);
        },
      });
      new client.Gauge({
        name: 'berth_cache_blobs',
        help: 'Verified blobs in the cache',
        registers,
        collect() {
          this.set(stats().blobs);
        },
      });
      new client.Gauge({
        name: 'berth_cache_manifests',
        help: 'Manifests in the cache',
        registers,
        collect() {
          this.set(stats().manifests);
        },
      });
    }
    if (opts.defaultMetrics !== false) client.collectDefaultMetrics({ register: this.registry, prefix: 'berth_' });
  }

  /**
   * Gauges for the Harbor policy snapshot, read on scrape, and the offline
   * grace it is measured against (so an alert compares the two without a constant).
   */
  watchPolicy(read: () => { ageSeconds: number | null; lastSuccessSeconds: number | null }, offlineGraceSeconds?: number): void {
    const registers = [this.registry];
    if (offlineGraceSeconds !== undefined) {
      new client.Gauge({
        name: 'berth_policy_offline_grace_seconds',
        help: '[harbor] offline_grace: how old the policy snapshot (and a remembered pull-secret) may grow before on_expired applies',
        registers,
      }).set(offlineGraceSeconds);
    }
    new client.Gauge({
      name: 'berth_policy_snapshot_age_seconds',
      help: 'Age of the Harbor policy snapshot enforcement uses (absent until the first sync)',
      registers,
      collect() {
        const v = read().ageSeconds;
        if (v !== null) this.set(v);
      },
    });
    new client.Gauge({
      name: 'berth_policy_sync_last_success_timestamp_seconds',
      help: 'When the last policy sync from Harbor succeeded (unix seconds)',
      registers,
      collect() {
        const v = read().lastSuccessSeconds;
        if (v !== null) this.set(v);
      },
    });
  }

  /**
   * Gauges of the store beside berth_cache_size_bytes, read on scrape: its
   * limits (eviction starts above max_size and frees down to the low
   * watermark), what pins hold, and what `berth verify` set aside.
   */
  watchStore(read: {
    maxBytes: number;
    lowWatermarkBytes: number;
    pinCount: () => number;
    pinnedBytes: () => number;
    quarantined: () => number;
  }): void {
    const registers = [this.registry];
    new client.Gauge({ name: 'berth_cache_max_size_bytes', help: '[cache] max_size: eviction starts when the cache grows past it (the high watermark)', registers }).set(read.maxBytes);
    new client.Gauge({ name: 'berth_cache_low_watermark_bytes', help: 'Where eviction stops once started (90% of max_size)', registers }).set(read.lowWatermarkBytes);
    new client.Gauge({
      name: 'berth_cache_pins',
      help: 'Pinned image references (berth prefetch, berth import): eviction never takes them',
      registers,
      collect() {
        this.set(read.pinCount());
      },
    });
    new client.Gauge({
      name: 'berth_cache_pinned_bytes',
      help: 'Bytes of blobs the pins keep (all they reference)',
      registers,
      collect() {
        this.set(read.pinnedBytes());
      },
    });
    new client.Gauge({
      name: 'berth_cache_quarantined_blobs',
      help: 'Files in <cache>/quarantine: blobs berth verify found corrupt and set aside (stays until an operator removes them)',
      registers,
      collect() {
        this.set(read.quarantined());
      },
    });
  }

  cacheResult(kind: CacheKind, result: CacheResult): void {
    this.cacheRequests.inc({ kind, result });
    this.onCacheResult?.(kind, result);
  }

  served(source: 'cache' | 'upstream', n: number): void {
    this.servedBytes.inc({ source }, n);
    this.onServedBytes?.(source, n);
  }

  async render(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}
