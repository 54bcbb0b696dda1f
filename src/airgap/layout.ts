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
 */
export const OCI_LAYOUT_FILE = 'oci-layout';
export const INDEX_FILE = 'index.json';
export const REF_NAME = 'org.opencontainers.image.ref.name';
export const OCI_LAYOUT_CONTENT = '{"imageLayoutVersion":"1.0.0"}';

/** Names an import accepts: the two files, blob paths, and their directories. */
export type EntryKind = { kind: 'layout' } | { kind: 'index' } | { kind: 'dir' } | { kind: 'blob'; digest: string } | { kind: 'bad'; why: string };

export function classifyEntry(rawName: string): EntryKind {
  if (rawName.includes('\\') || rawName.includes('\0')) return { kind: 'bad', why: 'a name with a backslash or NUL' };
  if (rawName.startsWith('/')) return { kind: 'bad', why: 'an absolute path' };
  const name = rawName.replace(/^(\.\/)+/, '');
  const parts = name.split('/').filter((p, i, a) => !(p === '' && i === a.length - 1));
  if (parts.some((p) => p === '..' || p === '.' || p === '')) return { kind: 'bad', why: 'a path outside the layout' };
  const clean = parts.join('/');
  if (clean === OCI_LAYOUT_FILE) return { kind: 'layout' };
  if (clean === INDEX_FILE) return { kind: 'index' };
  if (clean === '' || clean === 'blobs' || clean === 'blobs/sha256') return { kind: 'dir' };
  const m = /^blobs\/sha256\/([a-f0-9]{64})$/.exec(clean);
  if (m) return { kind: 'blob', digest: `sha256:${m[1]}` };
  return { kind: 'bad', why: 'a file that is not part of an OCI image layout' };
}
