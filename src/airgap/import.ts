/**
 * `berth import`: loads an OCI image-layout tar into the cache. Every entry
 * is checked before anything enters the cache: only regular files at layout
 * paths (no `..`, absolute paths, links or devices), every blob hashed
 * against its name and sized against its descriptor, every blob an image
 * needs present (in the tar, or, for what a differential archive leaves
 * out, already in this cache). Blobs are staged in tmp/ while the tar
 * streams by and published only when the whole tar has passed; on any
 * failure nothing from it is kept.
 *
 * A berth archive opens with its archive manifest (and signature): when
 * there is one, every entry must be the one it lists next, of the size
 * and digest it lists, and nothing may be missing or added. With trusted
 * keys, an archive without a signature that verifies is refused before
 * its first blob is staged.
 */
import fs from 'node:fs';
import type { Readable } from 'node:stream';
import tar from 'tar-stream';
import { isIndexMediaType, declaredMediaType, MEDIA_TYPES } from '../oci/mediatypes.js';
import { MAX_MANIFEST_BYTES, parseManifest, type Descriptor } from '../oci/manifest.js';
import { parseImageReference, formatImageReference } from '../oci/paths.js';
import { sha256 } from '../oci/digest.js';
import type { BlobWriter } from '../store/blobs.js';
import type { ContentStore } from '../cache/content-store.js';
import type { Pins } from '../store/pins.js';
import { ARCHIVE_MANIFEST_FILE, ARCHIVE_SIGNATURE_FILE, classifyEntry, REF_NAME } from './layout.js';
import { heldBlob, type HeldBlob } from './held.js';
import { ArchiveFormatError, MAX_ARCHIVE_MANIFEST, parseArchiveManifest, verifyArchiveSignature, type ArchiveManifest, type OmittedDigest, type TrustedKey } from './archive.js';

export class ImportError extends Error {
  readonly code = 'IMPORT_REJECTED';
}

export interface ImportResult {
  images: { name: string; digest: string; tagged: boolean }[];
  manifests: number;
  blobs: number;
  bytes: number;
  /** Digests the archive left out that this cache already held (a differential archive). */
  omitted: number;
  /** The inventory a differential archive was made against (its file's sha256), or null. */
  inventory: string | null;
  /** Whether the archive's origin was checked: signed by `key` (from `file`), or not checked. */
  signature: { checked: true; key: string; file: string } | { checked: false; why: string };
}

const MAX_SMALL_FILE = 4 * 1024 * 1024;

async function readSmall(entry: AsyncIterable<unknown>, what: string, max = MAX_SMALL_FILE): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of entry) {
    n += (c as Buffer).length;
    if (n > max) throw new ImportError(`${what} is larger than ${max} bytes`);
    chunks.push(c as Buffer);
  }
  return Buffer.concat(chunks);
}

/** Where an import writes: the content store, and the pins that keep what it loads. */
export interface ImportTarget {
  store: ContentStore;
  pins: Pins;
}

export interface ImportOptions {
  /** Public keys the archive must be signed by (none: the origin is not checked). */
  trusted?: readonly TrustedKey[];
}

const refused = (why: string): ImportError => new ImportError(`refused: ${why}`);

export async function importArchive(into: ImportTarget, input: Readable, opts: ImportOptions = {}): Promise<ImportResult> {
  const trusted = opts.trusted ?? [];
  const staged: Staged = new Map();
  let held: HeldBlob | undefined;
  let layoutSeen = false;
  let indexJson: Buffer | null = null;
  let manifestBytes: Buffer | null = null;
  let sigBytes: Buffer | null = null;
  let archive: ArchiveManifest | null = null;
  let signer: TrustedKey | null = null;
  let nextListed = 0;
  let entryNo = 0;
  const extract = tar.extract();
  // The iterator only says "Stream was destroyed"; the cause arrives as an error event.
  let cause: Error | null = null;
  const noteCause = (e: Error) => {
    cause ??= e;
  };
  /** Once the manifest (and signature) are in: verify, parse, and check this cache holds what it leaves out. */
  const settleArchive = (): void => {
    if (archive || !manifestBytes) return;
    if (trusted.length > 0) {
      if (!sigBytes) throw refused(`the archive is not signed (no ${ARCHIVE_SIGNATURE_FILE} after ${ARCHIVE_MANIFEST_FILE}); with trusted keys only signed archives are imported`);
      signer = verifyArchiveSignature(manifestBytes, sigBytes, trusted);
    }
    archive = parseArchiveManifest(manifestBytes);
    const lacking = archive.omitted.filter((o) => (o.kind === 'blob' ? into.store.present(o.digest) === undefined : !into.store.index.hasManifest(o.digest)));
    if (lacking.length > 0) {
      const named = lacking.slice(0, 5).map((o) => `${o.kind} ${o.digest}`).join(', ');
      throw refused(
        `this differential archive leaves out ${archive.omitted.length} digests the importing cache must already hold, and this cache lacks ${lacking.length}: ${named}${lacking.length > 5 ? ', …' : ''}. ` +
          'Export again against this berth\'s current inventory (`berth inventory`), or export in full (no --have)',
      );
    }
  };
  try {
    const feeding = new Promise<void>((resolve, reject) => {
      input.once('error', (e) => {
        noteCause(e);
        reject(e);
      });
      extract.once('error', (e) => {
        noteCause(e);
        reject(e);
      });
      input.pipe(extract);
      extract.once('finish', resolve);
    });
    feeding.catch(() => undefined);
    for await (const entry of extract) {
      const h = entry.header;
      const c = classifyEntry(h.name);
      const shown = JSON.stringify(h.name.slice(0, 200));
      if (c.kind === 'bad') throw new ImportError(`refused: entry ${shown} is ${c.why}`);
      if (c.kind !== 'dir' && h.type !== 'file' && h.type !== 'contiguous-file') {
        throw new ImportError(`refused: entry ${shown} is a ${h.type ?? 'special file'}, only regular files are accepted`);
      }
      entryNo++;
      if (c.kind === 'archive-manifest') {
        if (entryNo !== 1) throw refused(`${ARCHIVE_MANIFEST_FILE} must be the first entry of the archive`);
        manifestBytes = await readSmall(entry, ARCHIVE_MANIFEST_FILE, MAX_ARCHIVE_MANIFEST);
        continue;
      }
      if (c.kind === 'archive-signature') {
        if (entryNo !== 2 || !manifestBytes) throw refused(`${ARCHIVE_SIGNATURE_FILE} must come right after ${ARCHIVE_MANIFEST_FILE}`);
        sigBytes = await readSmall(entry, ARCHIVE_SIGNATURE_FILE);
        continue;
      }
      if (entryNo === 1 && trusted.length > 0) {
        throw refused(`the archive is not signed: it has no ${ARCHIVE_MANIFEST_FILE} (its first entry is ${shown}); with trusted keys only signed berth archives are imported`);
      }
      settleArchive();
      let listedDigest: string | undefined;
      if (archive) {
        const a: ArchiveManifest = archive;
        const clean = h.name.replace(/^(\.\/)+/, '').replace(/\/$/, '');
        const expected = a.entries[nextListed];
        if (expected?.name !== clean) {
          const at = a.entries.findIndex((e) => e.name === clean);
          if (at < 0) throw refused(`entry ${shown} is not listed in ${ARCHIVE_MANIFEST_FILE}`);
          if (at < nextListed) throw refused(`entry ${shown} appears twice`);
          throw refused(`listed entry ${JSON.stringify(expected!.name)} is missing from the archive (found ${shown} in its place)`);
        }
        if ((h.size ?? 0) !== expected.size) throw refused(`entry ${shown} is ${h.size ?? 0} bytes, ${ARCHIVE_MANIFEST_FILE} lists ${expected.size}`);
        listedDigest = expected.digest;
        nextListed++;
      }
      if (c.kind === 'dir') {
        if (h.type !== 'directory') throw new ImportError(`refused: entry ${shown} must be a directory`);
        entry.resume();
        continue;
      }
      if (c.kind === 'layout' || c.kind === 'index') {
        const what = c.kind === 'layout' ? 'oci-layout' : 'index.json';
        const data = await readSmall(entry, what);
        if (listedDigest !== undefined && sha256(data) !== listedDigest) throw refused(`entry ${shown} does not match its digest in ${ARCHIVE_MANIFEST_FILE}`);
        if (c.kind === 'index') indexJson = data;
        else {
          let layout: unknown;
          try {
            layout = JSON.parse(data.toString('utf8'));
          } catch {
            throw new ImportError('oci-layout is not JSON');
          }
          if (typeof layout !== 'object' || layout === null || typeof (layout as { imageLayoutVersion?: unknown }).imageLayoutVersion !== 'string') throw new ImportError('oci-layout has no imageLayoutVersion');
          layoutSeen = true;
        }
      } else if (staged.has(c.digest)) {
        entry.resume();
      } else if ((held = heldBlob(into.store, c.digest, h.size ?? undefined))) {
        // Already in the cache (an interrupted import run again): checked, not written again.
        staged.set(c.digest, { writer: held, size: h.size ?? 0 });
        if (!(await held.absorb(entry, h.size ?? undefined))) throw new ImportError(`blob ${c.digest} does not match its digest (corrupt or truncated archive)`);
      } else {
        const writer = await into.store.createWriter(c.digest);
        staged.set(c.digest, { writer, size: h.size ?? 0 });
        for await (const chunk of entry) await writer.write(chunk as Buffer);
        try {
          await writer.verify(h.size ?? undefined);
        } catch {
          throw new ImportError(`blob ${c.digest} does not match its digest (corrupt or truncated archive)`);
        }
      }
    }
    await feeding;
    if (trusted.length > 0 && !manifestBytes) throw refused(`the archive is not signed (no ${ARCHIVE_MANIFEST_FILE}); with trusted keys only signed berth archives are imported`);
    settleArchive();
    const a = archive as ArchiveManifest | null;
    if (a && nextListed < a.entries.length) throw refused(`listed entry ${JSON.stringify(a.entries[nextListed]!.name)} is missing from the archive`);
    if (!layoutSeen) throw new ImportError('not an OCI image layout: no oci-layout file');
    if (!indexJson) throw new ImportError('not an OCI image layout: no index.json');
    const omitted = new Map((a?.omitted ?? []).map((o) => [o.digest, o]));
    const s = signer as TrustedKey | null;
    const signature: ImportResult['signature'] = s
      ? { checked: true, key: s.fingerprint, file: s.file }
      : { checked: false, why: manifestBytes ? (sigBytes ? 'signed, but no trusted key was given' : 'not signed, and no trusted key was given') : 'not a berth archive (no archive manifest), and no trusted key was given' };
    return await publish(into, indexJson, staged, omitted, { inventory: a?.inventory ?? null, signature });
  } catch (err) {
    await Promise.all([...staged.values()].map((s) => s.writer.abort()));
    if (err instanceof ImportError) throw err;
    if (err instanceof ArchiveFormatError) throw refused(err.message);
    const root: unknown = cause ?? err;
    const msg = root instanceof Error ? root.message : String(root);
    throw new ImportError(/unexpected end|truncated|size mismatch|premature/i.test(msg) ? `the archive is truncated (${msg})` : `the archive could not be read: ${msg}`);
  }
}

function safeParse(name: string): ReturnType<typeof parseImageReference> | undefined {
  try {
    return parseImageReference(name);
  } catch {
    return undefined;
  }
}

interface Planned {
  /** `held`: a manifest the archive left out, already in this cache (stored already, only linked). */
  manifests: Map<string, { mediaType: string; body: Buffer; held: boolean }>;
  /** Blobs staged from the archive, to commit. */
  blobs: Set<string>;
}

/** Blobs of the archive on their way in, or ones the cache already held. */
type Staged = Map<string, { writer: BlobWriter | HeldBlob; size: number }>;

/**
 * Walks the images index.json names, checking every reference is present
 * and sized right: staged from the archive, or left out by it and held here.
 */
function plan(store: ContentStore, indexJson: Buffer, staged: Staged, omitted: Map<string, OmittedDigest>): { planned: Planned; roots: { desc: Descriptor; name: string | undefined; closure: Set<string> }[] } {
  let index: { manifests?: unknown };
  try {
    index = JSON.parse(indexJson.toString('utf8')) as { manifests?: unknown };
  } catch {
    throw new ImportError('index.json is not JSON');
  }
  const roots = parseManifest(indexJson).manifests.map((desc, i) => {
    const raw = (Array.isArray(index.manifests) ? (index.manifests[i] as { annotations?: Record<string, unknown> }) : undefined)?.annotations?.[REF_NAME];
    return { desc, name: typeof raw === 'string' ? raw : undefined };
  });
  if (roots.length === 0) throw new ImportError('index.json names no image');
  const planned: Planned = { manifests: new Map(), blobs: new Set() };
  const there = (digest: string): boolean => staged.has(digest) || omitted.has(digest);
  /** The size of what a descriptor names, checked: staged, or left out and held here. */
  const need = (d: Descriptor, what: 'manifest' | 'blob'): void => {
    const s = staged.get(d.digest);
    let size: number;
    if (s) size = s.size;
    else {
      const o = omitted.get(d.digest);
      if (!o) throw new ImportError(`${what} ${d.digest} is missing from the archive`);
      if (o.kind !== what) throw new ImportError(`${what} ${d.digest} is left out of the archive as a ${o.kind}`);
      const held = what === 'blob' ? store.present(d.digest) : store.manifestBody(d.digest)?.length;
      if (held === undefined) throw new ImportError(`${what} ${d.digest}, left out of the archive, is no longer in this cache (evicted during the import?)`);
      size = held;
    }
    if (d.size !== undefined && d.size !== size) throw new ImportError(`${what} ${d.digest} is ${size} bytes, its descriptor says ${d.size}`);
  };
  // Each image's own closure: its content is linked to its name only, never to another
  // image's (a private image's layers must not become readable under a public name).
  const walk = (d: Descriptor, depth: number, optional: boolean, closure: Set<string>): void => {
    if (closure.has(d.digest)) return;
    if (depth > 4) throw new ImportError('indexes nested too deep');
    if (optional && !there(d.digest)) return; // a platform the exporter left out
    need(d, 'manifest');
    const size = staged.get(d.digest)?.size;
    if (size !== undefined && size > MAX_MANIFEST_BYTES) {
      throw new ImportError(`manifest ${d.digest} is ${size} bytes, more than the ${MAX_MANIFEST_BYTES} bytes (4 MiB) any registry serves (Distribution's limit, and berth's from an upstream)`);
    }
    closure.add(d.digest);
    let m = planned.manifests.get(d.digest);
    if (!m) {
      const s = staged.get(d.digest);
      const body = s ? fs.readFileSync(s.writer.tempPath) : store.manifestBody(d.digest)!;
      m = { mediaType: d.mediaType ?? declaredMediaType(body) ?? MEDIA_TYPES.ociManifest, body, held: !s };
      planned.manifests.set(d.digest, m);
    }
    const parsed = parseManifest(m.body);
    if (isIndexMediaType(m.mediaType)) {
      const present = parsed.manifests.filter((c) => there(c.digest));
      if (present.length === 0) throw new ImportError(`index ${d.digest} has none of its manifests in the archive`);
      for (const child of parsed.manifests) walk(child, depth + 1, true, closure);
    } else {
      for (const b of parsed.blobs) {
        need(b, 'blob');
        if (staged.has(b.digest)) planned.blobs.add(b.digest);
        closure.add(b.digest);
      }
    }
  };
  const withClosures = roots.map((r) => {
    const closure = new Set<string>();
    walk(r.desc, 0, false, closure);
    return { ...r, closure };
  });
  return { planned, roots: withClosures };
}

async function publish({ store, pins }: ImportTarget, indexJson: Buffer, staged: Staged, omitted: Map<string, OmittedDigest>, about: Pick<ImportResult, 'inventory' | 'signature'>): Promise<ImportResult> {
  const { planned, roots } = plan(store, indexJson, staged, omitted);
  const result: ImportResult = { images: [], manifests: 0, blobs: 0, bytes: 0, omitted: omitted.size, ...about };
  for (const digest of planned.blobs) {
    const s = staged.get(digest)!;
    await s.writer.commit({ expectedSize: s.size });
    result.blobs++;
    result.bytes += s.size;
  }
  for (const [digest, m] of planned.manifests) {
    if (m.held) continue;
    store.putManifest(digest, m.mediaType, m.body);
    result.manifests++;
    result.bytes += m.body.length;
  }
  // Manifests live in the index; their staged files and unreferenced extras are dropped.
  for (const [digest, s] of staged) if (!planned.blobs.has(digest)) await s.writer.abort();
  for (const r of roots) {
    // skopeo writes whatever name it was given: only a full reference ("docker.io/x/y:1")
    // says which repository the image belongs to; a bare "1.27" does not.
    const ref = r.name && /[/:@]/.test(r.name) ? safeParse(r.name) : undefined;
    let name: string = r.desc.digest;
    let tagged = false;
    if (ref) {
      if (ref.tag) {
        const top = planned.manifests.get(r.desc.digest)!;
        store.putTag(ref.registry, ref.repository, ref.tag, { digest: r.desc.digest, media_type: top.mediaType, size: top.body.length, fetched_at: Date.now() });
        tagged = true;
      }
      // Content the archive left out is linked here too: this image is served from this repository.
      const content = store.repository(ref.registry, ref.repository);
      for (const d of r.closure) content.link(d);
      name = formatImageReference({ registry: ref.registry, repository: ref.repository, ...(ref.tag ? { tag: ref.tag } : { digest: r.desc.digest }) });
    }
    pins.pin(name, r.desc.digest);
    result.images.push({ name, digest: r.desc.digest, tagged });
  }
  return result;
}
