/**
 * The clients of a fill, under the hold-back rule (hold-back.ts):
 * - FillReader, a stream that follows the bytes as they arrive (from the
 *   fill's memory window while it holds them, else from the temp file, and
 *   from the blob file once the fill committed), for the copying path;
 * - FillRanges, which hands out ranges of the file as they reach it, for a
 *   zero-copy send (sendfile(2)): no byte of a follower enters JavaScript.
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

  private readonly unuseMemory: () => void;

  constructor(private readonly fill: Fill, private readonly store: Pick<FillStore, 'openSync'>, start: number, private readonly end: number) {
    super({ highWaterMark: CHUNK });
    this.pos = start;
    this.unuseMemory = fill.useMemory();
  }

  private openFd(): number {
    this.fd ??= openFillFile(this.fill, this.store);
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
    this.unuseMemory();
    this.unsubscribe?.();
    this.unsubscribe = null;
    if (this.fd !== null) {
      const fd = this.fd;
      this.fd = null;
      fs.close(fd, () => cb(err));
    } else cb(err);
  }
}

/**
 * Opens the file a follower reads: the temp file while the fill writes (it
 * becomes the blob file on commit, and the fd survives the rename), else the
 * committed blob.
 */
function openFillFile(fill: Fill, store: Pick<FillStore, 'openSync'>): number {
  const temp = fill.tempPath;
  try {
    if (fill.state === BlobState.Committed || !temp) throw Object.assign(new Error('committed'), { code: 'ENOENT' });
    return fs.openSync(temp, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    return store.openSync(fill.digest);
  }
}

/** Bytes of a file to send as they are: `length` bytes of `fd` from `offset`. */
export interface FileRange {
  fd: number;
  offset: number;
  length: number;
}

/**
 * A follower that waits for this much more on disk before its next send (or
 * for all it may have before the held-back byte): one send per MiB keeps the
 * sends few. Its first send takes whatever is there, however little.
 */
export const FOLLOW_BATCH = 1024 * 1024;

/**
 * Follows a fill for a zero-copy send of bytes [start, end]: each next() is
 * the run of bytes that reached the file since the last one and may go out
 * (the range's last byte only once the digest matched). Bytes are sent from
 * the file, never from the fill's memory window.
 */
export class FillRanges {
  private fd: number | null = null;
  private pos: number;
  private closed = false;

  constructor(private readonly fill: Fill, private readonly store: Pick<FillStore, 'openSync'>, private readonly start: number, private readonly end: number) {
    this.pos = start;
  }

  /**
   * The next range to send, which the caller sends whole before asking
   * again; null once every byte of [start, end] was given out. Rejects when
   * the fill failed before its bytes were verified (the client must see a
   * truncated body), or when `signal` aborts (the client left).
   */
  async next(signal: AbortSignal): Promise<FileRange | null> {
    for (;;) {
      if (signal.aborted) throw signal.reason instanceof Error ? signal.reason : new Error('aborted');
      if (this.closed) throw new Error('follower closed');
      if (this.pos > this.end) return null;
      const fill = this.fill;
      if (fill.state === BlobState.Failed && !fill.bytesVerified) throw fill.error ?? new Error('fill failed');
      const verified = fill.state !== BlobState.Writing;
      const limit = emitLimit(fill.onDisk, this.end, verified);
      const ready = limit - this.pos + 1;
      // The first bytes go out at once (time to first byte); later ones in runs of FOLLOW_BATCH.
      if (ready > 0 && (verified || this.pos === this.start || ready >= FOLLOW_BATCH || limit >= this.end - 1)) {
        this.fd ??= openFillFile(fill, this.store);
        const range = { fd: this.fd, offset: this.pos, length: ready };
        this.pos += ready;
        return range;
      }
      // Verified but shorter than asked: cannot happen for a size-checked fill.
      if (verified) throw new Error('blob shorter than the requested range');
      await this.progress(signal);
    }
  }

  /** Closes the file (once); the follower gives nothing after this. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.fd !== null) {
      fs.close(this.fd, () => undefined);
      this.fd = null;
    }
  }

  private progress(signal: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      const stop = () => {
        off();
        reject(signal.reason instanceof Error ? signal.reason : new Error('aborted'));
      };
      const off = this.fill.onProgress(() => {
        off();
        signal.removeEventListener('abort', stop);
        resolve();
      });
      signal.addEventListener('abort', stop, { once: true });
    });
  }
}
