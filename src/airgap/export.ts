/**
 * `berth export`: writes cached (or fetched) images as an OCI image-layout
 * tar, streaming blob by blob from the cache so memory stays flat whatever
 * the image size.
 */
import fs from 'node:fs';
import { pipeline } from 'node:stream/promises';
import type { Writable } from 'node:stream';
import tar from 'tar-stream';
import { formatImageReference } from '../oci/paths.js';
import { MEDIA_TYPES } from '../oci/mediatypes.js';
import { digestHex } from '../oci/digest.js';
import type { Platform } from '../oci/platform.js';
import type { Mirror } from '../cache/mirror.js';
import type { ContentStore } from '../cache/content-store.js';
import { resolveImage, type ImageContents } from '../cache/prefetch.js';
import { INDEX_FILE, OCI_LAYOUT_CONTENT, OCI_LAYOUT_FILE, REF_NAME } from './layout.js';

export interface ExportResult {
  images: { name: string; digest: string }[];
  manifests: number;
  blobs: number;
  bytes: number;
}

function addBuffer(pack: tar.Pack, name: string, data: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    pack.entry({ name, size: data.length, mode: 0o644, mtime: new Date(0) }, data, (err) => (err ? reject(err) : resolve()));
  });
}

export interface ExportOptions {
  platforms: Platform[];
  allPlatforms: boolean;
  /** Told what will be written before the first byte (pre-flight: may throw to refuse). */
  beforeWrite?: (resolved: ImageContents[]) => Promise<void> | void;
  /** Told after each blob is written (progress). */
  onBlob?: () => void;
}

export async function exportImages(from: { mirror: Mirror; store: ContentStore }, images: string[], out: Writable, o: ExportOptions): Promise<ExportResult> {
  const { mirror, store } = from;
  // Resolve everything first: a missing image fails before a byte is written.
  const resolved = [];
  for (const image of images) {
    const contents = await resolveImage(mirror, image, o);
    const target = { ns: contents.ref.registry, name: contents.ref.repository };
    for (const b of contents.blobs) await mirror.ensureBlob(target, b.digest);
    resolved.push(contents);
  }
  await o.beforeWrite?.(resolved);
  const pack = tar.pack();
  const done = pipeline(pack, out);
  const written = new Set<string>();
  const result: ExportResult = { images: [], manifests: 0, blobs: 0, bytes: 0 };
  await addBuffer(pack, OCI_LAYOUT_FILE, Buffer.from(OCI_LAYOUT_CONTENT));
  const entries: object[] = [];
  for (const c of resolved) {
    for (const m of c.manifests) {
      if (written.has(m.digest)) continue;
      const body = mirror.cachedManifest(m.digest)?.body;
      if (!body) throw new Error(`manifest ${m.digest} of ${formatImageReference(c.ref)} left the cache during export`);
      await addBuffer(pack, `blobs/sha256/${digestHex(m.digest)}`, body);
      written.add(m.digest);
      result.manifests++;
      result.bytes += body.length;
    }
    for (const b of c.blobs) {
      if (written.has(b.digest)) continue;
      const file = store.path(b.digest);
      const size = fs.statSync(file).size;
      const entry = pack.entry({ name: `blobs/sha256/${digestHex(b.digest)}`, size, mode: 0o644, mtime: new Date(0) });
      await pipeline(fs.createReadStream(file, { highWaterMark: 1 << 20 }), entry);
      written.add(b.digest);
      result.blobs++;
      result.bytes += size;
      o.onBlob?.();
    }
    // Named by tag when the user gave one, else by digest: the full reference either way.
    const { registry, repository, tag } = c.ref;
    const name = tag ? formatImageReference({ registry, repository, tag }) : formatImageReference({ registry, repository, digest: c.digest });
    entries.push({ mediaType: c.mediaType, digest: c.digest, size: c.manifests[0]!.size, annotations: { [REF_NAME]: name } });
    result.images.push({ name, digest: c.digest });
  }
  const index = { schemaVersion: 2, mediaType: MEDIA_TYPES.ociIndex, manifests: entries };
  await addBuffer(pack, INDEX_FILE, Buffer.from(JSON.stringify(index)));
  pack.finalize();
  await done;
  return result;
}
