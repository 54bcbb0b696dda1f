/**
 * `berth inventory`: what a berth holds, for another berth's `export --have`.
 * A gzip'd JSON-lines file, format version 1, one object per line:
 *
 *   {"type":"berth-inventory","version":1,"created":"…","creator":"berth 0.1.0"}   first
 *   {"type":"blob","digest":"sha256:…","size":1234}
 *   {"type":"manifest","digest":"sha256:…","mediaType":"…","size":567}
 *   {"type":"tag","registry":"docker.io","repository":"library/nginx","tag":"1.27","digest":"sha256:…"}
 *   {"type":"pin","image":"docker.io/library/nginx:1.27","digest":"sha256:…"}
 *   {"type":"end","blobs":N,"manifests":N,"tags":N,"pins":N}                        last
 *
 * Blobs, then manifests, tags and pins, each sorted. The end line's counts
 * must match: an inventory cut short is refused, never read as "holds less".
 * Readers skip line types they do not know (so later versions of 1 may add
 * some); a higher version is refused.
 *
 * Written from the index rows as they are read (one read transaction, so one
 * consistent snapshot even beside a running daemon), never gathered in
 * memory; read back line by line the same way.
 */
import fs from 'node:fs';
import readline from 'node:readline';
import { PassThrough, type Readable, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip, createGzip } from 'node:zlib';
import type { DB } from '../store/db.js';
import { isDigest, newHasher, hasherDigest } from '../oci/digest.js';

export const INVENTORY_VERSION = 1;
const MAX_LINE = 64 * 1024;

export interface InventoryCounts {
  blobs: number;
  manifests: number;
  tags: number;
  pins: number;
}

export class InventoryError extends Error {
  readonly code = 'INVENTORY_FORMAT';
}

/**
 * Writes the inventory of the index `db` (any connection; a read-only one is
 * best) gzip'd to `out`, with backpressure. Returns the counts.
 */
export async function writeInventory(db: DB, out: Writable, meta: { creator: string; now?: Date }): Promise<InventoryCounts> {
  const gzip = createGzip({ level: 6 });
  const done = pipeline(gzip, out);
  done.catch(() => undefined);
  const counts: InventoryCounts = { blobs: 0, manifests: 0, tags: 0, pins: 0 };
  // Lines go to zlib in 64 KiB batches: one deflate call per line would cost more than the rest together.
  let batch = '';
  const write = async (obj: object): Promise<void> => {
    batch += JSON.stringify(obj) + '\n';
    if (batch.length < 65536) return;
    await flush();
  };
  const flush = async (): Promise<void> => {
    const chunk = batch;
    batch = '';
    if (chunk !== '' && !gzip.write(chunk)) await new Promise<void>((resolve, reject) => {
      const onDrain = () => {
        gzip.off('error', onError);
        resolve();
      };
      const onError = (e: Error) => {
        gzip.off('drain', onDrain);
        reject(e);
      };
      gzip.once('drain', onDrain);
      gzip.once('error', onError);
    });
  };
  db.exec('BEGIN');
  try {
    await write({ type: 'berth-inventory', version: INVENTORY_VERSION, created: (meta.now ?? new Date()).toISOString(), creator: meta.creator });
    for (const r of db.prepare('SELECT digest, size FROM blobs ORDER BY digest').iterate() as IterableIterator<{ digest: string; size: number }>) {
      await write({ type: 'blob', digest: r.digest, size: r.size });
      counts.blobs++;
    }
    for (const r of db.prepare('SELECT digest, media_type, length(body) AS size FROM manifests ORDER BY digest').iterate() as IterableIterator<{ digest: string; media_type: string; size: number }>) {
      await write({ type: 'manifest', digest: r.digest, mediaType: r.media_type, size: r.size });
      counts.manifests++;
    }
    for (const r of db.prepare('SELECT registry, repository, tag, digest FROM tags ORDER BY registry, repository, tag').iterate() as IterableIterator<{ registry: string; repository: string; tag: string; digest: string }>) {
      await write({ type: 'tag', registry: r.registry, repository: r.repository, tag: r.tag, digest: r.digest });
      counts.tags++;
    }
    for (const r of db.prepare('SELECT image, digest FROM pins ORDER BY image, digest').iterate() as IterableIterator<{ image: string; digest: string }>) {
      await write({ type: 'pin', image: r.image, digest: r.digest });
      counts.pins++;
    }
  } finally {
    db.exec('COMMIT');
  }
  await write({ type: 'end', ...counts });
  await flush();
  gzip.end();
  await done;
  return counts;
}

/** Writes an empty inventory (a berth that has no cache yet holds nothing). */
export async function writeEmptyInventory(out: Writable, meta: { creator: string; now?: Date }): Promise<InventoryCounts> {
  const counts: InventoryCounts = { blobs: 0, manifests: 0, tags: 0, pins: 0 };
  const header = { type: 'berth-inventory', version: INVENTORY_VERSION, created: (meta.now ?? new Date()).toISOString(), creator: meta.creator };
  const text = `${JSON.stringify(header)}\n${JSON.stringify({ type: 'end', ...counts })}\n`;
  const gzip = createGzip();
  const done = pipeline(gzip, out);
  gzip.end(text);
  await done;
  return counts;
}

export type InventoryLine =
  | { type: 'berth-inventory'; version: number; created: string; creator: string }
  | { type: 'blob'; digest: string; size: number }
  | { type: 'manifest'; digest: string; mediaType: string; size: number }
  | { type: 'tag'; registry: string; repository: string; tag: string; digest: string }
  | { type: 'pin'; image: string; digest: string }
  | ({ type: 'end' } & InventoryCounts)
  | { type: 'unknown' };

/** One line, checked; `n` is its 1-based number for the error. */
export function parseInventoryLine(text: string, n: number): InventoryLine {
  const fail = (why: string): never => {
    throw new InventoryError(`inventory line ${n}: ${why}`);
  };
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return fail(`is not JSON (${JSON.stringify(text.slice(0, 60))})`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return fail('is not a JSON object');
  const o = v as Record<string, unknown>;
  const digest = (): string => (typeof o.digest === 'string' && isDigest(o.digest) ? o.digest : fail(`${String(o.type)}: digest must be sha256:<64 hex>`));
  const count = (k: string): number => (typeof o[k] === 'number' && Number.isSafeInteger(o[k]) && (o[k] as number) >= 0 ? (o[k] as number) : fail(`${String(o.type)}: ${k} must be a whole number`));
  const str = (k: string): string => (typeof o[k] === 'string' && o[k] !== '' ? (o[k] as string) : fail(`${String(o.type)}: ${k} must be a non-empty string`));
  switch (o.type) {
    case 'berth-inventory':
      return { type: 'berth-inventory', version: count('version'), created: typeof o.created === 'string' ? o.created : '', creator: typeof o.creator === 'string' ? o.creator : '' };
    case 'blob':
      return { type: 'blob', digest: digest(), size: count('size') };
    case 'manifest':
      return { type: 'manifest', digest: digest(), mediaType: str('mediaType'), size: count('size') };
    case 'tag':
      return { type: 'tag', registry: str('registry'), repository: str('repository'), tag: str('tag'), digest: digest() };
    case 'pin':
      return { type: 'pin', image: str('image'), digest: digest() };
    case 'end':
      return { type: 'end', blobs: count('blobs'), manifests: count('manifests'), tags: count('tags'), pins: count('pins') };
    default:
      if (typeof o.type !== 'string') return fail('has no type');
      return { type: 'unknown' };
  }
}

export interface InventoryRead {
  /** sha256 of the file's bytes as given (what an archive manifest records). */
  digest: string;
  header: { version: number; created: string; creator: string };
  counts: InventoryCounts;
}

/**
 * Reads an inventory (gzip'd, or already gunzip'd: the first bytes tell) line
 * by line, calling `onLine` for each content line; checks the header, the
 * end line and its counts. Memory stays flat whatever its size.
 */
export async function readInventory(input: Readable, onLine: (l: Exclude<InventoryLine, { type: 'berth-inventory' | 'end' | 'unknown' }>) => void): Promise<InventoryRead> {
  const hash = newHasher();
  const text = new PassThrough();
  let sniffed = false;
  let gunzip: ReturnType<typeof createGunzip> | null = null;
  const raw = new PassThrough();
  const feeding = (async () => {
    for await (const chunk of input) {
      const c = chunk as Buffer;
      hash.update(c);
      if (!sniffed) {
        sniffed = true;
        if (c[0] === 0x1f && c[1] === 0x8b) {
          gunzip = createGunzip();
          gunzip.on('error', (e) => text.destroy(new InventoryError(`the inventory is not a complete gzip file (${e.message})`)));
          raw.pipe(gunzip).pipe(text);
        } else raw.pipe(text);
      }
      if (!raw.write(c)) await new Promise((r) => raw.once('drain', r));
    }
    if (!sniffed) raw.pipe(text);
    raw.end();
  })();
  feeding.catch((e: unknown) => text.destroy(e instanceof Error ? e : new Error(String(e))));
  const lines = readline.createInterface({ input: text, crlfDelay: Infinity });
  let n = 0;
  let header: InventoryRead['header'] | null = null;
  let end: InventoryCounts | null = null;
  const seen: InventoryCounts = { blobs: 0, manifests: 0, tags: 0, pins: 0 };
  try {
    for await (const line of lines) {
      n++;
      if (line.length > MAX_LINE) throw new InventoryError(`inventory line ${n}: longer than ${MAX_LINE} bytes`);
      if (n === 1 && !line.startsWith('{')) throw new InventoryError('not a berth inventory (expected gzip\'d JSON lines, as `berth inventory` writes)');
      if (line.trim() === '') continue;
      if (end) throw new InventoryError(`inventory line ${n}: content after the end line`);
      const l = parseInventoryLine(line, n);
      if (n === 1) {
        if (l.type !== 'berth-inventory') throw new InventoryError('not a berth inventory: its first line is not {"type":"berth-inventory",…}');
        if (l.version > INVENTORY_VERSION) throw new InventoryError(`the inventory is version ${l.version}, written by a newer berth (this one reads version ${INVENTORY_VERSION})`);
        if (l.version !== INVENTORY_VERSION) throw new InventoryError(`inventory version ${l.version} is not known`);
        header = { version: l.version, created: l.created, creator: l.creator };
        continue;
      }
      if (l.type === 'berth-inventory') throw new InventoryError(`inventory line ${n}: a second header`);
      if (l.type === 'end') {
        end = { blobs: l.blobs, manifests: l.manifests, tags: l.tags, pins: l.pins };
        continue;
      }
      if (l.type === 'unknown') continue;
      seen[`${l.type}s` as keyof InventoryCounts]++;
      onLine(l);
    }
    await feeding;
  } catch (e) {
    input.destroy();
    throw e instanceof InventoryError ? e : new InventoryError(`the inventory could not be read: ${(e as Error).message}`);
  }
  if (!header) throw new InventoryError('the inventory is empty');
  if (!end) throw new InventoryError(`the inventory is cut short (no end line after line ${n})`);
  for (const k of ['blobs', 'manifests', 'tags', 'pins'] as const) {
    if (end[k] !== seen[k]) throw new InventoryError(`the inventory's end line counts ${end[k]} ${k}, it holds ${seen[k]}`);
  }
  return { digest: hasherDigest(hash), header, counts: end };
}

/** readInventory from a file, with the file named in errors. */
export async function readInventoryFile(file: string, onLine: Parameters<typeof readInventory>[1]): Promise<InventoryRead> {
  let input: fs.ReadStream;
  try {
    await fs.promises.access(file, fs.constants.R_OK);
    input = fs.createReadStream(file, { highWaterMark: 1 << 20 });
  } catch (e) {
    throw new InventoryError(`cannot read the inventory ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  try {
    return await readInventory(input, onLine);
  } catch (e) {
    if (e instanceof InventoryError) throw new InventoryError(`${file}: ${e.message}`);
    throw e;
  }
}
