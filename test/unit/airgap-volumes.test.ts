/**
 * Volumes, the header scan and the pre-flight arithmetic, on real files
 * and a real content store: a tar written through VolumeWriter cut at its
 * size and joined back byte for byte; the scan walking plain, pax and GNU
 * long-name headers across volume boundaries and naming what is missing;
 * evictable bytes counting neither pinned, busy nor the archive's own.
 */
import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { pipeline } from 'node:stream/promises';
import { PassThrough } from 'node:stream';
import tar from 'tar-stream';
import { VolumeSet, VolumeWriter, VolumeError } from '../../src/airgap/volumes.js';
import { scanArchive, ScanError } from '../../src/airgap/scan.js';
import { checkImportRoom, evictableBytes, importNeeds } from '../../src/airgap/preflight.js';
import { sha256 } from '../../src/oci/digest.js';
import { MEDIA_TYPES } from '../../src/oci/mediatypes.js';
import { commitBlob, tempStore } from '../harness/cache-fakes.js';

const MiB = 1024 * 1024;

function tmp(t: { teardown(fn: () => void): void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'berth-volumes-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function writeTar(out: NodeJS.WritableStream, entries: { name: string; data: Buffer; pax?: boolean }[]): Promise<void> {
  const pack = tar.pack();
  const done = pipeline(pack, out as NodeJS.WritableStream & PassThrough);
  for (const e of entries) {
    await new Promise<void>((res, rej) => pack.entry({ name: e.name, size: e.data.length, mtime: new Date(0), ...(e.pax ? { pax: { comment: 'x'.repeat(300) } } : {}) }, e.data, (err) => (err ? rej(err) : res())));
  }
  pack.finalize();
  await done;
}

t.test('VolumeWriter cuts the stream at the size; the set reads and scans back whole', async (t) => {
  const dir = tmp(t);
  const base = path.join(dir, 'site.tar');
  const blobs = [randomBytes(700_000), randomBytes(900_000), randomBytes(600_000)];
  const entries = [{ name: 'oci-layout', data: Buffer.from('{"imageLayoutVersion":"1.0.0"}') }, ...blobs.map((b) => ({ name: `blobs/sha256/${sha256(b).slice(7)}`, data: b }))];
  // A name past 100 characters takes a long-name header; a pax record another.
  entries.push({ name: `blobs/${'d'.repeat(120)}`, data: Buffer.from('long') }, { name: 'index.json', data: Buffer.from('{}'), pax: true } as never);
  const w = new VolumeWriter(base, MiB);
  await writeTar(w, entries);
  t.same(await w.commit(), []);
  t.same(w.files.map((f) => path.basename(f)), ['site.tar.000', 'site.tar.001', 'site.tar.002']);
  t.same(fs.readdirSync(dir).sort(), ['site.tar.000', 'site.tar.001', 'site.tar.002'], 'no .partial left');
  const plain = new PassThrough();
  const chunks: Buffer[] = [];
  plain.on('data', (c: Buffer) => chunks.push(c));
  await writeTar(plain, entries);
  const joined = Buffer.concat(w.files.map((f) => fs.readFileSync(f)));
  t.ok(joined.equals(Buffer.concat(chunks)), 'the volumes joined are the plain tar');

  const set = VolumeSet.open([w.files[2]!, w.files[0]!, w.files[1]!]);
  t.teardown(() => set.close());
  const scan = scanArchive(set);
  t.same(scan.entries.map((e) => [e.name, e.size]), entries.map((e) => [e.name, e.data.length]));
  t.ok(scan.entries.every((e, i) => joined.subarray(e.offset, e.offset + e.size).equals(entries[i]!.data)), 'every entry at its offset');
  t.ok(scan.end <= set.size && scan.end > set.size - 1024 * 10);
  let seen = 0;
  for await (const c of set.stream((n) => (seen = n))) void c;
  t.equal(seen, joined.length, 'the stream reads the whole set, in order');
});

t.test('what the names and the chain tell: missing, duplicated, mixed, short, out of order', async (t) => {
  const dir = tmp(t);
  const base = path.join(dir, 'a.tar');
  const w = new VolumeWriter(base, MiB);
  await writeTar(w, [{ name: 'x', data: randomBytes(Math.round(2.5 * MiB)) }]);
  await w.commit();
  const [v0, v1, v2] = w.files as [string, string, string];
  t.throws(() => VolumeSet.open([v0, v2]), new VolumeError('volume a.tar.001 of a.tar is missing (given a.tar.000, a.tar.002)'));
  t.throws(() => VolumeSet.open([v1, v2]), /volume a\.tar\.000 of a\.tar is missing/);
  t.throws(() => VolumeSet.open([v0, v0, v1]), /named twice/);
  const other = path.join(dir, 'b.tar.001');
  fs.copyFileSync(v1, other);
  t.throws(() => VolumeSet.open([v0, other]), /b\.tar\.001 is not a volume of a\.tar/);
  t.throws(() => VolumeSet.open([v0, path.join(dir, 'plain.tar')]), /not a volume/);
  t.throws(() => scanArchive(VolumeSet.open([v0, v1])), new ScanError('volume a.tar.002 is missing: the set ends at byte 2097152, the archive continues'));
  t.throws(() => scanArchive(VolumeSet.open([v0])), /volume a\.tar\.001 is missing \(or a\.tar\.000 is truncated\)/);
  fs.truncateSync(v2, 1000);
  t.throws(() => scanArchive(VolumeSet.open([v0, v1, v2])), /volume a\.tar\.002 is truncated \(1000 bytes, the others 1048576\)/);
  fs.truncateSync(v1, 1000);
  t.throws(() => VolumeSet.open([v0, v1, v2]), /a\.tar\.001 is 1000 bytes where a\.tar\.000 is 1048576: it is truncated or from another set/);
  // A plain tar whose first header was damaged.
  const bad = path.join(dir, 'bad.tar');
  const bytes = fs.readFileSync(v0);
  bytes[10] = bytes[10]! ^ 0xff;
  fs.writeFileSync(bad, bytes.subarray(0, 4096));
  t.throws(() => scanArchive(VolumeSet.open([bad])), /no tar header at byte 0 of .*bad\.tar/);
  // A single file with a number that is not a volume's is a plain file.
  const dated = path.join(dir, 'images.20240101');
  fs.writeFileSync(dated, Buffer.alloc(1024));
  t.same(scanArchive(VolumeSet.open([dated])), { entries: [], end: 1024 });
});

t.test('a refused writer leaves no file; an abandoned one removes its partials', async (t) => {
  const dir = tmp(t);
  t.throws(() => new VolumeWriter(path.join(dir, 'x.tar'), 1000), /at least 1MiB/);
  const w = new VolumeWriter(path.join(dir, 'y.tar'), MiB);
  t.same(fs.readdirSync(dir), [], 'nothing opened before the first byte');
  await new Promise<void>((res, rej) => w.write(randomBytes(MiB + 10), (e) => (e ? rej(e) : res())));
  t.same(fs.readdirSync(dir).sort(), ['y.tar.000.partial', 'y.tar.001.partial']);
  await w.abort();
  t.same(fs.readdirSync(dir), []);
});

t.test('pre-flight: the bytes the cache lacks against max_size less what eviction may take', async (t) => {
  const { store, index } = await tempStore(t, { maxBytes: 10_000 });
  const pinnedBlob = await commitBlob(store, randomBytes(3000));
  const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MEDIA_TYPES.ociManifest, config: { digest: pinnedBlob }, layers: [] }));
  index.content.putManifest(sha256(manifest), MEDIA_TYPES.ociManifest, manifest, [pinnedBlob]);
  index.pins.pin('docker.io/library/p:1', sha256(manifest));
  const free1 = await commitBlob(store, randomBytes(2000));
  const busy = await commitBlob(store, randomBytes(1500));
  const reused = await commitBlob(store, randomBytes(1000));
  const w = await store.createWriter(busy); // a writer under way makes the digest busy
  t.teardown(() => w.abort());
  const incoming = randomBytes(4000);
  const entries = [
    { name: 'oci-layout', size: 30, type: '0', offset: 0 },
    { name: `blobs/sha256/${reused.slice(7)}`, size: 1000, type: '0', offset: 0 },
    { name: `blobs/sha256/${sha256(incoming).slice(7)}`, size: 4000, type: '0', offset: 0 },
    { name: `blobs/sha256/${sha256(incoming).slice(7)}`, size: 4000, type: '0', offset: 0 },
  ];
  const needs = importNeeds(store, entries);
  t.match(needs, { addBytes: 4000, addBlobs: 1, heldBlobs: 1 }, 'the held blob and the repeat are not counted');
  t.equal(evictableBytes(store, needs.digests), 2000, 'not the pinned blob, not the busy one, not the one the archive re-pins');
  // 7500 of blobs + the manifest + 4000 - 2000 evictable = 9680: fits under 10000.
  await t.resolves(checkImportRoom(store, { dir: '/cache', maxBytes: 10_000 }, needs));
  await t.rejects(checkImportRoom(store, { dir: '/cache', maxBytes: 9000 }, needs), {
    code: 'PREFLIGHT',
    message: 'not enough room under cache.max_size: the import needs 3.91KiB (1 blobs the cache lacks); the cache holds 7.5KiB of max_size 8.79KiB and eviction may free 1.95KiB (the rest is pinned or in use): raise cache.max_size to at least 9.46KiB, or release images with `berth unpin`; nothing was written',
  });
  void free1;
});
