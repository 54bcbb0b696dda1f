/**
 * Digests are the only identity of content in berth. Only sha256 is accepted:
 * it is what every registry berth talks to produces, and it keeps the on-disk
 * layout to one algorithm.
 */
import { createHash, type Hash } from 'node:crypto';

const SHA256_RE = /^sha256:[a-f0-9]{64}$/;

export function isDigest(value: string): boolean {
  return SHA256_RE.test(value);
}

/** Any `algorithm:encoded` shape (so a malformed digest gets a clear "unsupported or malformed" answer). */
export function looksLikeDigest(value: string): boolean {
  return /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/.test(value);
}

/** The hex part of a sha256 digest. Throws on anything that is not one. */
export function digestHex(digest: string): string {
  if (!isDigest(digest)) throw new TypeError(`not a sha256 digest: ${JSON.stringify(digest).slice(0, 80)}`);
  return digest.slice('sha256:'.length);
}

export function sha256(data: Uint8Array | string): string {
  return 'sha256:' + createHash('sha256').update(data).digest('hex');
}

export function newHasher(): Hash {
  return createHash('sha256');
}

export function hasherDigest(hash: Hash): string {
  return 'sha256:' + hash.digest('hex');
}
