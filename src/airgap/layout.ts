/**
 * The OCI image layout as berth exports and imports it, in a plain tar:
 *
 *   oci-layout                  {"imageLayoutVersion":"1.0.0"}
 *   index.json                  one entry per image, named by the
 *                               org.opencontainers.image.ref.name annotation
 *                               holding the full reference
 *   blobs/sha256/<hex>          manifests, indexes, configs and layers
 *
 * This is what `skopeo copy … oci-archive:FILE:docker.io/library/x:1` writes,
 * so the two interoperate in both directions.
 *
 * berth's own exports begin with two more files (archive.ts has the format):
 *
 *   berth-archive.json          the archive manifest: every other entry in
 *                               order (name, size, sha256 digest), the digests
 *                               left out of a differential export, and the
 *                               inventory it was made against
 *   berth-archive.sig           (with `export --sign`) the ed25519 signature
 *                               of berth-archive.json's exact bytes
 *
 * The OCI image layout leaves room for other files beside its own; skopeo
 * (containers/image) unpacks the tar and opens the layout, ignoring them
 * (checked with skopeo 1.9). They are the first entries so that an import
 * knows, before it stages a byte, what must follow and who signed it.
 */
export const OCI_LAYOUT_FILE = 'oci-layout';
export const INDEX_FILE = 'index.json';
export const REF_NAME = 'org.opencontainers.image.ref.name';
export const OCI_LAYOUT_CONTENT = '{"imageLayoutVersion":"1.0.0"}';
export const ARCHIVE_MANIFEST_FILE = 'berth-archive.json';
export const ARCHIVE_SIGNATURE_FILE = 'berth-archive.sig';

/** Names an import accepts: the layout's two files, berth's two, blob paths, and their directories. */
export type EntryKind = { kind: 'layout' } | { kind: 'index' } | { kind: 'archive-manifest' } | { kind: 'archive-signature' } | { kind: 'dir' } | { kind: 'blob'; digest: string } | { kind: 'bad'; why: string };

export function classifyEntry(rawName: string): EntryKind {
  if (rawName.includes('\\') || rawName.includes('\0')) return { kind: 'bad', why: 'a name with a backslash or NUL' };
  if (rawName.startsWith('/')) return { kind: 'bad', why: 'an absolute path' };
  const name = rawName.replace(/^(\.\/)+/, '');
  const parts = name.split('/').filter((p, i, a) => !(p === '' && i === a.length - 1));
  if (parts.some((p) => p === '..' || p === '.' || p === '')) return { kind: 'bad', why: 'a path outside the layout' };
  const clean = parts.join('/');
  if (clean === OCI_LAYOUT_FILE) return { kind: 'layout' };
  if (clean === INDEX_FILE) return { kind: 'index' };
  if (clean === ARCHIVE_MANIFEST_FILE) return { kind: 'archive-manifest' };
  if (clean === ARCHIVE_SIGNATURE_FILE) return { kind: 'archive-signature' };
  if (clean === '' || clean === 'blobs' || clean === 'blobs/sha256') return { kind: 'dir' };
  const m = /^blobs\/sha256\/([a-f0-9]{64})$/.exec(clean);
  if (m) return { kind: 'blob', digest: `sha256:${m[1]}` };
  return { kind: 'bad', why: 'a file that is not part of an OCI image layout' };
}
