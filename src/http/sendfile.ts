/**
 * The zero-copy path for blob bodies: sendfile(2) from the blob's file to the
 * client's TCP socket, through the optional `berth-sendfile` addon
 * (native/sendfile). The kernel moves the bytes; no chunk enters JavaScript.
 * A cached blob is one send; a blob being filled is followed from the fill's
 * file, one send per run of bytes that reached it (`follow`). Without the
 * addon (not built, not Linux), with `[server] sendfile = false` and on TLS
 * listeners, blobs take the copying path: file reads (or, for a fill, its
 * memory window) into Node buffers written to the socket.
 */
import { createRequire } from 'node:module';
import type { ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Logger } from 'pino';

interface Addon {
  start(socketFd: number, fileFd: number, offset: number, length: number, timeoutMs: number, done: (errno: number, sent: number) => void): unknown;
  cancel(handle: unknown): void;
}

/** How long a client may take no byte at all before the send gives up (the socket is closed). */
export const SEND_IDLE_TIMEOUT_MS = 120_000;

let addon: Addon | null | undefined;
let loadError = '';

function load(): Addon | null {
  if (addon === undefined) {
    try {
      addon = createRequire(import.meta.url)('berth-sendfile') as Addon;
    } catch (err) {
      addon = null;
      loadError = (err instanceof Error ? err.message : String(err)).split('\n')[0]!;
    }
  }
  return addon;
}

/** Sends a byte range of an open file on a response's socket with sendfile(2). */
export interface ZeroCopy {
  /**
   * Whether this response can take the zero-copy path: a plain TCP socket
   * (not TLS), this response the one on it now, nothing queued to write.
   */
  usable(res: ServerResponse): boolean;
  /**
   * Writes the headers already set with writeHead, then `length` bytes of
   * `fd` from `offset`. Resolves with the errno (0: every byte was sent); the
   * caller ends or destroys the response and closes `fd` after it resolves.
   */
  send(res: ServerResponse, fd: number, offset: number, length: number): Promise<number>;
  /**
   * Writes the headers already set with writeHead, then each range `next`
   * gives, in turn, until it gives null (a body still being filled: each run
   * of bytes as it reaches the file). Resolves with the errno (0: every range
   * was sent and `next` ended); -1 when `next` rejected or the client left.
   * `next`'s signal aborts when the client goes away while it waits.
   */
  follow(res: ServerResponse, next: (signal: AbortSignal) => Promise<{ fd: number; offset: number; length: number } | null>): Promise<number>;
}

const EMPTY = Buffer.alloc(0);

/**
 * The zero-copy sender, or null for the copying path. Logs once, at info,
 * which path warm blobs take and why.
 */
export function zeroCopy(enabled: boolean, logger: Logger, opts: { idleTimeoutMs?: number } = {}): ZeroCopy | null {
  const idleTimeoutMs = opts.idleTimeoutMs ?? SEND_IDLE_TIMEOUT_MS;
  if (!enabled) {
    logger.info({ blobPath: 'copy' }, 'cached blobs are copied to the socket ([server] sendfile = false)');
    return null;
  }
  const a = load();
  if (!a) {
    logger.info({ blobPath: 'copy', reason: loadError }, 'cached blobs are copied to the socket: the sendfile addon (berth-sendfile) is not available');
    return null;
  }
  logger.info({ blobPath: 'sendfile' }, 'blobs go to plain-HTTP clients with sendfile(2), cached or being filled; TLS is copied');
  return {
    usable(res) {
      const socket = res.socket as (Socket & { encrypted?: boolean; _handle?: { fd?: number } | null; _httpMessage?: unknown }) | null;
      if (!socket || socket.encrypted || socket.destroyed) return false;
      const fd = socket._handle?.fd;
      return typeof fd === 'number' && fd >= 0 && socket._httpMessage === res && socket.writableLength === 0;
    },
    send(res, fd, offset, length) {
      return afterHeaders(res, async (sock) => {
        const onClose = () => transfer.cancel();
        const transfer = sendOnce(a, sock(), fd, offset, length, idleTimeoutMs);
        res.once('close', onClose);
        const errno = await transfer.done;
        res.off('close', onClose);
        return errno;
      });
    },
    follow(res, next) {
      return afterHeaders(res, async (sock) => {
        const gone = new AbortController();
        let transfer: Transfer | null = null;
        // The client went away or the daemon is stopping: stop the wait or the kernel copy now.
        const onClose = () => {
          gone.abort(new Error('the client went away'));
          transfer?.cancel();
        };
        res.once('close', onClose);
        try {
          for (;;) {
            let range: { fd: number; offset: number; length: number } | null;
            try {
              range = await next(gone.signal);
            } catch {
              return -1;
            }
            if (!range) return 0;
            // Read again right before each send: a socket closed meanwhile has no fd (its number may be another file's now).
            const fd = res.destroyed ? -1 : sock();
            if (fd < 0) return -1;
            transfer = sendOnce(a, fd, range.fd, range.offset, range.length, idleTimeoutMs);
            const errno = await transfer.done;
            transfer = null;
            if (errno !== 0) return errno;
          }
        } finally {
          res.off('close', onClose);
        }
      });
    },
  };
}

/**
 * Flushes the headers set with writeHead, then runs `body` once they are all
 * in the kernel, with a getter of the socket's fd (-1 once the socket is
 * closed; the addon dups it at start, in the same tick). Resolves with
 * body's errno, or -1 when the socket is gone before that.
 */
function afterHeaders(res: ServerResponse, body: (sock: () => number) => Promise<number>): Promise<number> {
  return new Promise((resolve) => {
    res.flushHeaders();
    const socket = res.socket as Socket & { _handle?: { fd?: number } | null };
    // An empty write's callback runs once everything before it (the headers) is in the kernel.
    socket.write(EMPTY, (err) => {
      const sock = socket._handle?.fd;
      if (err || res.destroyed || typeof sock !== 'number' || sock < 0) {
        resolve(-1);
        return;
      }
      const current = () => {
        const fd = socket.destroyed ? undefined : socket._handle?.fd;
        return typeof fd === 'number' ? fd : -1;
      };
      body(current).then(resolve, () => resolve(-1));
    });
  });
}

interface Transfer {
  /** The errno when the send ended (0: all sent; -1: it could not start). */
  done: Promise<number>;
  cancel(): void;
}

/** One sendfile(2) transfer on the addon's own thread. */
function sendOnce(a: Addon, sock: number, fd: number, offset: number, length: number, idleTimeoutMs: number): Transfer {
  let finished = false;
  let handle: unknown;
  let settle!: (errno: number) => void;
  const done = new Promise<number>((resolve) => (settle = resolve));
  try {
    handle = a.start(sock, fd, offset, length, idleTimeoutMs, (errno) => {
      finished = true;
      settle(errno);
    });
  } catch {
    finished = true;
    settle(-1);
  }
  return {
    done,
    cancel() {
      if (!finished) a.cancel(handle);
    },
  };
}
