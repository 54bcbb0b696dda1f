/**
 * Keeps the cache under max_size by least-recent use (last access, not
 * fetch time). Pinned content and everything a pinned manifest references is
 * never a candidate (the index computes that closure); a blob a client is
 * reading is skipped. Eviction starts when the cache passes max_size and
 * goes down to the low watermark, so that one fill does not trigger one
 * eviction each.
 *
 * Order of removal: the index row first (no new reader can find the blob),
 * then the file. A crash between the two leaves a file without a row, which
 * `gc` removes; never a row without a file.
 */
import type { Logger } from 'pino';
import type { ContentIndex } from '../store/content-index.js';
import type { BlobFiles } from '../store/blobs.js';
import type { Metrics } from '../metrics/metrics.js';

export const LOW_WATERMARK = 0.9;

export interface EvictionResult {
  before: number;
  after: number;
  evictedBlobs: number;
  evictedManifests: number;
  freedBytes: number;
  /** Bytes over target that eviction could not free (pinned or busy). */
  shortBy: number;
}

export class Evictor {
  private running: Promise<EvictionResult> | null = null;
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly index: ContentIndex,
    private readonly files: BlobFiles,
    private readonly logger: Logger,
    private readonly opts: { maxBytes: number; isBusy?: (digest: string) => boolean; metrics?: Metrics },
  ) {}

  /** Evicts now if over max_size (coalesced: one run at a time). */
  async maybeEvict(): Promise<EvictionResult | null> {
    if (this.running) return this.running;
    const total = this.index.totalBytes();
    if (total <= this.opts.maxBytes) return null;
    return this.evictTo(this.lowTarget);
  }

  /** Debounced trigger for the hot path (after a fill commits). */
  schedule(delayMs = 500): void {
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.maybeEvict().catch((err: unknown) => this.logger.error({ err }, 'eviction failed'));
    }, delayMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  /**
   * Frees `bytes` now, whatever max_size says: the disk itself ran out of
   * room (ENOSPC) before the cache reached its limit. Same order and same
   * protections (pins, readers) as ordinary eviction.
   */
  async freeBytes(bytes: number): Promise<EvictionResult> {
    if (this.running) await this.running.catch(() => undefined);
    return this.evictTo(Math.max(0, this.index.totalBytes() - bytes));
  }

  /** Where eviction past max_size stops (the low watermark). */
  get lowTarget(): number {
    return Math.floor(this.opts.maxBytes * LOW_WATERMARK);
  }

  /**
   * Whether eviction could free `bytes` now: unpinned content, least
   * recently used first, and (unless `busyToo`: a blob whose reader or
   * writer will be done by the time eviction runs) no blob being read or
   * written. Reads candidates only until they add up to `bytes`.
   */
  canFree(bytes: number, opts: { busyToo?: boolean } = {}): boolean {
    if (bytes <= 0) return true;
    let sum = 0;
    for (const c of this.index.eachEvictionCandidate()) {
      if (!opts.busyToo && c.kind === 'blob' && this.opts.isBusy?.(c.digest)) continue;
      sum += c.size;
      if (sum >= bytes) return true;
    }
    return false;
  }

  evictTo(targetBytes: number): Promise<EvictionResult> {
    this.running ??= this.run(targetBytes).finally(() => {
      this.running = null;
    });
    return this.running;
  }

  private async run(target: number): Promise<EvictionResult> {
    // Access times wait in memory for their batch: rank by the real ones (best effort:
    // on a full disk this write may fail, and eviction is what makes room).
    try {
      this.index.flushAccess();
    } catch (err) {
      this.logger.warn({ code: (err as { code?: unknown }).code }, 'could not write access times before eviction; ranking by the last written ones');
    }
    const before = this.index.totalBytes();
    let total = before;
    const result: EvictionResult = { before, after: before, evictedBlobs: 0, evictedManifests: 0, freedBytes: 0, shortBy: 0 };
    for (const c of this.index.eachEvictionCandidate()) {
      if (total <= target) break;
      if (c.kind === 'blob') {
        if (this.opts.isBusy?.(c.digest)) continue;
        this.index.deleteBlob(c.digest);
        await this.files.remove(c.digest);
        result.evictedBlobs++;
        this.opts.metrics?.evictions.inc();
      } else {
        this.index.deleteManifest(c.digest);
        result.evictedManifests++;
      }
      total -= c.size;
      result.freedBytes += c.size;
    }
    result.after = this.index.totalBytes();
    result.shortBy = Math.max(0, result.after - target);
    if (result.evictedBlobs + result.evictedManifests > 0) {
      this.logger.info({ ...result, target }, 'evicted least recently used content');
    }
    if (result.shortBy > 0) this.logger.warn({ shortBy: result.shortBy, target }, 'cache stays over its target: the rest is pinned or being read');
    return result;
  }
}
