/**
 * Blobs: a hit is read from disk; a miss starts (or joins) the one fill for
 * that digest. HEAD never opens a body: a miss asks the upstream with HEAD.
 */
import fs from 'node:fs';
import { Readable } from 'node:stream';
import type { Logger } from 'pino';
import type { Index } from '../store/index-db.js';
import type { BlobFiles } from '../store/blobs.js';
import type { Metrics } from '../metrics/metrics.js';
import { OciError } from '../oci/errors.js';
import type { RegistryClient } from '../upstream/types.js';
import { Fill, errText } from './fill.js';
import { toClientError } from './errors.js';
import { NoRoomError, passThrough } from './passthrough.js';

export type BlobSourceKind = 'cache' | 'upstream' | 'coalesced';

export interface BlobHandle {
  digest: string;
  size: number;
  source: BlobSourceKind;
  /** Bytes [start, end] inclusive. Absent for HEAD. */
  open?: (start: number, end: number) => Readable;
  /** Releases what the handle holds (an fd) if `open` is never called. */
  release(): void;
}

export interface BlobRequest {
  client: RegistryClient;
  repository: string;
  digest: string;
  head: boolean;
  reqId?: string;
}

export class BlobCache {
  readonly fills = new Map<string, Fill>();
  /** Where each fill under way came from: content is served per repository, fills included. */
  private readonly origins = new Map<string, { registry: string; repository: string }>();
  /** Open readers per digest: eviction never deletes a blob under one. */
  private readonly readers = new Map<string, number>();
  /** Called after each blob enters the cache (eviction watches the size). */
  onCommitted: ((digest: string, size: number) => void) | null = null;

  constructor(
    private readonly index: Index,
    private readonly files: BlobFiles,
    private readonly metrics: Metrics,
    private readonly logger: Logger,
    private readonly opts: { maxResumes: number; ensureRoom?: (bytes: number) => Promise<boolean> },
  ) {}

  async get(req: BlobRequest): Promise<BlobHandle> {
    const hit = this.fromDisk(req.digest, req.head);
    if (hit) {
      this.metrics.cacheResult('blob', 'hit');
      return hit;
    }
    let fill = this.fills.get(req.digest);
    const shared = fill !== undefined;
    if (!fill) {
      if (req.head) return this.headUpstream(req);
      fill = this.startFill(req);
    }
    let size: number | undefined;
    try {
      size = await fill.ready;
      if (size === undefined) {
        // The upstream did not say how long the blob is: answer once it is complete and verified.
        await fill.done;
        const done = this.fromDisk(req.digest, req.head);
        if (done) return { ...done, source: shared ? 'coalesced' : 'upstream' };
        throw new OciError('BLOB_UNKNOWN');
      }
    } catch (err) {
      if (err instanceof NoRoomError) return this.uncached(req, err);
      this.metrics.cacheResult('blob', err instanceof OciError && err.status === 404 ? 'not_found' : 'error');
      throw toClientError(err);
    }
    if (shared) {
      this.metrics.coalescedWaiters.inc();
      // A request that joined the fill is a use too: LRU must see it once the blob is indexed.
      const at = Date.now();
      fill.done.then(() => this.index.touch(req.digest, at), () => undefined);
    }
    this.metrics.cacheResult('blob', shared ? 'coalesced' : 'miss');
    const f = fill;
    const handle: BlobHandle = { digest: req.digest, size, source: shared ? 'coalesced' : 'upstream', release: () => undefined };
    if (!req.head) handle.open = (start, end) => this.track(req.digest, f.reader(start, end));
    return handle;
  }

  /** The (registry, repository) a fill under way was started through. */
  fillOrigin(digest: string): { registry: string; repository: string } | undefined {
    return this.origins.get(digest);
  }

  /** Whether a client is reading the blob right now. */
  isBusy(digest: string): boolean {
    return (this.readers.get(digest) ?? 0) > 0 || this.fills.has(digest);
  }

  private track<T extends Readable>(digest: string, stream: T): T {
    this.readers.set(digest, (this.readers.get(digest) ?? 0) + 1);
    stream.once('close', () => {
      const n = (this.readers.get(digest) ?? 1) - 1;
      if (n <= 0) this.readers.delete(digest);
      else this.readers.set(digest, n);
    });
    return stream;
  }

  /**
   * Makes sure a blob is in the cache without streaming it to anyone
   * (prefetch, export): joins or starts the fill and waits for it.
   */
  async ensure(req: Omit<BlobRequest, 'head'>): Promise<{ size: number; fetched: boolean }> {
    const row = this.index.getBlob(req.digest);
    if (row && this.files.sizeOnDisk(req.digest) === row.size) return { size: row.size, fetched: false };
    if (row) this.dropMissing(req.digest);
    const fill = this.fills.get(req.digest) ?? this.startFill({ ...req, head: false });
    try {
      await fill.done;
    } catch (err) {
      if (err instanceof NoRoomError) throw new OciError('UNAVAILABLE', err.message, { reason: 'ENOSPC' });
      throw toClientError(err);
    }
    return { size: fill.size ?? fill.written, fetched: true };
  }

  /** The disk cannot hold this blob: this client gets it straight from the upstream, verified, uncached. */
  private async uncached(req: BlobRequest, why: NoRoomError): Promise<BlobHandle> {
    this.logger.warn({ digest: req.digest, size: why.size, code: 'ENOSPC' }, 'no room in the cache for this blob even after eviction: streaming it from the upstream uncached');
    let answer: Awaited<ReturnType<RegistryClient['getBlob']>>;
    try {
      answer = await req.client.getBlob(req.repository, req.digest, req.reqId ? { reqId: req.reqId } : {});
    } catch (err) {
      this.metrics.cacheResult('blob', 'error');
      throw toClientError(err);
    }
    if (!answer) throw new OciError('BLOB_UNKNOWN', 'blob unknown to registry', { digest: req.digest });
    if (answer.status !== 200 || answer.size === undefined) {
      answer.body.destroy();
      throw new OciError('UNAVAILABLE', 'the cache disk is full and the upstream did not say how long this blob is', { reason: 'ENOSPC' });
    }
    this.metrics.cacheResult('blob', 'miss');
    const body = answer;
    const size = answer.size;
    let opened = false;
    return {
      digest: req.digest,
      size,
      source: 'upstream',
      open: (start, end) => {
        opened = true;
        return passThrough(body, req.digest, size, start, end);
      },
      release: () => {
        if (!opened) body.body.destroy();
      },
    };
  }

  /** A verified blob on disk. The fd is opened now so eviction cannot race the answer. */
  private fromDisk(digest: string, head: boolean): BlobHandle | undefined {
    const row = this.index.getBlob(digest);
    if (!row) return undefined;
    if (head) {
      if (this.files.sizeOnDisk(digest) !== row.size) return this.dropMissing(digest);
      this.index.touch(digest);
      return { digest, size: row.size, source: 'cache', release: () => undefined };
    }
    let fd: number;
    try {
      fd = this.files.openSync(digest);
    } catch {
      return this.dropMissing(digest);
    }
    this.index.touch(digest);
    let owned = true;
    return {
      digest,
      size: row.size,
      source: 'cache',
      open: (start, end) => {
        owned = false;
        if (end < start) {
          // An empty blob: createReadStream refuses end < start, and the fd must not leak.
          fs.close(fd, () => undefined);
          return Readable.from([]);
        }
        return this.track(digest, fs.createReadStream('', { fd, start, end, autoClose: true, highWaterMark: 256 * 1024 }));
      },
      release: () => {
        if (owned) {
          owned = false;
          fs.close(fd, () => undefined);
        }
      },
    };
  }

  /** The index names a blob the disk lost (a wiped cache dir): forget it and fetch again. */
  private dropMissing(digest: string): undefined {
    this.logger.warn({ digest }, 'indexed blob missing on disk; dropping it from the index');
    this.index.deleteBlob(digest);
    return undefined;
  }

  private async headUpstream(req: BlobRequest): Promise<BlobHandle> {
    try {
      const head = await req.client.headBlob(req.repository, req.digest, { reqId: req.reqId });
      if (!head) throw new OciError('BLOB_UNKNOWN', 'blob unknown to registry', { digest: req.digest });
      this.metrics.cacheResult('blob', 'miss');
      return { digest: req.digest, size: head.size, source: 'upstream', release: () => undefined };
    } catch (err) {
      const e = toClientError(err);
      this.metrics.cacheResult('blob', e.status === 404 ? 'not_found' : 'error');
      throw e;
    }
  }

  private startFill(req: BlobRequest): Fill {
    const { client, repository, digest } = req;
    const registry = client.registry;
    const log = this.logger.child({ digest, upstream: registry, repository });
    const fill = new Fill({
      digest,
      files: this.files,
      logger: log,
      maxResumes: this.opts.maxResumes,
      source: {
        name: registry,
        fetch: (d, offset, signal) => client.getBlob(repository, d, { offset, signal, reqId: req.reqId }),
      },
      onBytes: (n) => this.metrics.upstreamBytes.inc({ upstream: registry }, n),
      ...(this.opts.ensureRoom ? { ensureRoom: this.opts.ensureRoom } : {}),
      onPublishing: (d) => this.index.beginPublish(d, fill.startedAt),
      onCommitted: (d, size) => {
        this.index.endPublish(d, size, fill.startedAt);
        this.index.link(registry, repository, d);
        this.onCommitted?.(d, size);
      },
    });
    this.fills.set(digest, fill);
    this.origins.set(digest, { registry, repository });
    this.metrics.fillsInFlight.inc();
    const started = Date.now();
    fill.done.then(
      () => log.info({ size: fill.size, ms: Date.now() - started }, 'blob cached'),
      (err: unknown) => {
        if (err instanceof Error && err.name === 'DigestMismatchError') this.metrics.verifyFailures.inc({ upstream: registry });
        log.warn({ err: errText(err), written: fill.written }, 'blob fill failed; nothing cached');
      },
    ).finally(() => {
      this.fills.delete(digest);
      this.origins.delete(digest);
      this.metrics.fillsInFlight.dec();
    });
    return fill;
  }

  /** Waits for fills under way (shutdown drain); aborts them after `ms`. */
  async drain(ms: number): Promise<void> {
    const pending = [...this.fills.values()];
    if (pending.length === 0) return;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((res) => {
      timer = setTimeout(res, ms);
    });
    await Promise.race([Promise.allSettled(pending.map((f) => f.done)).then(() => undefined), timeout]);
    clearTimeout(timer);
    for (const f of this.fills.values()) f.abort();
    await Promise.allSettled([...this.fills.values()].map((f) => f.done));
  }
}
