/**
 * The Mirror in process, with an upstream that counts its calls per kind
 * (as Distribution's proxyblobstore_test.go counts them on each side) and a
 * real content store on a temp dir: what the cache spares the upstream, what
 * it asks before handing out content cached through another repository, and
 * what it answers offline.
 */
import t from 'tap';
import fs from 'node:fs';
import { randomBytes } from 'node:crypto';
import type { Target } from '../../src/cache/mirror.js';
import { FakeUpstream, readAll, tempStore, testMirror } from '../harness/cache-fakes.js';

async function setup(t: { teardown(fn: () => unknown): void }) {
  const fx = await tempStore(t);
  const up = new FakeUpstream('docker.io');
  const mirror = testMirror(t, fx, [up]);
  const target = (name: string): Target => ({ ns: null, name });
  /** A GET answered in full: the handle and the bytes the client got. */
  const get = async (name: string, digest: string) => {
    const h = await mirror.blob(target(name), digest, { head: false });
    const body = await readAll(h.open!(0, h.size - 1));
    return { source: h.source, size: h.size, body };
  };
  const head = (name: string, digest: string) => mirror.blob(target(name), digest, { head: true });
  /** Fills under way are done (indexed and linked): waits on them, no timer. */
  const settled = () => mirror.drain(60_000);
  return { ...fx, up, mirror, target, get, head, settled };
}

t.test('a cold blob GET fills once; the next GET and HEAD are served from the cache', async (t) => {
  const { up, get, head, settled, index, files } = await setup(t);
  const data = randomBytes(300_000);
  const d = up.putBlob('library/a', data);

  const first = await get('library/a', d);
  t.equal(first.source, 'upstream');
  t.same(first.body, data, 'the cold GET streams the exact bytes');
  t.same(up.log, [`getBlob library/a ${d}`], 'one upstream GET, nothing else');
  await settled();
  t.match(index.content.getBlob(d), { size: data.length }, 'indexed');
  t.ok(index.content.isLinked('docker.io', 'library/a', d), 'linked to the repository it came through');
  t.same(fs.readFileSync(files.path(d)), data, 'on disk verbatim');

  up.reset();
  const second = await get('library/a', d);
  t.equal(second.source, 'cache');
  t.same(second.body, data, 'the warm GET serves the same bytes');
  const h = await head('library/a', d);
  t.equal(h.source, 'cache');
  t.equal(h.size, data.length);
  t.same(up.log, [], 'no upstream call for a warm GET or HEAD');

  up.down = true;
  const offline = await get('library/a', d);
  t.equal(offline.source, 'cache');
  t.same(offline.body, data, 'served with the upstream down');
  t.same(up.log, [], 'not even tried');
});

t.test('a blob cached through repository A is served to B only once the upstream confirms B has it', async (t) => {
  const { up, get, head, settled, index, mirror, target } = await setup(t);
  const data = randomBytes(100_000);
  const d = up.putBlob('library/a', data);
  await get('library/a', d);
  await settled();

  t.test('the upstream confirms: one HEAD for B, served from the cache, the link remembered', async (t) => {
    up.putBlob('library/b', data);
    up.reset();
    const r = await get('library/b', d);
    t.same(up.log, [`headBlob library/b ${d}`], 'exactly one HEAD for B, no GET');
    t.equal(r.source, 'cache');
    t.same(r.body, data);
    t.ok(index.content.isLinked('docker.io', 'library/b', d), 'B is linked now');

    up.reset();
    const again = await get('library/b', d);
    const h = await head('library/b', d);
    t.equal(again.source, 'cache');
    t.equal(h.source, 'cache');
    t.same(up.log, [], 'the second request through B makes no upstream call');
    up.down = true;
    t.same((await get('library/b', d)).body, data, 'a confirmed link holds offline');
    up.down = false;
  });

  t.test("docker.io's short name is the same repository: no question asked", async (t) => {
    up.reset();
    const r = await get('a', d);
    t.equal(r.source, 'cache');
    t.same(r.body, data);
    t.same(up.log, [], '"a" is library/a');
  });

  t.test('the upstream says B has no such blob: 404 BLOB_UNKNOWN, nothing served', async (t) => {
    up.reset();
    await t.rejects(mirror.blob(target('library/c'), d, { head: false }), { code: 'BLOB_UNKNOWN', status: 404 });
    await t.rejects(mirror.blob(target('library/c'), d, { head: true }), { code: 'BLOB_UNKNOWN', status: 404 }, 'HEAD too');
    t.same(up.log, [`headBlob library/c ${d}`, `headBlob library/c ${d}`], 'asked each time (a refusal is not remembered as a link), never a GET');
    t.notOk(index.content.isLinked('docker.io', 'library/c', d), 'not linked');
  });

  t.test('the upstream is down: B is refused with a 503, A is still served', async (t) => {
    up.down = true;
    t.teardown(() => {
      up.down = false;
    });
    up.reset();
    await t.rejects(mirror.blob(target('library/d'), d, { head: false }), { code: 'UNAVAILABLE', status: 503 });
    t.same(up.log, [`headBlob library/d ${d}`], 'one HEAD tried, no GET');
    t.notOk(index.content.isLinked('docker.io', 'library/d', d), 'not linked');
    up.reset();
    t.same((await get('library/a', d)).body, data, 'the repository it came through is served offline');
    t.same(up.log, []);
  });
});

t.test('a fill under way through A is not joined by B before the upstream confirms B', async (t) => {
  const { up, get, settled, mirror, target } = await setup(t);
  const data = randomBytes(200_000);
  const d = up.putBlob('library/a', data);
  let release!: () => void;
  up.hold = new Promise((r) => (release = r));
  const asked = up.next('getBlob');
  const a = get('library/a', d);
  await asked;
  t.equal(mirror.fillsInFlight, 1, 'the fill through A is under way (its upstream GET is held)');
  await t.rejects(mirror.blob(target('library/x'), d, { head: false }), { code: 'BLOB_UNKNOWN' }, 'B unknown upstream: refused, not joined');
  up.putBlob('library/b', data);
  const b = get('library/b', d);
  release();
  up.hold = null;
  const [ra, rb] = await Promise.all([a, b]);
  t.same(ra.body, data);
  t.same(rb.body, data);
  t.equal(rb.source, 'coalesced', 'B joined the fill once confirmed');
  t.equal(up.count('getBlob'), 1, 'one transfer for both');
  t.same(
    up.log.filter((l) => l.startsWith('headBlob')),
    [`headBlob library/x ${d}`, `headBlob library/b ${d}`],
    'one HEAD per foreign repository',
  );
  await settled();
});

t.test('a manifest cached through A is served by digest to B only once the upstream confirms B has it', async (t) => {
  const { up, mirror, target, index } = await setup(t);
  const m = up.putManifest('library/a', 'v1', { schemaVersion: 2, n: 1 });
  const manifest = (name: string, ref: string) => mirror.manifest(target(name), ref, { byDigest: ref.startsWith('sha256:'), head: false, accept: undefined });
  const first = await manifest('library/a', 'v1');
  t.equal(first.digest, m);

  up.reset();
  const own = await manifest('library/a', m);
  t.equal(own.source, 'cache');
  t.same(up.log, [], 'by digest through the repository it came through: no upstream call');

  up.putManifest('library/b', 'other', { schemaVersion: 2, n: 1 });
  up.reset();
  const b = await manifest('library/b', m);
  t.equal(b.source, 'cache');
  t.same(b.body, first.body, 'the same bytes');
  t.same(up.log, [`headManifest library/b ${m}`], 'one HEAD for B, no GET');
  t.ok(index.content.isLinked('docker.io', 'library/b', m));
  up.reset();
  await manifest('library/b', m);
  t.same(up.log, [], 'remembered');

  up.reset();
  await t.rejects(manifest('library/c', m), { code: 'MANIFEST_UNKNOWN', status: 404 });
  t.same(up.log, [`headManifest library/c ${m}`], 'refused on the upstream\'s word, nothing fetched');
  up.down = true;
  await t.rejects(manifest('library/d', m), { code: 'UNAVAILABLE', status: 503 }, 'offline, an unconfirmed repository is refused');
});

t.test('a manifest evicted from the index but still in memory keeps its per-repository check', async (t) => {
  const { up, mirror, target, index } = await setup(t);
  const m = up.putManifest('library/a', 'v1', { schemaVersion: 2, n: 2 });
  const manifest = (name: string, ref: string) => mirror.manifest(target(name), ref, { byDigest: ref.startsWith('sha256:'), head: false, accept: undefined });
  await manifest('library/a', 'v1');
  index.content.deleteManifest(m); // as eviction does; the in-memory copy stays
  t.equal(index.content.getManifest(m), undefined, 'no longer in the index');
  up.reset();
  await t.rejects(manifest('library/c', m), { code: 'MANIFEST_UNKNOWN', status: 404 }, 'not served from memory through another repository');
  t.same(up.log, [`headManifest library/c ${m}`], 'the upstream was asked about that repository');
  up.down = true;
  await t.rejects(manifest('library/d', m), { code: 'UNAVAILABLE', status: 503 }, 'offline, refused too');
});

t.test('tags/list: from the upstream when up; offline, the tags berth has seen (stale), else 503', async (t) => {
  const { up, mirror, target } = await setup(t);
  up.putManifest('library/app', 'v1', { schemaVersion: 2, n: 1 });
  up.putManifest('library/app', 'v2', { schemaVersion: 2, n: 2 });
  up.putManifest('library/app', 'v3', { schemaVersion: 2, n: 3 });
  for (const tag of ['v1', 'v2']) await mirror.manifest(target('library/app'), tag, { byDigest: false, head: false, accept: undefined });

  up.reset();
  const live = await mirror.tags(target('library/app'), '');
  t.equal(live.stale, false);
  t.same(JSON.parse(live.body.toString()), { name: 'library/app', tags: ['v1', 'v2', 'v3'] }, "the upstream's list");
  t.same(up.log, ['getTags library/app '], 'one upstream call');

  up.down = true;
  up.reset();
  const offline = await mirror.tags(target('library/app'), '');
  t.equal(offline.stale, true);
  t.same(JSON.parse(offline.body.toString()), { name: 'library/app', tags: ['v1', 'v2'] }, 'the tags berth has seen, not v3');
  t.same(up.log, ['getTags library/app '], 'the upstream was tried first');

  await t.rejects(mirror.tags(target('library/never'), ''), { code: 'UNAVAILABLE', status: 503 }, 'no known tags offline: 503');

  up.down = false;
  await t.rejects(mirror.tags(target('library/never'), ''), { code: 'NAME_UNKNOWN', status: 404 }, 'the upstream knows no such repository: 404');
});

t.test('a blob the disk lost: a GET fills it again, a HEAD does not claim it is cached', async (t) => {
  const fx = await setup(t);
  const { up, get, head, settled, index, files } = fx;
  const data = randomBytes(150_000);
  const d = up.putBlob('library/a', data);
  await get('library/a', d);
  await settled();
  const before = index.content.getBlob(d);
  t.ok(before, 'indexed');

  fs.rmSync(files.path(d));
  up.down = true;
  up.reset();
  await t.rejects(get('library/a', d), { code: 'UNAVAILABLE', status: 503 }, 'offline, a lost blob is a 503, not an empty or broken body');
  t.same(up.log, [`getBlob library/a ${d}`], 'the upstream was asked for it');
  t.equal(index.content.getBlob(d), undefined, 'the row of the lost file is dropped, not kept to be served');
  t.equal(fx.store.totalBytes(), 0, 'nor counted against max_size');

  up.down = false;
  up.reset();
  const refill = await get('library/a', d);
  t.equal(refill.source, 'upstream', 'not served from a file that is gone');
  t.same(refill.body, data);
  t.same(up.log, [`getBlob library/a ${d}`], 'one upstream GET');
  await settled();
  t.match(index.content.getBlob(d), { size: data.length }, 'a new row');
  t.ok(index.content.getBlob(d)!.created_at >= before!.created_at, 'written by the re-fill');
  t.same(fs.readFileSync(files.path(d)), data, 'and the file');
  up.reset();
  t.equal((await get('library/a', d)).source, 'cache', 'warm again');
  t.same(up.log, []);

  fs.rmSync(files.path(d));
  up.reset();
  const h = await head('library/a', d);
  t.equal(h.source, 'upstream', 'HEAD asked the upstream instead of claiming a cached blob');
  t.equal(h.size, data.length);
  t.same(up.log, [`headBlob library/a ${d}`]);
  t.equal(index.content.getBlob(d), undefined, 'the row of the lost file is dropped');

  up.down = true;
  await t.rejects(head('library/a', d), { code: 'UNAVAILABLE', status: 503 }, 'offline, a lost blob is not claimed either');
});

t.test(
  'a prefetched blob cached through another repository is linked to the prefetched one, so it is pulled offline',
  async (t) => {
    const { up, get, settled, mirror, target, index } = await setup(t);
    // A base layer, pulled first through library/debian, shared by library/nginx.
    const data = randomBytes(50_000);
    const d = up.putBlob('library/debian', data);
    up.putBlob('library/nginx', data);
    await get('library/debian', d);
    await settled();

    up.reset();
    const r = await mirror.ensureBlob(target('library/nginx'), d);
    t.same(r, { size: data.length, fetched: false }, 'already cached: not fetched again');
    t.same(up.log, [`headBlob library/nginx ${d}`], 'the upstream confirms library/nginx has it (one HEAD), as for a GET');
    t.ok(index.content.isLinked('docker.io', 'library/nginx', d), 'linked to the prefetched repository');

    up.down = true;
    const offline = await get('library/nginx', d).catch((e: unknown) => e as Error);
    t.equal((offline as { source?: string }).source, 'cache', `the prefetched image's layer is served offline (got ${(offline as Error).message ?? 'a body'})`);
  },
);

t.test(
  'a publish completed after a crash keeps the links it was committed with',
  async (t) => {
    const { up, get, index, files } = await setup(t);
    const data = randomBytes(20_000);
    const d = up.putBlob('library/a', data);
    // A fill through library/a that crashed after the rename, before the index transaction.
    const w = await files.createWriter(d, {
      journal: {
        beginPublish: (dg, at, links) => index.content.beginPublish(dg, at, links),
        endPublish: () => {
          throw new Error('crash');
        },
      },
    });
    await w.write(data);
    await t.rejects(w.commit({ expectedSize: data.length, links: [{ registry: 'docker.io', repository: 'library/a' }] }), { message: 'crash' });
    // Start-up completes it, as runtime.ts does.
    t.equal(index.content.recoverPublishes((dg) => files.sizeOnDisk(dg)), 1);
    t.match(index.content.getBlob(d), { size: data.length }, 'indexed');
    t.ok(index.content.isLinked('docker.io', 'library/a', d), 'linked to the repository that filled it');

    up.down = true;
    up.reset();
    const offline = await get('library/a', d).catch((e: unknown) => e as Error);
    t.equal((offline as { source?: string }).source, 'cache', `served offline through the repository that filled it (got ${(offline as Error).message ?? 'a body'})`);
  },
);
