/**
 * The zero-copy path for cached blobs: sendfile(2) from the blob's file to the
 * client's TCP socket, through the optional `berth-sendfile` addon
 * (native/sendfile). The kernel moves the bytes; no chunk enters JavaScript.
 * Without the addon (not built, not Linux), with `[server] sendfile = false`,
 * on TLS listeners and for bodies still being filled, blobs take the copying
 * path: file reads into Node buffers written to the socket.
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
  logger.info({ blobPath: 'sendfile' }, 'cached blobs go to plain-HTTP clients with sendfile(2); TLS and fills are copied');
  return {
    usable(res) {
      const socket = res.socket as (Socket & { encrypted?: boolean; _handle?: { fd?: number } | null; _httpMessage?: unknown }) | null;
      if (!socket || socket.encrypted || socket.destroyed) return false;
      const fd = socket._handle?.fd;
      return typeof fd === 'number' && fd >= 0 && socket._httpMessage === res && socket.writableLength === 0;
    },
    send(res, fd, offset, length) {
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
          let done = false;
          let handle: unknown;
          try {
            handle = a.start(sock, fd, offset, length, idleTimeoutMs, (errno) => {
              done = true;
              res.off('close', onClose);
              resolve(errno);
            });
          } catch {
            resolve(-1);
            return;
          }
          // The client went away or the daemon is stopping: stop the kernel copy now.
          const onClose = () => {
            if (!done) a.cancel(handle);
          };
          res.once('close', onClose);
        });
      });
    },
  };
}
