/**
 * Whether the cache can take a write now, for /readyz: a small file created, written, fsync'd and
 * removed in tmp/, where every fill starts. The check was access(tmp, W_OK), which says yes to root
 * for anything but a read-only mount: a tmp/ that is a regular file, a full disk or a failing one
 * all passed. This asks the filesystem to do what a fill does.
 *
 * A success is remembered for `okMs` so that /readyz stays cheap however often it is asked; a
 * failure is not, so a node that was fixed is ready at the next ask. Asks while a probe is under way
 * share it.
 */
import { randomBytes } from 'node:crypto';
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';

/** What a probe writes: a few bytes are enough for a full disk to show at fsync. */
const PAYLOAD = Buffer.from('berth write probe\n');

const WHY: Record<string, string> = {
  ENOENT: 'tmp/ is missing',
  ENOTDIR: 'tmp/ is not a directory',
  ENOSPC: 'no space left on the device',
  EDQUOT: 'over the disk quota',
  EROFS: 'read-only filesystem',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  EIO: 'I/O error',
  EMFILE: 'no file descriptor left',
  ENFILE: 'no file descriptor left in the system',
};

export interface WriteProbeOptions {
  /** How long a success holds (default 5 s). */
  okMs?: number;
  /** Told when the answer changes: a warning with the error when the cache stops taking writes. */
  logger?: Logger;
  /** For tests. */
  now?: () => number;
}

/** null when a file could be written in `dir`, else the reason ("cache directory not writable: …"). */
export function writeProbe(dir: string, o: WriteProbeOptions = {}): () => Promise<string | null> {
  const okMs = o.okMs ?? 5000;
  const now = o.now ?? (() => performance.now());
  let okAt = -Infinity;
  let last: string | null = null;
  let running: Promise<string | null> | null = null;
  return () => {
    if (now() - okAt < okMs) return Promise.resolve(null);
    running ??= probeOnce(dir)
      .then(({ problem, error }) => {
        if (problem === null) okAt = now();
        if (problem !== last) {
          if (problem !== null) o.logger?.warn({ dir, err: error }, problem);
          else o.logger?.info({ dir }, 'cache directory writable again');
        }
        last = problem;
        return problem;
      })
      .finally(() => {
        running = null;
      });
    return running;
  };
}

async function probeOnce(dir: string): Promise<{ problem: string | null; error?: NodeJS.ErrnoException }> {
  const file = path.join(dir, `.write-probe-${process.pid}-${randomBytes(6).toString('hex')}`);
  let created = false;
  try {
    // 'wx': a name nothing else uses, never through an existing file or link.
    const fh = await fsp.open(file, 'wx', 0o600);
    created = true;
    try {
      await fh.write(PAYLOAD);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fsp.unlink(file);
    created = false;
    return { problem: null };
  } catch (e) {
    const error = e as NodeJS.ErrnoException;
    if (created) await fsp.unlink(file).catch(() => undefined);
    const code = error.code ?? 'unknown error';
    return { problem: `cache directory not writable: ${WHY[code] ?? 'cannot write a file in tmp/'} (${code})`, error };
  }
}
