/**
 * BlobCache coalescing, counted on both sides: however many clients ask for
 * a cold blob at once, the upstream sees one GET, and every client gets the
 * exact bytes.
 */
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { BlobCache } from '../../src/cache/blobs.js';
import { FakeUpstream, counterValue, logger, readAll, tempStore } from '../harness/cache-fakes.js';

async function setup(t: { teardown(fn: () => unknown): void }) {
  const fx = await tempStore(t);
  const up = new FakeUpstream('docker.io');
  const cache = new BlobCache(fx.store, fx.metrics, logger, { maxResumes: 0 });
  t.teardown(() => cache.drain(0));
  const req = (digest: string, head = false) => cache.get({ client: up, repository: 'library/a', digest, head });
  return { ...fx, up, cache, req };
}

t.test('20 concurrent GETs of one cold blob: one upstream GET, 19 coalesced, all bytes exact', async (t) => {
  const { up, cache, req, metrics, index } = await setup(t);
  const data = randomBytes(1024 * 1024 + 17);
  const d = up.putBlob('library/a', data);
  let release!: () => void;
  up.hold = new Promise((r) => (release = r));
  const asked = up.next('getBlob');

  const gets = Array.from({ length: 20 }, () => req(d));
  await asked;
  t.equal(cache.inFlight, 1, 'one fill under way while all 20 wait');
  release();
  up.hold = null;
  const handles = await Promise.all(gets);
  const bodies = await Promise.all(handles.map((h) => readAll(h.open!(0, h.size - 1))));

  t.equal(up.count('getBlob'), 1, 'exactly one upstream GET');
  t.equal(up.total, 1, 'and no other upstream call');
  t.ok(
    bodies.every((b) => b.equals(data)),
    'every client got the exact bytes',
  );
  t.same(
    handles.map((h) => h.source).sort(),
    ['upstream', ...Array.from({ length: 19 }, () => 'coalesced')].sort(),
    'one started the fill, 19 joined it',
  );
  t.equal(await counterValue(metrics.coalescedWaiters), 19, 'berth_coalesced_waiters_total counts the 19');
  t.equal(await counterValue(metrics.cacheRequests, { kind: 'blob', result: 'coalesced' }), 19);
  t.equal(await counterValue(metrics.cacheRequests, { kind: 'blob', result: 'miss' }), 1);

  await cache.drain(60_000);
  t.equal(cache.inFlight, 0);
  t.match(index.content.getBlob(d), { size: data.length }, 'cached once');
  up.reset();
  const warm = await req(d);
  t.equal(warm.source, 'cache');
  t.ok((await readAll(warm.open!(0, data.length - 1))).equals(data));
  t.same(up.log, [], 'the 21st GET costs the upstream nothing');
  t.equal(await counterValue(metrics.cacheRequests, { kind: 'blob', result: 'hit' }), 1);
});

t.test('20 concurrent GETs with the upstream down: one upstream attempt, 20 refusals (503), nothing cached', async (t) => {
  const { up, cache, req, index, files } = await setup(t);
  const data = randomBytes(10_000);
  const d = up.putBlob('library/a', data);
  up.down = true;
  const results = await Promise.allSettled(Array.from({ length: 20 }, () => req(d)));
  t.ok(
    results.every((r) => r.status === 'rejected' && (r.reason as { status?: number }).status === 503),
    'all 20 answered 503',
  );
  t.equal(up.count('getBlob'), 1, 'the failure was shared, not retried per client');
  await cache.drain(60_000);
  t.equal(cache.inFlight, 0, 'the failed fill is gone');
  t.equal(index.content.getBlob(d), undefined);
  t.equal(files.sizeOnDisk(d), null);

  up.down = false;
  const back = await req(d);
  t.equal(back.source, 'upstream', 'once the upstream is back, a new fill starts');
  t.ok((await readAll(back.open!(0, back.size - 1))).equals(data));
  t.equal(up.count('getBlob'), 2);
});

t.test('a cold HEAD asks the upstream with HEAD and caches nothing', async (t) => {
  const { up, req, index } = await setup(t);
  const data = randomBytes(5_000);
  const d = up.putBlob('library/a', data);
  const h = await req(d, true);
  t.equal(h.source, 'upstream');
  t.equal(h.size, data.length);
  t.equal(h.open, undefined, 'no body for a HEAD');
  t.same(up.log, [`headBlob library/a ${d}`], 'one HEAD, no GET');
  t.equal(index.content.getBlob(d), undefined, 'nothing cached');
  await t.rejects(req(`sha256:${'0'.repeat(64)}`, true), { code: 'BLOB_UNKNOWN', status: 404 });
});
