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
import { finished } from 'node:stream';
import type { Logger } from 'pino';
import type { BlobAnswer } from '../upstream/types.js';
import { UpstreamError, isUnreachable } from '../upstream/types.js';
import { BlobState, type BlobWriter } from '../store/blobs.js';
import { BlobNotFoundError, NoRoomError } from './errors.js';
import { FillRanges, FillReader } from './fill-reader.js';

export { BlobNotFoundError, BlobState };

/** Where the bytes of a fill come from: the upstream, or a site peer. */
export interface BlobSource {
  readonly name: string;
  /** A site peer: one more place to ask, whose failures are not what a client is told. */
  readonly peer?: boolean;
  fetch(digest: string, offset: number, signal: AbortSignal): Promise<BlobAnswer | null>;
}

/** What a fill writes into: the content store (or, in tests, the blob files alone). */
export interface FillStore {
  createWriter(digest: string): Promise<BlobWriter>;
  /** Opens a committed blob (a reader that arrives after the rename). */
  openSync(digest: string): number;
}

export interface FillOptions {
  digest: string;
  /** Tried in order: a source that fails (or has nothing) hands over to the next at the bytes held. */
  sources?: readonly BlobSource[];
  /** One source (shorthand for `sources: [source]`). */
  source?: BlobSource;
  store: FillStore;
  logger: Logger;
  /** How many times an interrupted transfer is resumed with Range. */
  maxResumes: number;
  /** Repositories the committed blob is linked to. */
  links?: readonly { registry: string; repository: string }[];
  onBytes?: (n: number, from: BlobSource) => void;
  /**
   * Makes room on the cache disk for `bytes` more (evicting if it must);
   * false when it cannot. Asked before the size is announced to readers, so
   * a blob that cannot fit is a clean NoRoomError, not a truncated answer.
   */
  ensureRoom?: (bytes: number) => Promise<boolean>;
}

/**
 * A fill moves through the writer's states (store/blobs.ts BlobState):
 * writing -> verified (the bytes match: readers may finish) -> committed
 * (durable, named, indexed) | failed. It has no state of its own.
 */
export class Fill {
  readonly digest: string;
  size: number | undefined;
  /** Bytes received and hashed; ahead of `onDisk` while the write queue drains. */
  accepted = 0;
  /** Bytes in the temp file, where followers read what memory no longer holds. */
  onDisk = 0;
  /** The source being asked now. */
  from: BlobSource | undefined;
  /** The latest chunks received, with their offsets: followers take them from memory. */
  private recent: { at: number; buf: Buffer }[] = [];
  private recentBytes = 0;
  /** Readers that take bytes from memory (FillReader): the window is kept only while there are some. */
  private memoryReaders = 0;
  state = BlobState.Writing;
  /** When the fill began: the time of the request that caused it, for LRU. */
  readonly startedAt = Date.now();
  /** The bytes matched the digest: a later failure (fsync, rename) leaves them correct for readers. */
  bytesVerified = false;
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
    this.from = opts.sources?.[0] ?? opts.source;
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
    const at = this.accepted;
    this.accepted += chunk.length;
    // Nobody reads from memory (zero-copy followers read the file): let the chunk die young.
    if (this.memoryReaders === 0) return;
    this.recent.push({ at, buf: chunk });
    this.recentBytes += chunk.length;
    while (this.recent.length > 1 && this.recentBytes - this.recent[0]!.buf.length >= MEMORY_WINDOW) {
      this.recentBytes -= this.recent.shift()!.buf.length;
    }
  }

  /**
   * Counts a reader that takes bytes from memory until the returned function
   * is called: from then on the fill keeps its latest chunks for it (bytes
   * received before are read from the file).
   */
  useMemory(): () => void {
    this.memoryReaders++;
    let used = true;
    return () => {
      if (!used) return;
      used = false;
      if (--this.memoryReaders === 0) {
        this.recent = [];
        this.recentBytes = 0;
      }
    };
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
    const { digest, store, logger, maxResumes } = this.opts;
    try {
      this.writer = await store.createWriter(digest);
      const writer = this.writer;
      // Readers follow what is in the file, not what was received.
      writer.onFlushed = () => {
        this.onDisk = writer.bytesOnDisk;
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
      const sources = this.opts.sources ?? (this.opts.source ? [this.opts.source] : []);
      const aborted = () => this.abortController.signal.aborted;
      let at = 0;
      let resumes = 0;
      /** Why each source gave up; the primary source's reason is the one clients hear. */
      let primaryFailure: unknown;
      let lastFailure: unknown;
      /** Moves on to the next source after `source` failed (resuming at the bytes held); false when none is left. */
      const nextSource = (source: BlobSource, err: unknown): boolean => {
        if (!source.peer) primaryFailure = err;
        lastFailure = err;
        if (aborted() || at + 1 >= sources.length) return false;
        at++;
        logger.warn({ digest, from: source.name, next: sources[at]!.name, offset: writer.bytesAccepted, err: errText(err) }, 'blob source failed; trying the next');
        return true;
      };
      for (;;) {
        const source = sources[at];
        if (!source) throw new BlobNotFoundError(digest);
        this.from = source;
        const offset = writer.bytesAccepted;
        let answer: BlobAnswer | null;
        try {
          answer = await source.fetch(digest, offset, this.abortController.signal);
        } catch (err) {
          if (nextSource(source, err)) continue;
          if (offset > 0 && resumes < maxResumes && isTransient(err) && !aborted()) {
            resumes++;
            continue;
          }
          throw failure(primaryFailure ?? err, digest);
        }
        if (!answer) {
          const missing = new BlobNotFoundError(digest);
          if (nextSource(source, missing)) continue;
          throw failure(primaryFailure ?? lastFailure ?? missing, digest);
        }
        if (!this.readyHandled && answer.size !== undefined && this.opts.ensureRoom && !(await this.opts.ensureRoom(answer.size))) {
          answer.body.destroy();
          throw new NoRoomError(digest, answer.size);
        }
        try {
          if (!this.readyHandled) this.settleReady(answer.size);
          else if (answer.size !== undefined && this.size !== undefined && answer.size !== this.size) {
            throw new UpstreamError('UPSTREAM_PROTOCOL', source.name, `blob size changed between attempts (${this.size} then ${answer.size})`);
          }
          if (answer.status === 206 && answer.offset !== offset) {
            throw new UpstreamError('UPSTREAM_PROTOCOL', source.name, `asked for bytes from ${offset}, got from ${answer.offset}`);
          }
        } catch (err) {
          answer.body.destroy();
          if (nextSource(source, err)) continue;
          throw err;
        }
        try {
          // A 200 to a resume repeats bytes we already hold: skip them.
          await this.receive(answer, source, writer, answer.status === 200 ? offset : 0);
        } catch (err) {
          answer.body.destroy();
          if (!(err instanceof UpstreamError && err.code === 'UPSTREAM_PROTOCOL') && isWriteFailure(err)) throw err;
          if (nextSource(source, err)) continue;
          if (resumes < maxResumes && isTransient(err) && !aborted()) {
            resumes++;
            logger.warn({ digest, offset: writer.bytesAccepted, err: errText(err) }, 'upstream transfer interrupted; resuming with Range');
            continue;
          }
          throw err;
        }
        if (this.size !== undefined && writer.bytesAccepted < this.size) {
          const short = new UpstreamError('UPSTREAM_PROTOCOL', source.name, `blob ${digest} ended after ${writer.bytesAccepted} of ${this.size} bytes`);
          if (nextSource(source, short)) continue;
          if (resumes < maxResumes && !aborted()) {
            resumes++;
            logger.warn({ digest, offset: writer.bytesAccepted, size: this.size }, 'upstream body ended early; resuming with Range');
            continue;
          }
          throw short;
        }
        break;
      }
      const size = writer.bytesAccepted;
      await writer.checkDigest(this.size);
      this.size = size;
      this.onDisk = size;
      this.accepted = size;
      // Readers get their last byte now: correctness needed the digest, not the fsync.
      this.state = BlobState.Verified;
      this.bytesVerified = true;
      this.events.emit('progress');
      await writer.commit({ accessedAt: this.startedAt, links: this.opts.links ?? [] });
      this.state = BlobState.Committed;
      this.events.emit('progress');
    } catch (err) {
      const error = err instanceof Error ? err : new Error(String(err));
      this.error = error;
      // The temp file goes before anyone hears of the failure: no client sees an error while it lingers.
      await this.writer?.abort();
      this.state = BlobState.Failed;
      if (!this.readyHandled) {
        this.readyHandled = true;
        this.rejectReady(error);
      }
      this.events.emit('progress');
      throw error;
    }
  }

  /**
   * Takes the body chunk by chunk as the socket delivers it: hash and queue
   * (writer), then the memory window and the followers. The body flows
   * ('data') rather than being read with `for await`: the async iterator's
   * read() joins whatever chunks piled up (one more copy, one more buffer to
   * collect) and costs a promise per chunk. A full write queue pauses it.
   */
  private receive(answer: BlobAnswer, source: BlobSource, writer: BlobWriter, skip: number): Promise<void> {
    const body = answer.body;
    return new Promise<void>((resolve, reject) => {
      let settled = false;
      let stopWatching = (): void => undefined;
      /** A chunk the writer took while its queue was full, not yet in the window. */
      let pending: Promise<void> | undefined;
      const settle = (err?: unknown): void => {
        if (settled) return;
        settled = true;
        body.off('data', onData);
        stopWatching();
        const finish = (): void => (err === undefined || err === null ? resolve() : reject(err));
        // That chunk goes into the window first: a resume's bytes must not be remembered ahead of it.
        if (pending) pending.then(finish, finish);
        else finish();
      };
      const accept = (chunk: Buffer): void => {
        this.remember(chunk);
        this.opts.onBytes?.(chunk.length, source);
        this.events.emit('progress');
      };
      const take = (raw: Buffer): void => {
        let chunk = raw;
        if (skip > 0) {
          if (chunk.length <= skip) {
            skip -= chunk.length;
            return;
          }
          chunk = chunk.subarray(skip);
          skip = 0;
        }
        if (this.size !== undefined && writer.bytesAccepted + chunk.length > this.size) {
          throw new UpstreamError('UPSTREAM_PROTOCOL', source.name, `blob ${this.digest} is longer than its announced ${this.size} bytes`);
        }
        const full = writer.write(chunk);
        if (!full) {
          accept(chunk);
          return;
        }
        body.pause();
        pending = full.then(() => {
          pending = undefined;
          // The writer holds the chunk, so the window must, even when the body failed meanwhile.
          accept(chunk);
          if (!settled) body.resume();
        });
        pending.catch(settle);
      };
      const onData = (raw: Buffer): void => {
        if (settled) return;
        try {
          take(raw);
        } catch (err) {
          settle(err);
        }
      };
      // end, error, or a close without end (ERR_STREAM_PREMATURE_CLOSE), also when it already happened.
      stopWatching = finished(body, { writable: false }, (err) => settle(err));
      body.on('data', onData);
    });
  }

  /**
   * A reader of bytes [start, end] (inclusive). The fill's size must be known
   * (await `ready` first) unless the caller reads to the end.
   */
  reader(start: number, end: number): FillReader {
    return new FillReader(this, this.opts.store, start, end);
  }

  /** Bytes [start, end] as ranges of the file as they reach it, for a zero-copy send (same rules as reader()). */
  ranges(start: number, end: number): FillRanges {
    return new FillRanges(this, this.opts.store, start, end);
  }
}

/** The error a fill ends with: the primary source's, as a client should hear it. */
function failure(err: unknown, digest: string): unknown {
  return err ?? new BlobNotFoundError(digest);
}

/** A failure of our own disk, not of the source: moving on to another source would not help. */
function isWriteFailure(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === 'ENOSPC' || code === 'EDQUOT' || code === 'EIO' || code === 'EROFS';
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

/** Received bytes a fill keeps in memory for its followers. */
const MEMORY_WINDOW = 4 * 1024 * 1024;
