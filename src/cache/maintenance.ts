/**
 * `berth gc` and `berth verify`: batch scans of the whole cache, in pages,
 * safe to run beside a live daemon.
 */
import type { Logger } from 'pino';
import { sha256 } from '../oci/digest.js';
import type { EvictionResult } from './evict.js';
import type { ContentStore } from './content-store.js';

/** A fill in a running daemon renames its file a moment before it indexes it: leave young files alone. */
const ORPHAN_MIN_AGE_MS = 60_000;

export interface GcResult {
  eviction: EvictionResult | null;
  orphanFilesRemoved: number;
  orphanBytesRemoved: number;
  missingRowsDropped: number;
}

export async function collectGarbage(store: ContentStore, now = Date.now()): Promise<GcResult> {
  const { index, files } = store;
  const result: GcResult = { eviction: null, orphanFilesRemoved: 0, orphanBytesRemoved: 0, missingRowsDropped: 0 };
  for await (const f of files.walk()) {
    if (index.getBlob(f.digest) || now - f.mtimeMs < ORPHAN_MIN_AGE_MS) continue;
    await store.remove(f.digest);
    result.orphanFilesRemoved++;
    result.orphanBytesRemoved += f.size;
  }
  let after = '';
  for (;;) {
    const page = index.blobPage(after, 500);
    if (page.length === 0) break;
    for (const row of page) {
      if (files.sizeOnDisk(row.digest) === null) {
        await store.remove(row.digest);
        result.missingRowsDropped++;
      }
    }
    after = page[page.length - 1]!.digest;
  }
  result.eviction = await store.evictNow();
  return result;
}

export interface VerifyResult {
  blobsChecked: number;
  bytesChecked: number;
  manifestsChecked: number;
  /** Blobs whose bytes did not hash to their digest: moved to quarantine/ and dropped from the index. */
  corrupt: { digest: string; quarantinedAt: string }[];
  /** Indexed blobs with no file (or the wrong size): dropped from the index. */
  missing: string[];
  corruptManifests: string[];
  /** Files under blobs/ the index did not know that hash to their name: indexed again (a crash between rename and insert). */
  adopted: string[];
  /** Files under blobs/ the index did not know that do not hash to their name: quarantined. */
  strays: string[];
  /** Files in tmp/: fills under way, or leftovers the daemon's next start removes. */
  tmpFiles: number;
}

export async function verifyCache(store: ContentStore, logger: Logger, onProgress?: (done: number, total: number) => void): Promise<VerifyResult> {
  const { index, files } = store;
  const result: VerifyResult = { blobsChecked: 0, bytesChecked: 0, manifestsChecked: 0, corrupt: [], missing: [], corruptManifests: [], adopted: [], strays: [], tmpFiles: 0 };
  const total = index.stats().blobs;
  let after = '';
  for (;;) {
    const page = index.blobPage(after, 200);
    if (page.length === 0) break;
    for (const row of page) {
      after = row.digest;
      const onDisk = files.sizeOnDisk(row.digest);
      if (onDisk === null) {
        await store.remove(row.digest);
        result.missing.push(row.digest);
        continue;
      }
      const h = await files.hash(row.digest);
      result.blobsChecked++;
      result.bytesChecked += h.size;
      if (h.digest !== row.digest || h.size !== row.size) {
        const dest = await store.quarantine(row.digest);
        result.corrupt.push({ digest: row.digest, quarantinedAt: dest });
        logger.error({ digest: row.digest, actual: h.digest, size: h.size, expectedSize: row.size, quarantine: dest }, 'cached blob does not match its digest; quarantined');
      }
      onProgress?.(result.blobsChecked + result.missing.length + result.corrupt.length, total);
    }
  }
  // The disk side: files the index does not know (older than a minute: a running daemon's newest fills).
  for await (const f of files.walk()) {
    if (index.getBlob(f.digest) || Date.now() - f.mtimeMs < ORPHAN_MIN_AGE_MS) continue;
    const h = await files.hash(f.digest);
    if (h.digest === f.digest) {
      store.adopt(f.digest, h.size);
      result.adopted.push(f.digest);
    } else {
      await files.quarantine(f.digest);
      result.strays.push(f.digest);
      logger.error({ digest: f.digest, actual: h.digest }, 'an unindexed blob file does not match its name; quarantined');
    }
  }
  result.tmpFiles = await files.tmpCount();
  const bad: string[] = [];
  for (const m of index.allManifests()) {
    result.manifestsChecked++;
    if (sha256(m.body) !== m.digest) bad.push(m.digest);
  }
  for (const d of bad) {
    index.deleteManifest(d);
    result.corruptManifests.push(d);
    logger.error({ digest: d }, 'cached manifest does not match its digest; dropped');
  }
  return result;
}
