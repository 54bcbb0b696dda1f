/**
 * When the cache cannot hold a blob (even with everything evictable gone), the
 * client still gets it: streamed from the upstream, uncached, one upstream
 * transfer per client. The same rule as for fills holds: the bytes are
 * hashed on the way through and the last piece is released only when the
 * whole blob matched its digest, so a bad transfer is a truncated answer,
 * never a complete wrong one.
 */
import { Readable } from 'node:stream';
import { hasherDigest, newHasher } from '../oci/digest.js';
import type { BlobAnswer } from '../upstream/types.js';
import { emitLimit } from './hold-back.js';

export { NoRoomError } from './errors.js';

async function* verifiedSlice(body: Readable, digest: string, size: number, start: number, end: number): AsyncGenerator<Buffer> {
  const hash = newHasher();
  let pos = 0;
  /** The next offset to emit. */
  let next = start;
  /** The chunk holding the held-back last byte, and where it starts. */
  let tail: { at: number; buf: Buffer } | null = null;
  for await (const raw of body) {
    const chunk = raw as Buffer;
    const at = pos;
    hash.update(chunk);
    pos += chunk.length;
    if (pos > size) throw new Error(`blob ${digest} is longer than its announced ${size} bytes`);
    if (end >= at && end < pos) tail = { at, buf: chunk };
    const limit = emitLimit(pos, end, false);
    if (limit >= next) {
      yield chunk.subarray(next - at, limit + 1 - at);
      next = limit + 1;
    }
  }
  if (pos !== size || hasherDigest(hash) !== digest) throw new Error(`blob ${digest} from the upstream does not match its digest`);
  if (tail && next <= end) yield tail.buf.subarray(next - tail.at, end + 1 - tail.at);
}

/** A reader for bytes [start, end] of a whole-blob upstream answer, verified as described above. */
export function passThrough(answer: BlobAnswer, digest: string, size: number, start: number, end: number): Readable {
  return Readable.from(verifiedSlice(answer.body, digest, size, start, end), { objectMode: false });
}
