/**
 * The cache directory, drawn once. Everything berth writes lives below it.
 *
 *   <cache.dir>/
 *     index.db, index.db-wal, index.db-shm   SQLite index (WAL): blobs, manifests (verbatim
 *                                           bytes + media type), tags, repository links, pins
 *     blobs/sha256/<hex[0:2]>/<hex>          verified blobs, file name = digest; written once
 *     tmp/<hex>.<random>.part                fills in progress; renamed into blobs/ only after
 *                                           the bytes hash to the digest; emptied at start-up
 *     quarantine/<hex>.<time>                blobs that `berth verify` found corrupt
 *
 * Manifests are small and live in the index itself, so a manifest and its
 * index row are written in one transaction and can never disagree.
 * Paths are only ever built from a validated sha256 hex digest, never from a
 * name or a tag a client sent.
 */
import path from 'node:path';
import { digestHex } from '../oci/digest.js';

export class Layout {
  readonly root: string;
  readonly indexFile: string;
  readonly blobsDir: string;
  readonly tmpDir: string;
  readonly quarantineDir: string;

  constructor(root: string) {
    this.root = path.resolve(root);
    this.indexFile = path.join(this.root, 'index.db');
    this.blobsDir = path.join(this.root, 'blobs', 'sha256');
    this.tmpDir = path.join(this.root, 'tmp');
    this.quarantineDir = path.join(this.root, 'quarantine');
  }

  blobPath(digest: string): string {
    const hex = digestHex(digest);
    return path.join(this.blobsDir, hex.slice(0, 2), hex);
  }

  tempPath(digest: string, nonce: string): string {
    return path.join(this.tmpDir, `${digestHex(digest)}.${nonce}.part`);
  }

  quarantinePath(digest: string, at: number): string {
    return path.join(this.quarantineDir, `${digestHex(digest)}.${at}`);
  }
}
