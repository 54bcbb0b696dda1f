/**
 * When the cache disk cannot hold a blob (not even after eviction), the
 * client still gets it: streamed from the upstream, uncached, one upstream
 * transfer per client. The same rule as for fills holds: the bytes are
 * hashed on the way through and the last piece is released only when the
 * whole blob matched its digest, so a bad transfer is a truncated answer,
 * never a complete wrong one.
 */
import { Readable } from 'node:stream';
import { hasherDigest, newHasher } from '../oci/digest.js';
import type { BlobAnswer } from '../upstream/types.js';

export class NoRoomError extends Error {
  readonly code = 'ENOSPC';
  constructor(readonly digest: string, readonly size: number) {
    super(`no room in the cache for ${digest} (${size} bytes), even after eviction`);
  }
}

async function* verifiedSlice(body: Readable, digest: string, size: number, start: number, end: number): AsyncGenerator<Buffer> {
  const hash = newHasher();
  let pos = 0;
  let held: Buffer | null = null;
  for await (const raw of body) {
    const chunk = raw as Buffer;
    hash.update(chunk);
    const from = Math.max(start, pos);
    const to = Math.min(end + 1, pos + chunk.length);
    pos += chunk.length;
    if (pos > size) throw new Error(`blob ${digest} is longer than its announced ${size} bytes`);
    if (to > from) {
      if (held) yield held;
      held = chunk.subarray(from - (pos - chunk.length), to - (pos - chunk.length));
    }
  }
  if (pos !== size || hasherDigest(hash) !== digest) throw new Error(`blob ${digest} from the upstream does not match its digest`);
  if (held) yield held;
}

/** A reader for bytes [start, end] of a whole-blob upstream answer, verified as described above. */
export function passThrough(answer: BlobAnswer, digest: string, size: number, start: number, end: number): Readable {
  return Readable.from(verifiedSlice(answer.body, digest, size, start, end), { objectMode: false });
}
