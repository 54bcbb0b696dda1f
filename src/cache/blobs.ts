/**
 * Blobs: a hit is read from disk; a miss starts (or joins) the one fill for
 * that digest. HEAD never opens a body: a miss asks the upstream with HEAD.
 */
import fs from 'node:fs';
import { Readable } from 'node:stream';
import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import type { Metrics } from '../metrics/metrics.js';
import { OciError } from '../oci/errors.js';
import type { RegistryClient } from '../upstream/types.js';
import { Fill, errText, type BlobSource } from './fill.js';
import type { FileRange } from './fill-reader.js';
import type { Site } from './site.js';
import { NoRoomError, blobUnknown, toClientError } from './errors.js';
import { passThrough } from './passthrough.js';
import type { ContentStore } from './content-store.js';
import type { BlobRow } from '../store/content-index.js';

export type BlobSourceKind = 'cache' | 'upstream' | 'coalesced';

export interface BlobHandle {
  digest: string;
  size: number;
  source: BlobSourceKind;
  /** Bytes [start, end] inclusive. Absent for HEAD. */
  open?: (start: number, end: number) => Readable;
  /**
   * A cached blob's open file, for a zero-copy send instead of `open`: the
   * caller owns `fd` and calls `done` (once) when the send is over, which
   * closes it and ends the read. Absent for HEAD and for bodies being filled.
   */
  takeFile?: () => { fd: number; done: () => void };
  /**
   * A body being filled, followed for a zero-copy send: `next` gives each run
   * of bytes of [start, end] as it reaches the fill's file and may go out
   * (null at the end; rejects when the fill failed or the signal aborted);
   * the caller calls `done` (once) when the send is over. Absent for HEAD and
   * for blobs already on disk (`takeFile`).
   */
  follow?: (start: number, end: number) => { next: (signal: AbortSignal) => Promise<FileRange | null>; done: () => void };
  /** Releases what the handle holds (an fd) if neither `open` nor `takeFile` is called. */
  release(): void;
}

export interface BlobRequest {
  client: RegistryClient;
  repository: string;
  digest: string;
  head: boolean;
  reqId?: string;
  /** The blob's index row, when the caller just read it (a row is read once per request). */
  row?: BlobRow;
  /**
   * A site peer asks: never forwarded to a third node (a miss fills from the
   * upstream only), a HEAD answers from the cache only.
   */
  fromPeer?: boolean;
}

/** How long a peer whose bytes for a blob failed verification is left out of that blob's fills. */
const WRONG_PEER_MS = 60 * 60_000;

export class BlobCache {
  private readonly fills = new Map<string, Fill>();
  /**
   * Digest -> the peers whose bytes for it did not match it. A fill whose bytes fail the digest
   * fails for the clients already streaming it (they get a truncated body, never a wrong one);
   * the next fill leaves those peers out, or it would ask the same wrong peer first again.
   */
  private readonly wrongPeers = new LRUCache<string, Set<string>>({ max: 10_000, ttl: WRONG_PEER_MS });
  /** Where each fill under way came from: content is served per repository, fills included. */
  private readonly origins = new Map<string, { registry: string; repository: string }>();

  constructor(
    private readonly store: ContentStore,
    private readonly metrics: Metrics,
    private readonly logger: Logger,
    private readonly opts: { maxResumes: number; site?: Site | null },
  ) {}

  /** How many fills are under way. */
  get inFlight(): number {
    return this.fills.size;
  }

  async get(req: BlobRequest): Promise<BlobHandle> {
    const hit = this.fromDisk(req.digest, req.head, req.row);
    if (hit) {
      this.metrics.cacheResult('blob', 'hit');
      return hit;
    }
    let fill = this.fills.get(req.digest);
    // A peer's request joins a fill only while it reads from the upstream: two nodes must never wait on each other.
    if (fill && req.fromPeer && fill.from?.peer) {
      // Being fetched from another peer: the asker goes on to its next source.
      throw new OciError('UNAVAILABLE', 'this peer is fetching the blob from another peer', { digest: req.digest });
    }
    const shared = fill !== undefined;
    if (!fill) {
      if (req.head) {
        if (req.fromPeer) throw blobUnknown(req.digest);
        return this.headUpstream(req);
      }
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
        throw blobUnknown(req.digest);
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
      fill.done.then(() => this.store.touch(req.digest, at), () => undefined);
    }
    this.metrics.cacheResult('blob', shared ? 'coalesced' : 'miss');
    const f = fill;
    const handle: BlobHandle = { digest: req.digest, size, source: shared ? 'coalesced' : 'upstream', release: () => undefined };
    if (!req.head) {
      handle.open = (start, end) => this.store.track(req.digest, f.reader(start, end));
      handle.follow = (start, end) => {
        const ranges = f.ranges(start, end);
        const unhold = this.store.hold(req.digest);
        return {
          next: (signal) => ranges.next(signal),
          done: () => {
            ranges.close();
            unhold();
          },
        };
      };
    }
    return handle;
  }

  /** The (registry, repository) a fill under way was started through. */
  fillOrigin(digest: string): { registry: string; repository: string } | undefined {
    return this.origins.get(digest);
  }

  /**
   * Makes sure a blob is in the cache without streaming it to anyone
   * (prefetch, export): joins or starts the fill and waits for it.
   */
  async ensure(req: Omit<BlobRequest, 'head'>): Promise<{ size: number; fetched: boolean }> {
    const size = this.store.present(req.digest);
    if (size !== undefined) return { size, fetched: false };
    const fill = this.fills.get(req.digest) ?? this.startFill({ ...req, head: false });
    try {
      await fill.done;
    } catch (err) {
      if (err instanceof NoRoomError) throw new OciError('UNAVAILABLE', err.message, { reason: 'ENOSPC' });
      throw toClientError(err);
    }
    return { size: fill.size ?? fill.accepted, fetched: true };
  }

  /** The disk cannot hold this blob: this client gets it straight from the upstream, verified, uncached. */
  private async uncached(req: BlobRequest, why: NoRoomError): Promise<BlobHandle> {
    this.logger.warn({ digest: req.digest, size: why.size, code: 'ENOSPC' }, 'no room in the cache for this blob, even with everything evictable gone: streaming it from the upstream uncached');
    let answer: Awaited<ReturnType<RegistryClient['getBlob']>>;
    try {
      answer = await req.client.getBlob(req.repository, req.digest, req.reqId ? { reqId: req.reqId } : {});
    } catch (err) {
      this.metrics.cacheResult('blob', 'error');
      throw toClientError(err);
    }
    if (!answer) throw blobUnknown(req.digest);
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
  private fromDisk(digest: string, head: boolean, row?: BlobRow): BlobHandle | undefined {
    if (head) {
      const size = this.store.present(digest, row);
      if (size === undefined) return undefined;
      this.store.touch(digest);
      return { digest, size, source: 'cache', release: () => undefined };
    }
    const blob = this.store.open(digest, row);
    if (!blob) return undefined;
    this.store.touch(digest);
    const { fd, size } = blob;
    let owned = true;
    return {
      digest,
      size,
      source: 'cache',
      open: (start, end) => {
        owned = false;
        if (end < start) {
          // An empty blob: createReadStream refuses end < start, and the fd must not leak.
          fs.close(fd, () => undefined);
          return Readable.from([]);
        }
        return this.store.track(digest, fs.createReadStream('', { fd, start, end, autoClose: true, highWaterMark: 256 * 1024 }));
      },
      takeFile: () => {
        owned = false;
        const unhold = this.store.hold(digest);
        let open = true;
        return {
          fd,
          done: () => {
            if (!open) return;
            open = false;
            fs.close(fd, () => undefined);
            unhold();
          },
        };
      },
      release: () => {
        if (owned) {
          owned = false;
          fs.close(fd, () => undefined);
        }
      },
    };
  }

  private async headUpstream(req: BlobRequest): Promise<BlobHandle> {
    try {
      const head = await req.client.headBlob(req.repository, req.digest, { reqId: req.reqId });
      if (!head) throw blobUnknown(req.digest);
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
    const upstream: BlobSource = {
      name: registry,
      fetch: (d, offset, signal) => client.getBlob(repository, d, { offset, signal, reqId: req.reqId }),
    };
    const site = req.fromPeer ? null : (this.opts.site ?? null);
    const peers = site?.blobPeers(digest) ?? { before: [], after: [] };
    // A peer is asked as one more registry, told which upstream with `ns`.
    const peerSource = (peer: RegistryClient): BlobSource => ({
      name: peer.registry,
      peer: true,
      fetch: (d, offset, signal) => peer.getBlob(repository, d, { offset, signal, query: { ns: registry }, ...(req.reqId ? { reqId: req.reqId } : {}) }),
    });
    const wrong = this.wrongPeers.get(digest);
    const trusted = (peer: RegistryClient): boolean => !wrong?.has(peer.registry);
    const sources = [...peers.before.filter(trusted).map(peerSource), upstream, ...peers.after.filter(trusted).map(peerSource)];
    /** Peers that delivered bytes to this fill. */
    const delivered = new Set<string>();
    const fill = new Fill({
      digest,
      store: this.store,
      logger: log,
      maxResumes: this.opts.maxResumes,
      sources,
      links: this.store.repository(registry, repository).links,
      onBytes: (n, from) => {
        if (from.peer) {
          delivered.add(from.name);
          site?.received(from.name, n);
        } else this.metrics.upstreamBytes.inc({ upstream: registry }, n);
      },
      ensureRoom: (bytes) => this.store.ensureRoom(bytes),
    });
    this.fills.set(digest, fill);
    this.origins.set(digest, { registry, repository });
    this.metrics.fillsInFlight.inc();
    const started = Date.now();
    fill.done.then(
      () => log.info({ size: fill.size, ms: Date.now() - started }, 'blob cached'),
      (err: unknown) => {
        if (err instanceof Error && err.name === 'DigestMismatchError') {
          this.metrics.verifyFailures.inc({ upstream: registry, source: delivered.size > 0 ? 'peer' : 'upstream' });
          if (delivered.size > 0) {
            // Which source was wrong cannot be told apart; the upstream stays, the peers go.
            const left = this.wrongPeers.get(digest) ?? new Set<string>();
            for (const peer of delivered) left.add(peer);
            this.wrongPeers.set(digest, left);
            log.warn({ peers: [...delivered], forMs: WRONG_PEER_MS }, 'bytes from site peers did not match the digest: these peers are not asked for this blob for a while');
          }
        }
        log.warn({ err: errText(err), received: fill.accepted }, 'blob fill failed; nothing cached');
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
