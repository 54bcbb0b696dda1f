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

/** A blob being written. `write` appends and hashes; `commit` verifies and publishes. */
export class BlobWriter {
  readonly tempPath: string;
  private hash: Hash = newHasher();
  private fh: fsp.FileHandle | null = null;
  private written = 0;
  private closed = false;
  private verified = false;
  private digestChecked = false;

  constructor(private readonly layout: Layout, readonly digest: string) {
    this.tempPath = layout.tempPath(digest, randomBytes(6).toString('hex'));
  }

  async open(): Promise<void> {
    await fsp.mkdir(path.dirname(this.tempPath), { recursive: true });
    this.fh = await fsp.open(this.tempPath, 'wx', 0o644);
  }

  get bytesWritten(): number {
    return this.written;
  }

  async write(chunk: Uint8Array): Promise<void> {
    if (!this.fh || this.closed || this.verified) throw new Error('blob writer is not open');
    let off = 0;
    while (off < chunk.length) {
      const { bytesWritten } = await this.fh.write(chunk, off, chunk.length - off, this.written + off);
      off += bytesWritten;
    }
    this.hash.update(chunk);
    this.written += chunk.length;
  }

  /** Verifies digest (and size when known), fsyncs and renames into place. Aborts on mismatch. */
  async commit(expectedSize?: number): Promise<string> {
    await this.verify(expectedSize);
    return this.publish();
  }

  /**
   * Checks the bytes against the digest (and size) and makes them durable,
   * without publishing: import stages a whole tar this way and publishes
   * only when every entry has passed. Aborts on mismatch.
   */
  async verify(expectedSize?: number): Promise<void> {
    await this.checkDigest(expectedSize);
    await this.makeDurable();
  }

  /**
   * The bytes match the digest (and size): from here on they may be handed
   * out in full, even before they are durable. Aborts on mismatch.
   */
  async checkDigest(expectedSize?: number): Promise<void> {
    if (!this.fh || this.closed) throw new Error('blob writer is not open');
    const actual = hasherDigest(this.hash);
    if (actual !== this.digest || (expectedSize !== undefined && expectedSize !== this.written)) {
      await this.abort();
      throw new DigestMismatchError(this.digest, actual, expectedSize, this.written);
    }
    this.digestChecked = true;
  }

  /** fsync and close: what must happen before the bytes get the digest's name. */
  async makeDurable(): Promise<void> {
    if (!this.fh || this.closed || !this.digestChecked) throw new Error('blob writer has nothing checked to make durable');
    await this.fh.sync();
    await this.fh.close();
    this.fh = null;
    this.verified = true;
  }

  /** Renames verified bytes into place under the digest's name. */
  async publish(): Promise<string> {
    if (!this.verified || this.closed) throw new Error('blob writer has nothing verified to publish');
    this.closed = true;
    const final = this.layout.blobPath(this.digest);
    await fsp.mkdir(path.dirname(final), { recursive: true });
    await fsp.rename(this.tempPath, final);
    return final;
  }

  async abort(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.fh?.close().catch(() => undefined);
    await fsp.rm(this.tempPath, { force: true }).catch(() => undefined);
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

  async createWriter(digest: string): Promise<BlobWriter> {
    const w = new BlobWriter(this.layout, digest);
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
