/**
 * The content store: blob files and the index's content tables, kept in
 * agreement by one owner. Everything that puts content in the cache or takes
 * it out goes through here (fills, import, prefetch, gc, verify, eviction),
 * so its invariants live in one place:
 * - a blob gets its digest's name only verified and durable, and its index
 *   row (with its repository links) right after, through the publish
 *   journal (`BlobWriter.commit`);
 * - content is served per repository: `repository()` is the view a
 *   request works through, like Distribution's linked blob store;
 * - eviction never deletes a blob being written or read, nor a pinned one;
 * - a row whose file the disk lost is dropped, never served; a file that
 *   cannot be read right now (EMFILE, EIO) keeps its row and fails the request.
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import { OciError } from '../oci/errors.js';
import { manifestChildren } from '../oci/manifest.js';
import type { Metrics } from '../metrics/metrics.js';
import type { BlobFiles, BlobWriter, PublishJournal } from '../store/blobs.js';
import type { BlobRow, ContentIndex, TagRow } from '../store/content-index.js';
import { Index } from '../store/index-db.js';
import { Evictor } from './evict.js';

/** Free space the disk must keep beyond a blob: SQLite's WAL and the index need room to write. */
export const DISK_RESERVE = 4 * 1024 * 1024;

export interface ContentStoreOptions {
  files: BlobFiles;
  index: ContentIndex;
  logger: Logger;
  metrics?: Metrics;
  /** cache.max_size */
  maxBytes: number;
  /** Free bytes on the cache's disk, null when unknown (default: statfs of tmp/; tests give a disk of a set size). */
  diskFree?: () => Promise<number | null>;
}

/** A blob opened for reading: the fd stays valid even if the file is evicted meanwhile. */
export interface OpenBlob {
  fd: number;
  size: number;
}

export class ContentStore {
  readonly files: BlobFiles;
  readonly index: ContentIndex;
  private readonly evictor: Evictor;
  private readonly logger: Logger;
  private readonly diskFree: () => Promise<number | null>;
  private readonly maxBytes: number;
  /** Open readers per digest. */
  private readonly readers = new Map<string, number>();
  /** Writers under way per digest. */
  private readonly writing = new Map<string, number>();

  constructor(opts: ContentStoreOptions) {
    this.files = opts.files;
    this.index = opts.index;
    this.logger = opts.logger;
    this.maxBytes = opts.maxBytes;
    this.diskFree = opts.diskFree ?? (() => freeBytes(this.files.layout.tmpDir));
    this.evictor = new Evictor(opts.index, opts.files, opts.logger, { maxBytes: opts.maxBytes, isBusy: (d) => this.isBusy(d), ...(opts.metrics ? { metrics: opts.metrics } : {}) });
  }

  /** The view of one (registry, repository): what it may serve and what it links. */
  repository(registry: string, repository: string): RepositoryContent {
    return new RepositoryContent(this, registry, repository);
  }

  // --- blobs ------------------------------------------------------------

  stat(digest: string): BlobRow | undefined {
    return this.index.getBlob(digest);
  }

  /**
   * A verified blob on disk, opened now so eviction cannot race the answer;
   * undefined when it is not cached (a row whose file is gone is dropped).
   * Any other failure to open it (EMFILE, EIO) throws a retryable 503 and
   * keeps the row: berth still holds the blob.
   */
  open(digest: string, known?: BlobRow): OpenBlob | undefined {
    const row = known ?? this.index.getBlob(digest);
    if (!row) return undefined;
    try {
      return { fd: this.files.openSync(digest), size: row.size };
    } catch (err) {
      if (isGone(err)) return this.dropMissing(digest);
      throw this.unreadable(digest, err);
    }
  }

  /**
   * Size of a cached blob (`known`: its row, when the caller just read it)
   * whose file is really there (HEAD, ensure); undefined otherwise. Like
   * `open`, only a file that is gone (or of another size) drops the row.
   */
  present(digest: string, known?: BlobRow): number | undefined {
    const row = known ?? this.index.getBlob(digest);
    if (!row) return undefined;
    let size: number;
    try {
      size = fs.statSync(this.files.path(digest)).size;
    } catch (err) {
      if (isGone(err)) return this.dropMissing(digest);
      throw this.unreadable(digest, err);
    }
    if (size !== row.size) return this.dropMissing(digest);
    return row.size;
  }

  /** A cached blob berth cannot read right now (fds exhausted, an I/O error): the request fails, the row stays. */
  private unreadable(digest: string, err: unknown): OciError {
    const code = (err as NodeJS.ErrnoException | null)?.code ?? 'unknown error';
    this.logger.warn({ digest, code, err: (err as Error | null)?.message }, 'cannot read a cached blob right now; answering 503 and keeping it');
    return new OciError('UNAVAILABLE', `berth cannot read its cached copy of this blob right now (${code}); try again`, { digest, reason: code }, { 'Retry-After': '1' });
  }

  /** The index names a blob the disk lost (a wiped cache dir): forget it so it is fetched again. */
  private dropMissing(digest: string): undefined {
    this.logger.warn({ digest }, 'indexed blob missing on disk; dropping it from the index');
    this.index.deleteBlob(digest);
    return undefined;
  }

  /** Opens a cached blob's file (a fill's reader that arrives after the rename). */
  openSync(digest: string): number {
    return this.files.openSync(digest);
  }

  /** Where a cached blob's file is (export streams it). */
  path(digest: string): string {
    return this.files.path(digest);
  }

  /** Records a use for LRU (batched). */
  touch(digest: string, at?: number): void {
    this.index.touch(digest, at);
  }

  /**
   * A writer for a blob: `commit` takes it into the cache (see BlobWriter);
   * until it commits or aborts, eviction leaves that digest alone.
   */
  async createWriter(digest: string): Promise<BlobWriter> {
    this.busy(this.writing, digest, +1);
    try {
      return await this.files.createWriter(digest, {
        journal: this.journal,
        onSettled: (w) => {
          this.busy(this.writing, digest, -1);
          if (w.state === 'committed') this.evictor.schedule();
        },
      });
    } catch (err) {
      this.busy(this.writing, digest, -1);
      throw err;
    }
  }

  /**
   * The writers' publish journal: the index's, except when the row cannot be
   * written after the rename. A fill hands its clients the verified bytes
   * before it commits, so the disk may have filled up meanwhile: the rename
   * needs no room, the row does (SQLITE_FULL). The file is then taken back
   * out, in the same turn, so no blob file is left without its row (nothing
   * would serve, count or evict it until gc). A re-fill of a blob still
   * indexed keeps its row, so its file stays. The journal entry may stay:
   * start-up forgets it, the file being gone.
   */
  private readonly journal: PublishJournal = {
    beginPublish: (digest, accessedAt, links) => this.index.beginPublish(digest, accessedAt, links),
    endPublish: (digest, size, accessedAt, links) => {
      try {
        this.index.endPublish(digest, size, accessedAt, links);
      } catch (err) {
        this.unpublish(digest, err);
        throw err;
      }
    },
  };

  /** Removes a just-renamed blob file whose row could not be written (unless the blob is indexed already). */
  private unpublish(digest: string, why: unknown): void {
    const code = (why as { code?: unknown } | null)?.code;
    if (this.index.getBlob(digest)) {
      this.logger.warn({ digest, code }, 'could not index a blob again (disk full?); its earlier row and file stay');
      return;
    }
    try {
      fs.unlinkSync(this.files.path(digest));
      this.logger.warn({ digest, code }, 'could not index a blob (disk full?); removed its file so index and disk agree');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.logger.error({ digest, code, err }, 'could not index a blob nor remove its file: gc will remove it');
    }
  }

  /** Counts a stream as a reader of the digest until it closes. */
  track<T extends Readable>(digest: string, stream: T): T {
    stream.once('close', this.hold(digest));
    return stream;
  }

  /** Counts a reader of the digest until the returned function is called (once; later calls do nothing). */
  hold(digest: string): () => void {
    this.busy(this.readers, digest, +1);
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      this.busy(this.readers, digest, -1);
    };
  }

  /** Whether the blob is being written or read right now. */
  isBusy(digest: string): boolean {
    return this.readers.has(digest) || this.writing.has(digest);
  }

  private busy(map: Map<string, number>, digest: string, delta: number): void {
    const n = (map.get(digest) ?? 0) + delta;
    if (n <= 0) map.delete(digest);
    else map.set(digest, n);
  }

  /**
   * Makes room for a blob of `bytes` (or the `bytes` a fill still has to
   * write): false when it cannot, and then nothing is evicted for it (the
   * fill's client gets the bytes from the upstream, uncached). Checked
   * before anything is evicted:
   * - max_size: a commit that takes the cache past it trims it to the low
   *   watermark, least recently used first and this blob last. A blob that
   *   does not fit there beside what eviction never takes (pinned content)
   *   would flush the cache and then itself.
   * - the disk: past its free space, eviction frees the rest now, whatever
   *   max_size says, from what it may take now (not pinned, not being read
   *   or written); a blob that would not fit even with all of that gone
   *   evicts nothing.
   * Eviction that cannot write the index (SQLITE_FULL: a full disk) is no
   * room too, not an error.
   */
  async ensureRoom(bytes: number): Promise<boolean> {
    const total = this.index.totalBytes();
    if (total + bytes > this.maxBytes && !this.evictor.canFree(total + bytes - this.evictor.lowTarget, { busyToo: true })) {
      this.logger.warn({ bytes, cached: total, maxBytes: this.maxBytes }, 'a blob that cannot stay under max_size beside the pinned content: not caching it, evicting nothing');
      return false;
    }
    const free = await this.diskFree();
    if (free === null || free >= bytes + DISK_RESERVE) return true;
    const short = bytes + DISK_RESERVE - free;
    if (!this.evictor.canFree(short)) {
      this.logger.warn({ bytes, free, code: 'ENOSPC' }, 'the cache disk cannot hold this blob even with all evictable content gone: evicting nothing');
      return false;
    }
    try {
      await this.evictor.freeBytes(short);
    } catch (err) {
      this.logger.warn({ code: (err as { code?: unknown } | null)?.code, err: (err as Error).message }, 'could not evict to make room (disk full?)');
      return false;
    }
    const after = await this.diskFree();
    return after === null || after >= bytes + DISK_RESERVE;
  }

  /** Indexes a blob file found on disk that hashes to its name (verify). */
  adopt(digest: string, size: number): void {
    this.index.putBlob(digest, size);
  }

  /** Drops a blob from the index and moves its file to quarantine/ (verify found it corrupt). */
  async quarantine(digest: string): Promise<string> {
    this.index.deleteBlob(digest);
    return this.files.quarantine(digest);
  }

  /** Forgets a blob and removes its file (gc: a row without a file, or a file without a row). */
  async remove(digest: string): Promise<void> {
    this.index.deleteBlob(digest);
    await this.files.remove(digest);
  }

  // --- manifests and tags (the manifest cache keeps its own hot copies) --

  /** Stores a manifest verbatim with the digests it references. */
  putManifest(digest: string, mediaType: string, body: Buffer): void {
    this.index.putManifest(digest, mediaType, body, manifestChildren(body));
  }

  /** A cached manifest's bytes. */
  manifestBody(digest: string): Buffer | undefined {
    return this.index.getManifest(digest)?.body;
  }

  putTag(registry: string, repository: string, tag: string, row: TagRow): void {
    this.index.putTag(registry, repository, tag, row);
  }

  /** Manifests berth holds that came through a registry (Harbor sync fetches their facts). */
  heldManifests(registry: string): { repository: string; digest: string }[] {
    return this.index.manifestLinks(registry);
  }

  // --- size -------------------------------------------------------------

  stats(): { bytes: number; blobs: number; manifests: number } {
    return this.index.stats();
  }

  /** Bytes counted against max_size: blobs plus manifest bodies. */
  totalBytes(): number {
    return this.index.totalBytes();
  }

  /** Evicts now if over max_size (gc). */
  evictNow(): ReturnType<Evictor['maybeEvict']> {
    return this.evictor.maybeEvict();
  }

  /** Trims in the background (start-up: max_size lowered, or a cache carried over). */
  scheduleEviction(delayMs?: number): void {
    this.evictor.schedule(delayMs);
  }

  /** Frees `bytes` now whatever max_size says (tests, and a full disk). */
  freeBytes(bytes: number): ReturnType<Evictor['freeBytes']> {
    return this.evictor.freeBytes(bytes);
  }

  close(): void {
    this.evictor.stop();
  }
}

/**
 * One repository's view of the store. Content is served per repository, as
 * a registry does: a blob cached through one repository is not handed out
 * under another until that one is linked to it.
 */
export class RepositoryContent {
  constructor(private readonly store: ContentStore, readonly registry: string, readonly repository: string) {}

  isLinked(digest: string): boolean {
    return this.store.index.isLinked(this.registry, this.repository, digest);
  }

  link(digest: string): void {
    this.store.index.link(this.registry, this.repository, digest);
  }

  /** Commit options that link the blob here. */
  get links(): { registry: string; repository: string }[] {
    return [{ registry: this.registry, repository: this.repository }];
  }
}

/** Blob bytes an index file says the cache holds (doctor, without opening a store); 0 when there is no index yet or it cannot be read. */
export function cachedBytes(indexFile: string): number {
  let index: Index | undefined;
  try {
    index = new Index(indexFile, { readonly: true });
    return index.content.stats().bytes;
  } catch {
    return 0;
  } finally {
    index?.close();
  }
}

/** The file is not there (a wiped cache dir): the only errors that may drop a blob's row. */
function isGone(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}

/** Free bytes on the filesystem holding `dir` for an unprivileged writer, or null when it cannot be told. */
async function freeBytes(dir: string): Promise<number | null> {
  try {
    const st = await fsp.statfs(dir);
    return st.bavail * st.bsize;
  } catch {
    return null;
  }
}

