/**
 * Blob files on disk. A blob is written to tmp/ while it is hashed and is
 * renamed into blobs/ only when its bytes hash to its digest, after an
 * fsync, so neither a crash nor a bad upstream can leave a wrong or half
 * blob under a digest's name.
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { randomBytes, type Hash } from 'node:crypto';
import { hasherDigest, newHasher } from '../oci/digest.js';
import type { Layout } from './layout.js';

export class DigestMismatchError extends Error {
  readonly code = 'DIGEST_MISMATCH';
  constructor(readonly expected: string, readonly actual: string, readonly expectedSize?: number, readonly actualSize?: number) {
    super(`content does not match its digest: expected ${expected}${expectedSize === undefined ? '' : ` (${expectedSize} bytes)`}, got ${actual} (${actualSize ?? '?'} bytes)`);
    this.name = 'DigestMismatchError';
  }
}

/** Bytes queued for the disk above which `write` waits (memory per fill stays bounded). */
const QUEUE_HIGH = 8 * 1024 * 1024;

/**
 * Where a blob is on its way into the cache: the one vocabulary of the
 * writer and of a fill (cache/fill.ts).
 *   writing   -> bytes arrive, are hashed and queued for the temp file
 *   verified  -> they hash to the digest (and size): they may be handed out in full
 *   durable   -> fsynced and closed: they may take the digest's name
 *   committed -> renamed into blobs/, indexed and linked
 *   failed    -> aborted; the temp file is gone
 */
export enum BlobState {
  Writing = 'writing',
  Verified = 'verified',
  Durable = 'durable',
  Committed = 'committed',
  Failed = 'failed',
}

/**
 * The index side of a commit: the journal entry before the rename, the row
 * (and the repository links) after it. The content index provides it.
 */
export interface PublishJournal {
  beginPublish(digest: string, accessedAt: number, links: readonly { registry: string; repository: string }[]): void;
  endPublish(digest: string, size: number, accessedAt: number, links: readonly { registry: string; repository: string }[]): void;
}

export interface WriterHooks {
  journal?: PublishJournal;
  /** Told once the writer is committed or failed (the store's in-progress set, eviction). */
  onSettled?: (w: BlobWriter) => void;
}

export interface CommitOptions {
  /** The size the blob must have, when it is known. */
  expectedSize?: number;
  /** When the request that brought the blob came (LRU); default now. */
  accessedAt?: number;
  /** Repositories the blob is linked to in the same transaction as its row. */
  links?: readonly { registry: string; repository: string }[];
}

/**
 * A blob being written. `write` hashes at once and queues the bytes; one
 * loop writes the queue in batches (writev), so the download is not held up
 * by a disk write per chunk. `bytesAccepted` counts bytes hashed,
 * `bytesOnDisk` those a reader of the temp file can see. `commit` takes it
 * the whole way: verify, fsync, journal, rename, index row and links.
 */
export class BlobWriter {
  readonly tempPath: string;
  state = BlobState.Writing;
  private hash: Hash = newHasher();
  private fh: fsp.FileHandle | null = null;
  private accepted = 0;
  private onDisk = 0;
  private queue: Buffer[] = [];
  private queued = 0;
  private flushing: Promise<void> | null = null;
  private failure: Error | null = null;
  /** Called after each batch reaches the file. */
  onFlushed: (() => void) | null = null;
  /**
   * Asked when the disk is full (ENOSPC): make room for `bytes` more; the
   * batch is tried once more when it says yes.
   */
  onNoSpace: ((bytes: number) => Promise<boolean>) | null = null;

  constructor(private readonly layout: Layout, readonly digest: string, private readonly hooks: WriterHooks = {}) {
    this.tempPath = layout.tempPath(digest, randomBytes(6).toString('hex'));
  }

  async open(): Promise<void> {
    await fsp.mkdir(path.dirname(this.tempPath), { recursive: true });
    this.fh = await fsp.open(this.tempPath, 'wx', 0o644);
  }

  get bytesAccepted(): number {
    return this.accepted;
  }

  get bytesOnDisk(): number {
    return this.onDisk;
  }

  /**
   * Hashes and queues `chunk`. Returns a promise only when the caller must
   * wait (the queue is above QUEUE_HIGH) or the writer failed: a fill calls
   * this once per socket read, and a promise per chunk is most of its cost.
   */
  write(chunk: Uint8Array): Promise<void> | undefined {
    if (!this.fh || this.state !== BlobState.Writing) return Promise.reject(new Error('blob writer is not open'));
    if (this.failure) return Promise.reject(this.failure);
    const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length);
    this.hash.update(buf);
    nudgeYoung(buf.length);
    this.accepted += buf.length;
    this.queue.push(buf);
    this.queued += buf.length;
    if (!this.flushing) {
      this.flushing = this.flushLoop().finally(() => {
        this.flushing = null;
      });
      // Failures are kept in `failure` and reported by the next write or drain.
      this.flushing.catch(() => undefined);
    }
    return this.queued > QUEUE_HIGH ? this.drain() : undefined;
  }

  /** Waits until everything accepted is in the file; throws what a write failed with. */
  async drain(): Promise<void> {
    while (this.flushing) await this.flushing;
    if (this.failure) throw this.failure;
  }

  private async flushLoop(): Promise<void> {
    while (this.queue.length > 0 && !this.failure) {
      const batch = this.queue.splice(0);
      const n = batch.reduce((a, b) => a + b.length, 0);
      try {
        await this.writeAll(batch, n);
      } catch (err) {
        // Any failure here, making room included, ends the blob: a batch that did not land
        // would leave a hole the hash does not know about.
        try {
          if ((err as NodeJS.ErrnoException).code !== 'ENOSPC' || !this.onNoSpace || !(await this.onNoSpace(n))) throw err;
          await this.writeAll(batch, n);
        } catch (final) {
          this.failure = final as Error;
          return;
        }
      }
      this.onDisk += n;
      this.queued -= n;
      this.onFlushed?.();
    }
  }

  /** Writes a batch at the end of what is on disk (positional, so a retry rewrites the same place). */
  private async writeAll(batch: Buffer[], n: number): Promise<void> {
    const fh = this.fh;
    if (!fh) throw new Error('blob writer is not open');
    let done = 0;
    let parts = batch;
    while (done < n) {
      const { bytesWritten } = await fh.writev(parts, this.onDisk + done);
      done += bytesWritten;
      if (done < n) {
        // A short write: continue with what is left.
        let skip = bytesWritten;
        const rest: Buffer[] = [];
        for (const b of parts) {
          if (skip >= b.length) {
            skip -= b.length;
            continue;
          }
          rest.push(skip > 0 ? b.subarray(skip) : b);
          skip = 0;
        }
        parts = rest;
      }
    }
  }

  /**
   * Writing -> verified: the bytes match the digest (and size), so they may
   * be handed out in full, even before they are durable. Aborts on mismatch.
   */
  async checkDigest(expectedSize?: number): Promise<void> {
    if (!this.fh || this.state !== BlobState.Writing) throw new Error('blob writer is not open');
    try {
      await this.drain();
    } catch (err) {
      await this.abort();
      throw err;
    }
    const actual = hasherDigest(this.hash);
    if (actual !== this.digest || (expectedSize !== undefined && expectedSize !== this.accepted)) {
      await this.abort();
      throw new DigestMismatchError(this.digest, actual, expectedSize, this.accepted);
    }
    this.state = BlobState.Verified;
  }

  /** Verified -> durable: fsync and close, what must happen before the bytes get the digest's name. */
  async makeDurable(): Promise<void> {
    if (!this.fh || this.state !== BlobState.Verified) throw new Error('blob writer has nothing verified to make durable');
    await this.fh.sync();
    await this.fh.close();
    this.fh = null;
    this.state = BlobState.Durable;
  }

  /**
   * Checks and stages without publishing: import stages a whole tar this
   * way and commits only when every entry has passed. Aborts on mismatch.
   */
  async verify(expectedSize?: number): Promise<void> {
    if (this.state === BlobState.Writing) await this.checkDigest(expectedSize);
    if (this.state === BlobState.Verified) await this.makeDurable();
  }

  /**
   * The whole way into the cache from wherever the writer is: verify, fsync,
   * journal entry, rename into blobs/, then index row, links and the end of
   * the journal entry in one transaction. A crash between rename and row is
   * completed at start-up from the journal. Returns the blob's path.
   */
  async commit(o: CommitOptions = {}): Promise<string> {
    await this.verify(o.expectedSize);
    if (this.state !== BlobState.Durable) throw new Error('blob writer has nothing verified to commit');
    const accessedAt = o.accessedAt ?? Date.now();
    this.hooks.journal?.beginPublish(this.digest, accessedAt, o.links ?? []);
    const final = this.layout.blobPath(this.digest);
    await fsp.mkdir(path.dirname(final), { recursive: true });
    await fsp.rename(this.tempPath, final);
    // Only now: a failed rename leaves the writer abortable, so its temp file goes.
    this.state = BlobState.Committed;
    try {
      this.hooks.journal?.endPublish(this.digest, this.accepted, accessedAt, o.links ?? []);
    } finally {
      this.hooks.onSettled?.(this);
    }
    return final;
  }

  async abort(): Promise<void> {
    if (this.state === BlobState.Committed || this.state === BlobState.Failed) return;
    this.state = BlobState.Failed;
    this.queue = [];
    await this.flushing?.catch(() => undefined);
    await this.fh?.close().catch(() => undefined);
    await fsp.rm(this.tempPath, { force: true }).catch(() => undefined);
    this.hooks.onSettled?.(this);
  }
}

export class BlobFiles {
  constructor(readonly layout: Layout) {}

  /**
   * Creates the directories and, for the daemon at start-up, removes what
   * interrupted writes left behind (returns how many). CLI commands running
   * beside the daemon must not clean: tmp/ then holds its fills in progress.
   */
  async init(opts: { cleanTmp: boolean } = { cleanTmp: true }): Promise<number> {
    await fsp.mkdir(this.layout.blobsDir, { recursive: true });
    await fsp.mkdir(this.layout.quarantineDir, { recursive: true });
    await fsp.mkdir(this.layout.tmpDir, { recursive: true });
    if (!opts.cleanTmp) return 0;
    const leftovers = await fsp.readdir(this.layout.tmpDir);
    await Promise.all(leftovers.map((f) => fsp.rm(path.join(this.layout.tmpDir, f), { force: true, recursive: true })));
    return leftovers.length;
  }

  async createWriter(digest: string, hooks: WriterHooks = {}): Promise<BlobWriter> {
    const w = new BlobWriter(this.layout, digest, hooks);
    await w.open();
    return w;
  }

  path(digest: string): string {
    return this.layout.blobPath(digest);
  }

  /** Size of the blob file, or null when it is not on disk. */
  sizeOnDisk(digest: string): number | null {
    try {
      return fs.statSync(this.layout.blobPath(digest)).size;
    } catch {
      return null;
    }
  }

  /** Opens the blob for reading; the fd stays valid even if the file is evicted meanwhile. */
  openSync(digest: string): number {
    return fs.openSync(this.layout.blobPath(digest), 'r');
  }

  async remove(digest: string): Promise<void> {
    await fsp.rm(this.layout.blobPath(digest), { force: true });
  }

  /** How many files tmp/ holds (fills under way, or leftovers of a crash). */
  async tmpCount(): Promise<number> {
    try {
      return (await fsp.readdir(this.layout.tmpDir)).length;
    } catch {
      return 0;
    }
  }

  /** Every blob file on disk: digest and mtime (gc compares them with the index). */
  async *walk(): AsyncGenerator<{ digest: string; mtimeMs: number; size: number }> {
    let shards: string[];
    try {
      shards = await fsp.readdir(this.layout.blobsDir);
    } catch {
      return;
    }
    for (const shard of shards.sort()) {
      if (!/^[a-f0-9]{2}$/.test(shard)) continue;
      const dir = path.join(this.layout.blobsDir, shard);
      for (const name of (await fsp.readdir(dir)).sort()) {
        if (!/^[a-f0-9]{64}$/.test(name) || !name.startsWith(shard)) continue;
        const st = await fsp.stat(path.join(dir, name)).catch(() => null);
        if (st?.isFile()) yield { digest: `sha256:${name}`, mtimeMs: st.mtimeMs, size: st.size };
      }
    }
  }

  async quarantine(digest: string): Promise<string> {
    const dest = this.layout.quarantinePath(digest, Date.now());
    await fsp.rename(this.layout.blobPath(digest), dest);
    return dest;
  }

  /** Re-hashes a stored blob. */
  async hash(digest: string): Promise<{ digest: string; size: number }> {
    const h = newHasher();
    let size = 0;
    for await (const chunk of fs.createReadStream(this.layout.blobPath(digest), { highWaterMark: 1 << 20 })) {
      h.update(chunk as Buffer);
      size += (chunk as Buffer).length;
    }
    return { digest: hasherDigest(h), size };
  }
}

let young: unknown;
/**
 * Allocates short-lived garbage on V8's young heap, half a byte per byte
 * written (a 64 KiB read -> a 32 KiB array), so that a scavenge comes every
 * few MiB and frees the socket reads that are done with. A fill allocates
 * almost nothing on the JS heap by itself, so without this the dead reads
 * (external memory) added up until a mark-compact ran, every ~10-30 MiB
 * under the unit's heap flags. docs/performance.md, "The fill's mark-compacts"
 * and "The fill's native sink".
 */
function nudgeYoung(bytes: number): void {
  young = new Array(Math.ceil(bytes / 16));
}
