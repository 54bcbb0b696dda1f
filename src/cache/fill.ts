/**
 * A fill brings one blob from a source into the cache, once, however many
 * clients asked for it. The fill writes to a temp file while hashing; every
 * client is a FillReader that follows that file as it grows, so each waiter
 * streams the bytes as they arrive and none waits for the whole blob.
 *
 * The fill belongs to no client: a client that goes away only destroys its
 * own reader. A reader never emits the last byte of what it was asked for
 * until the fill has verified the digest, so a corrupted transfer reaches a
 * client as a truncated body, never as a complete wrong one.
 */
import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import { Readable } from 'node:stream';
import type { Logger } from 'pino';
import type { BlobAnswer } from '../upstream/types.js';
import { UpstreamError, isUnreachable } from '../upstream/types.js';
import type { BlobFiles, BlobWriter } from '../store/blobs.js';
import { NoRoomError } from './passthrough.js';

/** Where the bytes of a fill come from: the upstream today, a site peer later. */
export interface BlobSource {
  readonly name: string;
  fetch(digest: string, offset: number, signal: AbortSignal): Promise<BlobAnswer | null>;
}

export class BlobNotFoundError extends Error {
  readonly code = 'BLOB_NOT_FOUND';
  constructor(readonly digest: string) {
    super(`no upstream has ${digest}`);
  }
}

export interface FillOptions {
  digest: string;
  source: BlobSource;
  files: BlobFiles;
  logger: Logger;
  /** How many times an interrupted transfer is resumed with Range. */
  maxResumes: number;
  /** Called once the blob is verified and durable, just before it is renamed into place. */
  onPublishing?: (digest: string) => void;
  /** Called once the blob is verified and on disk, before readers see 'done'. */
  onCommitted: (digest: string, size: number) => void;
  onBytes?: (n: number) => void;
  /**
   * Makes room on the cache disk for `bytes` more (evicting if it must);
   * false when it cannot. Asked before the size is announced to readers, so
   * a blob that cannot fit is a clean NoRoomError, not a truncated answer.
   */
  ensureRoom?: (bytes: number) => Promise<boolean>;
}

/** running -> verified (the bytes match: readers may finish) -> done (durable, named, indexed) | failed */
type State = 'running' | 'verified' | 'done' | 'failed';

export class Fill {
  readonly digest: string;
  size: number | undefined;
  written = 0;
  /** Bytes received and hashed; ahead of `written` while the write queue drains. */
  accepted = 0;
  /** The latest chunks received, with their offsets: followers take them from memory. */
  private recent: { at: number; buf: Buffer }[] = [];
  private recentBytes = 0;
  state: State = 'running';
  /** When the fill began: the time of the request that caused it, for LRU. */
  readonly startedAt = Date.now();
  /** The bytes matched the digest: a later failure (fsync, rename) leaves them correct for readers. */
  verifiedBytes = false;
  error: Error | undefined;
  /** Resolves with the size (undefined when the source did not say) once the source answered. */
  readonly ready: Promise<number | undefined>;
  /** Resolves when the blob is verified and indexed. */
  readonly done: Promise<void>;
  private readonly events = new EventEmitter();
  private readonly abortController = new AbortController();
  private writer: BlobWriter | null = null;
  private resolveReady!: (size: number | undefined) => void;
  private rejectReady!: (err: Error) => void;
  private readyHandled = false;

  constructor(private readonly opts: FillOptions) {
    this.digest = opts.digest;
    this.events.setMaxListeners(0);
    this.ready = new Promise((res, rej) => {
      this.resolveReady = res;
      this.rejectReady = rej;
    });
    // Nobody may be waiting on these (a HEAD that gave up): never an unhandled rejection.
    this.ready.catch(() => undefined);
    this.done = this.run();
    this.done.catch(() => undefined);
  }

  get tempPath(): string | undefined {
    return this.writer?.tempPath;
  }

  /** Stops the transfer (shutdown). Readers see the fill fail. */
  abort(reason = 'berth is shutting down'): void {
    this.abortController.abort(new Error(reason));
  }

  /**
   * Keeps a received chunk for followers (the same bytes the hash saw, so
   * as safe as the file; the last byte is still held back by the reader),
   * so that they need not wait for the write and read it back.
   */
  private remember(chunk: Buffer): void {
    this.recent.push({ at: this.accepted, buf: chunk });
    this.accepted += chunk.length;
    this.recentBytes += chunk.length;
    while (this.recent.length > 1 && this.recentBytes - this.recent[0]!.buf.length >= MEMORY_WINDOW) {
      this.recentBytes -= this.recent.shift()!.buf.length;
    }
  }

  /** Up to `max` received bytes from `pos`, when they are still held in memory. */
  fromMemory(pos: number, max: number): Buffer | undefined {
    for (let i = this.recent.length - 1; i >= 0; i--) {
      const c = this.recent[i]!;
      if (pos < c.at) continue;
      if (pos >= c.at + c.buf.length) return undefined;
      const off = pos - c.at;
      return c.buf.subarray(off, Math.min(c.buf.length, off + max));
    }
    return undefined;
  }

  onProgress(fn: () => void): () => void {
    this.events.on('progress', fn);
    return () => this.events.off('progress', fn);
  }

  private settleReady(size: number | undefined): void {
    if (this.readyHandled) return;
    this.readyHandled = true;
    this.size = size;
    this.resolveReady(size);
  }

  private async run(): Promise<void> {
    const { digest, source, files, logger, maxResumes } = this.opts;
    try {
      this.writer = await files.createWriter(digest);
      const writer = this.writer;
      // Readers follow what is in the file, not what was received.
      writer.onFlushed = () => {
        this.written = writer.bytesOnDisk;
        this.events.emit('progress');
      };
      const ensureRoom = this.opts.ensureRoom;
      if (ensureRoom) {
        writer.onNoSpace = (bytes) => {
          const remaining = Math.max(bytes, (this.size ?? 0) - writer.bytesOnDisk);
          logger.warn({ digest, code: 'ENOSPC', remaining }, 'cache disk full during a fill: evicting to make room');
          return ensureRoom(remaining);
        };
      }
      let resumes = 0;
      for (;;) {
        const offset = this.writer.bytesWritten;
        let answer: BlobAnswer | null;
        try {
          answer = await source.fetch(digest, offset, this.abortController.signal);
        } catch (err) {
          if (offset > 0 && resumes < maxResumes && isTransient(err) && !this.abortController.signal.aborted) {
            resumes++;
            continue;
          }
          throw err;
        }
        if (!answer) throw new BlobNotFoundError(digest);
        if (!this.readyHandled && answer.size !== undefined && this.opts.ensureRoom && !(await this.opts.ensureRoom(answer.size))) {
          answer.body.destroy();
          throw new NoRoomError(digest, answer.size);
        }
        if (!this.readyHandled) this.settleReady(answer.size);
        else if (answer.size !== undefined && this.size !== undefined && answer.size !== this.size) {
          answer.body.destroy();
          throw new UpstreamError('UPSTREAM_PROTOCOL', source.name, `blob size changed between attempts (${this.size} then ${answer.size})`);
        }
        if (answer.status === 206 && answer.offset !== offset) {
          answer.body.destroy();
          throw new UpstreamError('UPSTREAM_PROTOCOL', source.name, `asked for bytes from ${offset}, got from ${answer.offset}`);
        }
        // A 200 to a resume repeats bytes we already hold: skip them.
        let skip = answer.status === 200 ? offset : 0;
        try {
          for await (const raw of answer.body) {
            let chunk = raw as Buffer;
            if (skip > 0) {
              if (chunk.length <= skip) {
                skip -= chunk.length;
                continue;
              }
              chunk = chunk.subarray(skip);
              skip = 0;
            }
            if (this.size !== undefined && this.writer.bytesWritten + chunk.length > this.size) {
              throw new UpstreamError('UPSTREAM_PROTOCOL', source.name, `blob ${digest} is longer than its announced ${this.size} bytes`);
            }
            await writer.write(chunk);
            this.remember(chunk);
            this.opts.onBytes?.(chunk.length);
            this.events.emit('progress');
          }
        } catch (err) {
          answer.body.destroy();
          if (resumes < maxResumes && isTransient(err) && !this.abortController.signal.aborted) {
            resumes++;
            logger.warn({ digest, offset: this.writer.bytesWritten, err: errText(err) }, 'upstream transfer interrupted; resuming with Range');
            continue;
          }
          throw err;
        }
        if (this.size !== undefined && this.writer.bytesWritten < this.size) {
          if (resumes < maxResumes && !this.abortController.signal.aborted) {
            resumes++;
            logger.warn({ digest, offset: this.writer.bytesWritten, size: this.size }, 'upstream body ended early; resuming with Range');
            continue;
          }
          throw new UpstreamError('UPSTREAM_PROTOCOL', source.name, `blob ${digest} ended after ${this.writer.bytesWritten} of ${this.size} bytes`);
        }
        break;
      }
      const size = this.writer.bytesWritten;
      await this.writer.checkDigest(this.size);
      this.size = size;
      this.written = size;
      this.accepted = size;
      // Readers get their last byte now: correctness needed the digest, not the fsync.
      this.state = 'verified';
      this.verifiedBytes = true;
      this.events.emit('progress');
      await this.writer.makeDurable();
      this.opts.onPublishing?.(digest);
      await this.writer.publish();
      this.opts.onCommitted(digest, size);
      this.state = 'done';
      this.events.emit('progress');
    } catch (err) {
      const error = err instanceof Error ? err : new Error(String(err));
      this.error = error;
      // The temp file goes before anyone hears of the failure: no client sees an error while it lingers.
      await this.writer?.abort();
      this.state = 'failed';
      if (!this.readyHandled) {
        this.readyHandled = true;
        this.rejectReady(error);
      }
      this.events.emit('progress');
      throw error;
    }
  }

  /**
   * A reader of bytes [start, end] (inclusive). The fill's size must be known
   * (await `ready` first) unless the caller reads to the end.
   */
  reader(start: number, end: number): FillReader {
    return new FillReader(this, this.opts.files, start, end);
  }
}

function isTransient(err: unknown): boolean {
  if (err instanceof NoRoomError) return false;
  if (err instanceof UpstreamError) return isUnreachable(err) || err.code === 'UPSTREAM_STATUS';
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && (code.startsWith('UND_ERR') || ['ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'ECONNREFUSED'].includes(code));
}

export function errText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

const CHUNK = 256 * 1024;
/** Received bytes a fill keeps in memory for its followers. */
const MEMORY_WINDOW = 4 * 1024 * 1024;

/** Follows a fill's temp file; see the module comment for the hold-back rule. */
export class FillReader extends Readable {
  private fd: number | null = null;
  private pos: number;
  private reading = false;
  private unsubscribe: (() => void) | null = null;

  constructor(private readonly fill: Fill, private readonly files: BlobFiles, start: number, private readonly end: number) {
    super({ highWaterMark: CHUNK });
    this.pos = start;
  }

  private openFd(): number {
    if (this.fd !== null) return this.fd;
    // The temp file becomes the blob file on commit; the fd survives the rename.
    const temp = this.fill.tempPath;
    try {
      if (this.fill.state === 'done' || !temp) throw Object.assign(new Error('committed'), { code: 'ENOENT' });
      this.fd = fs.openSync(temp, 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      this.fd = this.files.openSync(this.fill.digest);
    }
    return this.fd;
  }

  override _read(): void {
    this.pump();
  }

  private pump(): void {
    if (this.reading || this.destroyed) return;
    const fill = this.fill;
    if (fill.state === 'failed' && !fill.verifiedBytes) {
      this.destroy(fill.error ?? new Error('fill failed'));
      return;
    }
    const done = fill.state !== 'running';
    // Bytes we may emit: up to what was received, but the last requested byte only once verified.
    const have = done ? fill.written : fill.accepted;
    const available = Math.min(have - 1, this.end);
    const limit = done ? Math.min(this.end, have - 1) : Math.min(available, this.end - 1);
    if (this.pos > limit) {
      if (done && this.pos > this.end) {
        this.push(null);
        return;
      }
      if (done) {
        // Verified but shorter than asked: cannot happen for a size-checked fill.
        this.destroy(new Error('blob shorter than the requested range'));
        return;
      }
      this.waitForProgress();
      return;
    }
    const want = Math.min(CHUNK, limit - this.pos + 1);
    const mem = done ? undefined : fill.fromMemory(this.pos, want);
    if (mem) {
      this.pos += mem.length;
      if (this.push(mem)) this.pump();
      return;
    }
    if (this.pos >= fill.written) {
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
    const len = Math.min(want, fill.written - this.pos);
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
