/**
 * Pre-flight: before import or export writes a byte, is there room?
 *
 * Import adds the blobs (and manifests) of the archive that the cache does
 * not already hold. It stages them all in tmp/ before publishing any, so
 * the cache's filesystem must have all of them free at once (plus a reserve
 * for the index); and the cache must stay under max_size once eviction has
 * taken what it may (never pinned content, never a blob being read or
 * written, never what this archive itself brings or re-pins).
 *
 * Export writes the tar (or its volumes) whose size is known from the
 * resolved images before the first byte; the destination's filesystem must
 * have it free.
 */
import fsp from 'node:fs/promises';
import type { ContentStore } from '../cache/content-store.js';
import { formatSize } from '../config/units.js';
import { classifyEntry } from './layout.js';
import type { ScannedEntry } from './scan.js';

/** What the disk keeps free beyond the content: SQLite's WAL and the index need room to write (as ContentStore.ensureRoom). */
export const DISK_RESERVE = 4 * 1024 * 1024;

export class PreflightError extends Error {
  readonly code = 'PREFLIGHT';
}

export interface ImportNeeds {
  /** Bytes the import will add: blob entries whose digest the cache does not hold. */
  addBytes: number;
  addBlobs: number;
  /** Blob entries the cache already holds (not written again). */
  heldBlobs: number;
  /** Every digest the archive carries (its content will be pinned: not counted as evictable). */
  digests: Set<string>;
}

/** From the scan: which of the archive's blobs are new to this cache. */
export function importNeeds(store: ContentStore, entries: ScannedEntry[]): ImportNeeds {
  const needs: ImportNeeds = { addBytes: 0, addBlobs: 0, heldBlobs: 0, digests: new Set() };
  for (const e of entries) {
    const c = classifyEntry(e.name);
    if (c.kind !== 'blob' || needs.digests.has(c.digest)) continue;
    needs.digests.add(c.digest);
    if (store.stat(c.digest)?.size === e.size) needs.heldBlobs++;
    else {
      needs.addBlobs++;
      needs.addBytes += e.size;
    }
  }
  return needs;
}

/** Bytes eviction may free now: unpinned, not busy, not in `keep`. */
export function evictableBytes(store: ContentStore, keep: ReadonlySet<string>): number {
  let bytes = 0;
  for (const c of store.index.eachEvictionCandidate(500)) {
    if (keep.has(c.digest) || (c.kind === 'blob' && store.isBusy(c.digest))) continue;
    bytes += c.size;
  }
  return bytes;
}

/** Free bytes on the filesystem holding `dir` for an unprivileged writer, or null when it cannot be told. */
export async function freeBytes(dir: string): Promise<number | null> {
  try {
    const st = await fsp.statfs(dir);
    return st.bavail * st.bsize;
  } catch {
    return null;
  }
}

/** Throws a PreflightError with the numbers when the cache has no room for the import. */
export async function checkImportRoom(store: ContentStore, cache: { dir: string; maxBytes: number }, needs: ImportNeeds): Promise<void> {
  if (needs.addBytes === 0) return;
  const free = await freeBytes(store.files.layout.tmpDir);
  if (free !== null && needs.addBytes + DISK_RESERVE > free) {
    throw new PreflightError(
      `not enough disk space: the import needs ${formatSize(needs.addBytes)} (${needs.addBlobs} blobs the cache lacks) plus ${formatSize(DISK_RESERVE)} for the index, ` +
        `${formatSize(free)} free on ${cache.dir}: free space on that filesystem or move cache.dir to a larger one; nothing was written`,
    );
  }
  const total = store.totalBytes();
  if (total + needs.addBytes <= cache.maxBytes) return;
  const evictable = evictableBytes(store, needs.digests);
  const after = total + needs.addBytes - evictable;
  if (after > cache.maxBytes) {
    throw new PreflightError(
      `not enough room under cache.max_size: the import needs ${formatSize(needs.addBytes)} (${needs.addBlobs} blobs the cache lacks); the cache holds ${formatSize(total)} of max_size ${formatSize(cache.maxBytes)} ` +
        `and eviction may free ${formatSize(evictable)} (the rest is pinned or in use): raise cache.max_size to at least ${formatSize(after)}, ` +
        `or release images with \`berth unpin\`; nothing was written`,
    );
  }
}

/** Throws a PreflightError when `dir`'s filesystem cannot take `bytes` more. */
export async function checkExportRoom(dir: string, bytes: number): Promise<void> {
  const free = await freeBytes(dir);
  if (free !== null && bytes > free) {
    throw new PreflightError(`not enough space for the export: it needs ${formatSize(bytes)}, ${formatSize(free)} free on ${dir}: free space there or write to a larger disk (-o); nothing was written`);
  }
}
