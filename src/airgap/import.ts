/**
 * `berth import`: loads an OCI image-layout tar into the cache. Every entry
 * is checked before anything enters the cache: only regular files at layout
 * paths (no `..`, absolute paths, links or devices), every blob hashed
 * against its name and sized against its descriptor, every blob an image
 * needs present. Blobs are staged in tmp/ while the tar streams by and
 * published only when the whole tar has passed; on any failure nothing from
 * it is kept.
 */
import fs from 'node:fs';
import type { Readable } from 'node:stream';
import tar from 'tar-stream';
import { isIndexMediaType, declaredMediaType, MEDIA_TYPES } from '../oci/mediatypes.js';
import { parseManifest, type Descriptor } from '../oci/manifest.js';
import { parseImageReference, formatImageReference } from '../oci/paths.js';
import type { BlobWriter } from '../store/blobs.js';
import type { ContentStore } from '../cache/content-store.js';
import type { Pins } from '../store/pins.js';
import { classifyEntry, REF_NAME } from './layout.js';
import { heldBlob, type HeldBlob } from './held.js';

export class ImportError extends Error {
  readonly code = 'IMPORT_REJECTED';
}

export interface ImportResult {
  images: { name: string; digest: string; tagged: boolean }[];
  manifests: number;
  blobs: number;
  bytes: number;
}

const MAX_SMALL_FILE = 4 * 1024 * 1024;

async function readSmall(entry: AsyncIterable<unknown>, what: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of entry) {
    n += (c as Buffer).length;
    if (n > MAX_SMALL_FILE) throw new ImportError(`${what} is larger than ${MAX_SMALL_FILE} bytes`);
    chunks.push(c as Buffer);
  }
  return Buffer.concat(chunks);
}

/** A blob of the archive on its way in, or one the cache already held. */
type Staged = { writer: BlobWriter | HeldBlob; size: number };

/** Where an import writes: the content store, and the pins that keep what it loads. */
export interface ImportTarget {
  store: ContentStore;
  pins: Pins;
}

export async function importArchive(into: ImportTarget, input: Readable): Promise<ImportResult> {
  const staged = new Map<string, Staged>();
  let held: HeldBlob | undefined;
  let layoutSeen = false;
  let indexJson: Buffer | null = null;
  const extract = tar.extract();
  // The iterator only says "Stream was destroyed"; the cause arrives as an error event.
  let cause: Error | null = null;
  const noteCause = (e: Error) => {
    cause ??= e;
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
      if (c.kind === 'bad') throw new ImportError(`refused: entry ${JSON.stringify(h.name.slice(0, 200))} is ${c.why}`);
      if (c.kind === 'dir') {
        if (h.type !== 'directory') throw new ImportError(`refused: entry ${JSON.stringify(h.name)} must be a directory`);
        entry.resume();
        continue;
      }
      if (h.type !== 'file' && h.type !== 'contiguous-file') {
        throw new ImportError(`refused: entry ${JSON.stringify(h.name.slice(0, 200))} is a ${h.type ?? 'special file'}, only regular files are accepted`);
      }
      if (c.kind === 'layout') {
        const layout = JSON.parse((await readSmall(entry, 'oci-layout')).toString('utf8')) as { imageLayoutVersion?: unknown };
        if (typeof layout.imageLayoutVersion !== 'string') throw new ImportError('oci-layout has no imageLayoutVersion');
        layoutSeen = true;
      } else if (c.kind === 'index') {
        indexJson = await readSmall(entry, 'index.json');
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
    if (!layoutSeen) throw new ImportError('not an OCI image layout: no oci-layout file');
    if (!indexJson) throw new ImportError('not an OCI image layout: no index.json');
    return await publish(into, indexJson, staged);
  } catch (err) {
    await Promise.all([...staged.values()].map((s) => s.writer.abort()));
    if (err instanceof ImportError) throw err;
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
  manifests: Map<string, { mediaType: string; body: Buffer }>;
  blobs: Set<string>;
}

/** Walks the images index.json names, checking every reference is present and sized right. */
function plan(indexJson: Buffer, staged: Map<string, Staged>): { planned: Planned; roots: { desc: Descriptor; name: string | undefined; closure: Set<string> }[] } {
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
  const need = (d: Descriptor, what: string): Staged => {
    const s = staged.get(d.digest);
    if (!s) throw new ImportError(`${what} ${d.digest} is missing from the archive`);
    if (d.size !== undefined && d.size !== s.size) throw new ImportError(`${what} ${d.digest} is ${s.size} bytes, its descriptor says ${d.size}`);
    return s;
  };
  // Each image's own closure: its content is linked to its name only, never to another
  // image's (a private image's layers must not become readable under a public name).
  const walk = (d: Descriptor, depth: number, optional: boolean, closure: Set<string>): void => {
    if (closure.has(d.digest)) return;
    if (depth > 4) throw new ImportError('indexes nested too deep');
    if (optional && !staged.has(d.digest)) return; // a platform the exporter left out
    const s = need(d, 'manifest');
    closure.add(d.digest);
    let m = planned.manifests.get(d.digest);
    if (!m) {
      const body = fs.readFileSync(s.writer.tempPath);
      m = { mediaType: d.mediaType ?? declaredMediaType(body) ?? MEDIA_TYPES.ociManifest, body };
      planned.manifests.set(d.digest, m);
    }
    const parsed = parseManifest(m.body);
    if (isIndexMediaType(m.mediaType)) {
      const present = parsed.manifests.filter((c) => staged.has(c.digest));
      if (present.length === 0) throw new ImportError(`index ${d.digest} has none of its manifests in the archive`);
      for (const child of parsed.manifests) walk(child, depth + 1, true, closure);
    } else {
      for (const b of parsed.blobs) {
        need(b, 'blob');
        planned.blobs.add(b.digest);
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

async function publish({ store, pins }: ImportTarget, indexJson: Buffer, staged: Map<string, Staged>): Promise<ImportResult> {
  const { planned, roots } = plan(indexJson, staged);
  const result: ImportResult = { images: [], manifests: 0, blobs: 0, bytes: 0 };
  for (const digest of planned.blobs) {
    const s = staged.get(digest)!;
    await s.writer.commit({ expectedSize: s.size });
    result.blobs++;
    result.bytes += s.size;
  }
  for (const [digest, m] of planned.manifests) {
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
      const content = store.repository(ref.registry, ref.repository);
      for (const d of r.closure) content.link(d);
      name = formatImageReference({ registry: ref.registry, repository: ref.repository, ...(ref.tag ? { tag: ref.tag } : { digest: r.desc.digest }) });
    }
    pins.pin(name, r.desc.digest);
    result.images.push({ name, digest: r.desc.digest, tagged });
  }
  return result;
}
