/**
 * `berth export`: writes cached (or fetched) images as an OCI image-layout
 * tar, streaming blob by blob from the cache so memory stays flat whatever
 * the image size.
 *
 * Everything is planned before the first byte: the images resolved, what
 * the other side already holds left out (`--have`: its inventory), every
 * entry's name, size and digest listed in the archive manifest that opens
 * the tar (archive.ts), signed when a key is given. Blobs are hashed again
 * as they stream, so a blob the disk corrupted fails the export instead of
 * travelling.
 */
import fs from 'node:fs';
import { pipeline } from 'node:stream/promises';
import { Transform, type Writable } from 'node:stream';
import type { KeyObject } from 'node:crypto';
import tar from 'tar-stream';
import { formatImageReference } from '../oci/paths.js';
import { MEDIA_TYPES } from '../oci/mediatypes.js';
import { digestHex, hasherDigest, newHasher, sha256 } from '../oci/digest.js';
import type { Platform } from '../oci/platform.js';
import type { Mirror } from '../cache/mirror.js';
import type { ContentStore } from '../cache/content-store.js';
import { resolveImage, type ImageContents } from '../cache/prefetch.js';
import { ARCHIVE_MANIFEST_FILE, ARCHIVE_SIGNATURE_FILE, INDEX_FILE, OCI_LAYOUT_CONTENT, OCI_LAYOUT_FILE, REF_NAME } from './layout.js';
import { ARCHIVE_MEDIA_TYPE, ARCHIVE_VERSION, keyFingerprint, serializeArchiveManifest, signArchiveManifest, type ArchiveEntry, type ArchiveManifest, type OmittedDigest } from './archive.js';
import { readInventoryFile } from './inventory.js';
import { tarBytes, type ExportPlan } from './export-plan.js';

export interface ExportResult {
  images: { name: string; digest: string }[];
  manifests: number;
  blobs: number;
  bytes: number;
  /** What --have left out because the other side holds it. */
  omitted: { manifests: number; blobs: number; bytes: number };
  /** The inventory the export was made against (sha256 of its file), or null. */
  inventory: string | null;
  /** The signing key's fingerprint, or null. */
  signedBy: string | null;
}

export interface ExportOptions {
  platforms: Platform[];
  allPlatforms: boolean;
  /** An inventory file (`berth inventory` of the importing berth): leave out what it holds. */
  have?: string;
  /** Sign the archive manifest with this ed25519 private key. */
  signingKey?: KeyObject;
  /** "berth 0.1.0", recorded in the archive manifest. */
  creator: string;
  now?: Date;
  /** Told the tar's exact size before the first byte (pre-flight: may throw to refuse; progress). */
  beforeWrite?: (plan: ExportPlan) => Promise<void> | void;
  /** Told after each blob is written (progress). */
  onBlob?: () => void;
}

function addBuffer(pack: tar.Pack, name: string, data: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    pack.entry({ name, size: data.length, mode: 0o644, mtime: new Date(0) }, data, (err) => (err ? reject(err) : resolve()));
  });
}

type Planned = { name: string; size: number; digest: string } & ({ kind: 'buffer'; data: Buffer } | { kind: 'file'; file: string });

export async function exportImages(from: { mirror: Mirror; store: ContentStore }, images: string[], out: Writable, o: ExportOptions): Promise<ExportResult> {
  const { mirror, store } = from;
  // Resolve everything first: a missing image fails before a byte is written.
  const resolved: ImageContents[] = [];
  for (const image of images) resolved.push(await resolveImage(mirror, image, o));

  // What the other side holds, among what this export needs: the inventory is streamed
  // and only these digests are kept, so a 100k-blob inventory costs no memory here.
  const needed = new Set<string>();
  for (const c of resolved) {
    for (const m of c.manifests) needed.add(m.digest);
    for (const b of c.blobs) needed.add(b.digest);
  }
  const heldBlobs = new Set<string>();
  const heldManifests = new Set<string>();
  let inventory: string | null = null;
  if (o.have !== undefined) {
    const read = await readInventoryFile(o.have, (l) => {
      if (!('digest' in l) || !needed.has(l.digest)) return;
      if (l.type === 'blob') heldBlobs.add(l.digest);
      else if (l.type === 'manifest') heldManifests.add(l.digest);
    });
    inventory = read.digest;
  }

  for (const c of resolved) {
    const target = { ns: c.ref.registry, name: c.ref.repository };
    for (const b of c.blobs) if (!heldBlobs.has(b.digest)) await mirror.ensureBlob(target, b.digest);
  }

  const result: ExportResult = { images: [], manifests: 0, blobs: 0, bytes: 0, omitted: { manifests: 0, blobs: 0, bytes: 0 }, inventory, signedBy: null };
  const planned: Planned[] = [];
  const omitted: OmittedDigest[] = [];
  const seen = new Set<string>();
  const layout = Buffer.from(OCI_LAYOUT_CONTENT);
  planned.push({ kind: 'buffer', name: OCI_LAYOUT_FILE, size: layout.length, digest: sha256(layout), data: layout });
  const indexEntries: object[] = [];
  /** What the other side holds is listed as left out, not written. */
  const leaveOut = (d: { digest: string; size: number }, kind: OmittedDigest['kind'], held: Set<string>): boolean => {
    if (!held.has(d.digest)) return false;
    omitted.push({ digest: d.digest, kind, size: d.size });
    result.omitted[kind === 'blob' ? 'blobs' : 'manifests']++;
    result.omitted.bytes += d.size;
    return true;
  };
  for (const c of resolved) {
    for (const m of c.manifests) {
      if (seen.has(m.digest)) continue;
      seen.add(m.digest);
      if (leaveOut(m, 'manifest', heldManifests)) continue;
      const body = mirror.cachedManifest(m.digest)?.body;
      if (!body) throw new Error(`manifest ${m.digest} of ${formatImageReference(c.ref)} left the cache during export`);
      planned.push({ kind: 'buffer', name: `blobs/sha256/${digestHex(m.digest)}`, size: body.length, digest: m.digest, data: body });
      result.manifests++;
      result.bytes += body.length;
    }
    for (const b of c.blobs) {
      if (seen.has(b.digest)) continue;
      seen.add(b.digest);
      if (leaveOut(b, 'blob', heldBlobs)) continue;
      const file = store.path(b.digest);
      let size: number;
      try {
        size = fs.statSync(file).size;
      } catch {
        throw new Error(`blob ${b.digest} of ${formatImageReference(c.ref)} left the cache during export`);
      }
      planned.push({ kind: 'file', name: `blobs/sha256/${digestHex(b.digest)}`, size, digest: b.digest, file });
      result.blobs++;
      result.bytes += size;
    }
    // Named by tag when the user gave one, else by digest: the full reference either way.
    const { registry, repository, tag } = c.ref;
    const name = tag ? formatImageReference({ registry, repository, tag }) : formatImageReference({ registry, repository, digest: c.digest });
    indexEntries.push({ mediaType: c.mediaType, digest: c.digest, size: c.manifests[0]!.size, annotations: { [REF_NAME]: name } });
    result.images.push({ name, digest: c.digest });
  }
  const index = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MEDIA_TYPES.ociIndex, manifests: indexEntries }));
  planned.push({ kind: 'buffer', name: INDEX_FILE, size: index.length, digest: sha256(index), data: index });

  const manifest: ArchiveManifest = {
    mediaType: ARCHIVE_MEDIA_TYPE,
    version: ARCHIVE_VERSION,
    created: (o.now ?? new Date()).toISOString(),
    creator: o.creator,
    inventory,
    entries: planned.map((p): ArchiveEntry => ({ name: p.name, size: p.size, digest: p.digest })),
    omitted,
  };
  const manifestBytes = serializeArchiveManifest(manifest);
  const signature = o.signingKey ? signArchiveManifest(manifestBytes, o.signingKey) : null;
  const sizes = [manifestBytes.length, ...(signature ? [signature.length] : []), ...planned.map((p) => p.size)];
  await o.beforeWrite?.({ bytes: tarBytes(sizes), blobs: planned.filter((p) => p.kind === 'file').length, manifests: result.manifests });

  const pack = tar.pack();
  const done = pipeline(pack, out);
  done.catch(() => undefined);
  try {
    await addBuffer(pack, ARCHIVE_MANIFEST_FILE, manifestBytes);
    if (o.signingKey && signature) {
      await addBuffer(pack, ARCHIVE_SIGNATURE_FILE, signature);
      result.signedBy = keyFingerprint(o.signingKey);
    }
    for (const p of planned) {
      if (p.kind === 'buffer') {
        await addBuffer(pack, p.name, p.data);
        continue;
      }
      const entry = pack.entry({ name: p.name, size: p.size, mode: 0o644, mtime: new Date(0) });
      const hash = newHasher();
      const hashing = new Transform({
        transform(chunk: Buffer, _enc, cb) {
          hash.update(chunk);
          cb(null, chunk);
        },
      });
      await pipeline(fs.createReadStream(p.file, { highWaterMark: 1 << 20 }), hashing, entry);
      if (hasherDigest(hash) !== p.digest) throw new Error(`blob ${p.digest} in the cache does not hash to its name (run \`berth verify\`); export stopped`);
      o.onBlob?.();
    }
    pack.finalize();
    await done;
  } catch (e) {
    pack.destroy();
    throw e;
  }
  return result;
}
