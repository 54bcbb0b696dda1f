/**
 * Eviction through the content store, with real blob files and a real
 * index and a small max_size: least recently used first (by the access
 * times batched in memory, which eviction flushes first), pinned images
 * and everything they reference never, a blob being read not while it is.
 */
import t from 'tap';
import fs from 'node:fs';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import Database from 'better-sqlite3';
import { sha256 } from '../../src/oci/digest.js';
import { MEDIA_TYPES } from '../../src/oci/mediatypes.js';
import { BlobCache } from '../../src/cache/blobs.js';
import { DISK_RESERVE } from '../../src/cache/content-store.js';
import { FakeUpstream, commitBlob, counterValue, logger, readAll, tempStore } from '../harness/cache-fakes.js';

const KB = 1000;
const blob = () => randomBytes(KB);

t.test('least recently used goes first, by the access times eviction flushes first', async (t) => {
  // 3.5 blobs fit; the low watermark is 90% of that.
  const { store, index, files, metrics } = await tempStore(t, { maxBytes: 3500 });
  const a = await commitBlob(store, blob(), { accessedAt: 1000 });
  const b = await commitBlob(store, blob(), { accessedAt: 2000 });
  const c = await commitBlob(store, blob(), { accessedAt: 3000 });
  t.equal(await store.evictNow(), null, 'under max_size: nothing to do');

  // a is used again: only in memory so far (batched), its row still says 1000.
  store.touch(a, 4000);
  t.equal(index.content.getBlob(a)?.last_access, 1000, 'the use is batched, not yet written');

  const d = await commitBlob(store, blob(), { accessedAt: 5000 });
  const r = await store.evictNow();
  t.match(r, { before: 4000, evictedBlobs: 1, freedBytes: 1000, shortBy: 0 });
  t.equal(index.content.getBlob(b), undefined, 'b, the least recently used, went');
  t.equal(files.sizeOnDisk(b), null, 'and its file');
  for (const [name, dg] of [['a (used again)', a], ['c', c], ['d', d]] as const) {
    t.ok(index.content.getBlob(dg) && files.sizeOnDisk(dg) === KB, `${name} stays`);
  }
  t.equal(index.content.getBlob(a)?.last_access, 4000, 'the batched use was written before ranking');
  t.equal(await counterValue(metrics.evictions), 1, 'berth_cache_evictions_total');
  t.equal(store.totalBytes(), 3000);
});

t.test("a pinned image's blobs are never evicted, through an index and its manifest", async (t) => {
  const { store, index, files } = await tempStore(t, { maxBytes: 4000 });
  // The pinned blobs are the oldest: LRU alone would take them first.
  const p1 = await commitBlob(store, blob(), { accessedAt: 1000 });
  const p2 = await commitBlob(store, blob(), { accessedAt: 1100 });
  const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MEDIA_TYPES.ociManifest, config: { digest: p1 }, layers: [{ digest: p2 }] }));
  const m = sha256(manifest);
  index.content.putManifest(m, MEDIA_TYPES.ociManifest, manifest, [p1, p2]);
  const list = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MEDIA_TYPES.ociIndex, manifests: [{ digest: m }] }));
  const i = sha256(list);
  index.content.putManifest(i, MEDIA_TYPES.ociIndex, list, [m]);
  index.pins.pin('docker.io/library/app:v1', i);
  t.equal(index.pins.pinnedBytes(), 2 * KB);

  const u1 = await commitBlob(store, blob(), { accessedAt: 3000 });
  const u2 = await commitBlob(store, blob(), { accessedAt: 4000 });
  const r = await store.evictNow();
  t.match(r, { evictedBlobs: 1, evictedManifests: 0, shortBy: 0 }, 'over max_size: one blob is enough');
  t.equal(index.content.getBlob(u1), undefined, 'the unpinned, older one went');
  t.equal(files.sizeOnDisk(u1), null);
  t.ok(index.content.getBlob(u2), 'the newer one stays');
  for (const dg of [p1, p2]) t.ok(index.content.getBlob(dg) && files.sizeOnDisk(dg) === KB, 'a pinned blob stays though it is older');
  t.ok(index.content.hasManifest(m) && index.content.hasManifest(i), 'the pinned manifests stay');

  // Free everything eviction may take: only the pinned image is left, and eviction says it fell short.
  const all = await store.freeBytes(1e9);
  t.equal(index.content.getBlob(u2), undefined, 'unpinned content goes');
  for (const dg of [p1, p2]) t.ok(index.content.getBlob(dg) && files.sizeOnDisk(dg) === KB, 'the pinned blobs still stay');
  t.ok(index.content.hasManifest(m) && index.content.hasManifest(i));
  t.equal(all.shortBy, store.totalBytes(), 'what is left is reported as the shortfall');

  index.pins.unpin('docker.io/library/app:v1');
  await store.freeBytes(1e9);
  t.equal(index.content.getBlob(p1), undefined, 'unpinned, they may go');
  t.equal(store.totalBytes(), 0);
});

t.test('a blob with an open reader is skipped while it is open, taken once it closes', async (t) => {
  const { store, index, files } = await tempStore(t, { maxBytes: 2500 });
  const data = blob();
  const x = await commitBlob(store, data, { accessedAt: 1000 });
  const reader = store.track(x, fs.createReadStream(files.path(x)));
  await once(reader, 'readable');
  t.ok(store.isBusy(x), 'counted as being read');
  const y = await commitBlob(store, blob(), { accessedAt: 2000 });
  const z = await commitBlob(store, blob(), { accessedAt: 3000 });

  const r = await store.evictNow();
  t.match(r, { evictedBlobs: 1 });
  t.ok(index.content.getBlob(x) && files.sizeOnDisk(x) === KB, 'x, the oldest, is being read: skipped');
  t.equal(index.content.getBlob(y), undefined, 'y went instead');
  t.ok(index.content.getBlob(z));

  reader.destroy();
  await once(reader, 'close');
  t.notOk(store.isBusy(x), 'no longer read');
  const w = await commitBlob(store, blob(), { accessedAt: 4000 });
  const again = await store.evictNow();
  t.match(again, { evictedBlobs: 1 });
  t.equal(index.content.getBlob(x), undefined, 'x, closed and still the oldest, goes now');
  t.equal(files.sizeOnDisk(x), null);
  t.ok(index.content.getBlob(z) && index.content.getBlob(w));
});

t.test('a blob being written is not evicted under its writer', async (t) => {
  const { store, index, files } = await tempStore(t, { maxBytes: 2500 });
  const data = blob();
  const x = await commitBlob(store, data, { accessedAt: 1000 });
  // Another writer for the same digest (a re-fill) is under way.
  const w = await store.createWriter(x);
  t.ok(store.isBusy(x));
  await commitBlob(store, blob(), { accessedAt: 2000 });
  await commitBlob(store, blob(), { accessedAt: 3000 });
  await store.evictNow();
  t.ok(index.content.getBlob(x) && files.sizeOnDisk(x) === KB, 'skipped while its writer is open');
  await w.abort();
  t.notOk(store.isBusy(x), 'an aborted writer lets go');
});

// A fill hands its client the verified bytes before it commits: the commit (fsync, rename, index row)
// can meet a disk that filled up meanwhile. The rename needs no room, the row does: SQLITE_FULL there
// once left a blob file with no row (the disk-full e2e under load), which no reader, no eviction and no
// max_size accounting ever sees again until gc.
t.test('a commit whose index row cannot be written (disk full) leaves no blob file without its row', async (t) => {
  const { store, index, files } = await tempStore(t);
  const full = () => new Database.SqliteError('database or disk is full', 'SQLITE_FULL');
  const endPublish = index.content.endPublish.bind(index.content);
  let failNext = true;
  index.content.endPublish = (...args) => {
    if (failNext) {
      failNext = false;
      throw full();
    }
    endPublish(...args);
  };

  const data = blob();
  await t.rejects(commitBlob(store, data), { code: 'SQLITE_FULL' }, 'the commit fails');
  const x = sha256(data);
  t.equal(index.content.getBlob(x), undefined, 'not indexed');
  t.equal(files.sizeOnDisk(x), null, 'and not on disk either: the rename is undone');
  t.notOk(store.isBusy(x), 'the writer let go');
  t.same(fs.readdirSync(files.layout.tmpDir), [], 'no temp file left');

  // Once there is room, the same blob commits.
  t.equal(await commitBlob(store, data), x);
  t.ok(index.content.getBlob(x) && files.sizeOnDisk(x) === KB, 'committed on the next try');

  // A re-fill of a blob already indexed: its row stays, so its file must stay too.
  failNext = true;
  await t.rejects(commitBlob(store, data), { code: 'SQLITE_FULL' });
  t.ok(index.content.getBlob(x) && files.sizeOnDisk(x) === KB, 'an indexed blob keeps its file');
});

// On a full disk eviction itself may not be able to write the index (deleting a row needs room in the
// WAL too). A fill asking for room must then hear "no room" (its client gets the bytes streamed from the
// upstream, uncached), not an error (a 503 for a blob the upstream would have served).
t.test('making room on a full disk: eviction that cannot write the index means no room, not an error', async (t) => {
  // A disk with room for 1.5 blobs beside the reserve: one more needs half a blob evicted.
  const { store, index, files } = await tempStore(t, { diskBytes: DISK_RESERVE + 1.5 * KB });
  const x = await commitBlob(store, blob(), { accessedAt: 1000 });
  const deleteBlob = index.content.deleteBlob.bind(index.content);
  let tried = 0;
  index.content.deleteBlob = () => {
    tried++;
    throw new Database.SqliteError('database or disk is full', 'SQLITE_FULL');
  };
  t.equal(await store.ensureRoom(KB), false, 'no room');
  t.equal(tried, 1, 'eviction was tried (it could have made room)');
  t.ok(index.content.getBlob(x) && files.sizeOnDisk(x) === KB, 'nothing half evicted: row and file both stay');
  index.content.deleteBlob = deleteBlob;
  t.equal(await store.ensureRoom(KB), true, 'once the index can be written, x makes room');
  t.equal(index.content.getBlob(x), undefined);
});

// A blob that cannot fit even once everything evictable is gone must not flush the cache first:
// ensureRoom checks, then evicts (or takes the no-room path with nothing evicted).
t.test('making room on the disk: what cannot fit evicts nothing; what can evicts least recently used first', async (t) => {
  // A disk with room for 4 blobs beside the reserve.
  const { store, index, files } = await tempStore(t, { diskBytes: DISK_RESERVE + 4 * KB });
  const a = await commitBlob(store, blob(), { accessedAt: 1000 });
  const b = await commitBlob(store, blob(), { accessedAt: 2000 });
  const c = await commitBlob(store, blob(), { accessedAt: 3000 });
  const held = (dg: string) => Boolean(index.content.getBlob(dg)) && files.sizeOnDisk(dg) === KB;

  t.equal(await store.ensureRoom(KB), true, 'one blob fits as it is');
  t.ok(held(a) && held(b) && held(c), 'nothing evicted for it');

  t.equal(await store.ensureRoom(5 * KB), false, 'more than the disk even with all evicted: no room');
  t.ok(held(a) && held(b) && held(c), 'and nothing evicted for it');

  // b is being read: eviction may take only a and c (2 KB), with 1 KB free: 3 KB, not 3.5.
  const unhold = store.hold(b);
  t.equal(await store.ensureRoom(3.5 * KB), false, 'no room while b is read');
  t.ok(held(a) && held(b) && held(c), 'nothing evicted: a blob being read is not evictable');
  unhold();

  t.equal(await store.ensureRoom(2 * KB), true, 'two blobs fit once one is evicted');
  t.equal(index.content.getBlob(a), undefined, 'a, the least recently used, went');
  t.ok(held(b) && held(c), 'b and c stay');
});

t.test('a blob that cannot stay under max_size is not cached, and evicts nothing', async (t) => {
  // max_size 3500: eviction goes down to 3150, least recently used first, the newest blob last.
  const { store, index, files, metrics } = await tempStore(t, { maxBytes: 3500 });
  const up = new FakeUpstream('docker.io');
  const cache = new BlobCache(store, metrics, logger, { maxResumes: 0 });
  t.teardown(() => cache.drain(0));
  const held = [await commitBlob(store, blob(), { accessedAt: 1000 }), await commitBlob(store, blob(), { accessedAt: 2000 }), await commitBlob(store, blob(), { accessedAt: 3000 })];
  const all = () => held.every((dg) => index.content.getBlob(dg) && files.sizeOnDisk(dg) === KB);

  t.equal(await store.ensureRoom(3200), false, 'more than the low watermark: it would be evicted itself');
  t.equal(await store.ensureRoom(KB), true, 'one blob more fits once eviction trims the oldest');
  t.ok(all(), 'asking evicts nothing (eviction runs after the commit)');

  const big = randomBytes(4000);
  const d = up.putBlob('library/a', big);
  const h = await cache.get({ client: up, repository: 'library/a', digest: d, head: false });
  t.equal(h.source, 'upstream');
  t.same(await readAll(h.open!(0, h.size - 1)), big, 'the client gets the exact bytes, from the upstream');
  await cache.drain(60_000);
  await store.evictNow();
  t.equal(index.content.getBlob(d), undefined, 'the blob larger than max_size is not cached');
  t.ok(all(), 'the blobs the cache held are all still there');
});
