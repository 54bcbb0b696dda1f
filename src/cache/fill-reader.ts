/**
 * A client of a fill: follows the bytes as they arrive (from the fill's
 * memory window while it holds them, else from the temp file, and from the
 * blob file once the fill committed), under the hold-back rule (hold-back.ts).
 */
import fs from 'node:fs';
import { Readable } from 'node:stream';
import { BlobState } from '../store/blobs.js';
import type { Fill, FillStore } from './fill.js';
import { emitLimit } from './hold-back.js';

const CHUNK = 256 * 1024;

export class FillReader extends Readable {
  private fd: number | null = null;
  private pos: number;
  private reading = false;
  private unsubscribe: (() => void) | null = null;

  constructor(private readonly fill: Fill, private readonly store: Pick<FillStore, 'openSync'>, start: number, private readonly end: number) {
    super({ highWaterMark: CHUNK });
    this.pos = start;
  }

  private openFd(): number {
    if (this.fd !== null) return this.fd;
    // The temp file becomes the blob file on commit; the fd survives the rename.
    const temp = this.fill.tempPath;
    try {
      if (this.fill.state === BlobState.Committed || !temp) throw Object.assign(new Error('committed'), { code: 'ENOENT' });
      this.fd = fs.openSync(temp, 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      this.fd = this.store.openSync(this.fill.digest);
    }
    return this.fd;
  }

  override _read(): void {
    this.pump();
  }

  private pump(): void {
    if (this.reading || this.destroyed) return;
    const fill = this.fill;
    if (fill.state === BlobState.Failed && !fill.bytesVerified) {
      this.destroy(fill.error ?? new Error('fill failed'));
      return;
    }
    const verified = fill.state !== BlobState.Writing;
    // Received bytes may go out, the range's last one only once verified.
    const limit = emitLimit(verified ? fill.onDisk : fill.accepted, this.end, verified);
    if (this.pos > limit) {
      if (verified && this.pos > this.end) {
        this.push(null);
        return;
      }
      if (verified) {
        // Verified but shorter than asked: cannot happen for a size-checked fill.
        this.destroy(new Error('blob shorter than the requested range'));
        return;
      }
      this.waitForProgress();
      return;
    }
    const want = Math.min(CHUNK, limit - this.pos + 1);
    const mem = verified ? undefined : fill.fromMemory(this.pos, want);
    if (mem) {
      this.pos += mem.length;
      if (this.push(mem)) this.pump();
      return;
    }
    if (this.pos >= fill.onDisk) {
      // Received, no longer in memory, not yet on disk: the write queue is behind.
      this.waitForProgress();
      return;
    }
    let fd: number;
    try {
      fd = this.openFd();
    } catch (err) {
      this.destroy(err as Error);
      return;
    }
    const len = Math.min(want, fill.onDisk - this.pos);
    const buf = Buffer.allocUnsafe(len);
    this.reading = true;
    fs.read(fd, buf, 0, len, this.pos, (err, n) => {
      this.reading = false;
      if (err) {
        this.destroy(err);
        return;
      }
      if (this.destroyed) return;
      this.pos += n;
      if (n === 0) {
        this.destroy(new Error('unexpected end of fill file'));
        return;
      }
      if (this.push(n === len ? buf : buf.subarray(0, n))) this.pump();
    });
  }

  private waitForProgress(): void {
    if (this.unsubscribe) return;
    this.unsubscribe = this.fill.onProgress(() => {
      this.unsubscribe?.();
      this.unsubscribe = null;
      this.pump();
    });
  }

  override _destroy(err: Error | null, cb: (error?: Error | null) => void): void {
    this.unsubscribe?.();
    this.unsubscribe = null;
    if (this.fd !== null) {
      const fd = this.fd;
      this.fd = null;
      fs.close(fd, () => cb(err));
    } else cb(err);
  }
}
