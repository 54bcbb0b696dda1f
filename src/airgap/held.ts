/**
 * Blobs an import finds already in the cache (an earlier import that was
 * interrupted, or content the site pulled): their archive entry is still
 * hashed against its name, but nothing is written, and publishing them is a
 * no-op. They stand in for a BlobWriter in the import's staged set, so an
 * import run again after an interruption writes only what it lacks.
 */
import type { ContentStore } from '../cache/content-store.js';
import { hasherDigest, newHasher } from '../oci/digest.js';

export class HeldBlob {
  /** The cached file itself (a manifest stored as a blob is read from here). */
  readonly tempPath: string;
  readonly held = true;

  constructor(readonly digest: string, path: string) {
    this.tempPath = path;
  }

  /** Hashes the entry's bytes: whether they are the digest's (a read error propagates). */
  async absorb(entry: AsyncIterable<unknown>, size: number | undefined): Promise<boolean> {
    const hash = newHasher();
    let n = 0;
    for await (const chunk of entry) {
      hash.update(chunk as Buffer);
      n += (chunk as Buffer).length;
    }
    return hasherDigest(hash) === this.digest && (size === undefined || n === size);
  }

  async verify(): Promise<void> {}

  async commit(): Promise<string> {
    return this.tempPath;
  }

  async abort(): Promise<void> {}
}

/** The cached blob of that digest and size, when its file is really there; undefined otherwise. */
export function heldBlob(store: ContentStore, digest: string, size: number | undefined): HeldBlob | undefined {
  const have = store.present(digest);
  if (have === undefined || (size !== undefined && have !== size)) return undefined;
  return new HeldBlob(digest, store.path(digest));
}
