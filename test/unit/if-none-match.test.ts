/**
 * If-None-Match with a blob's digest (its ETag) through the real registry
 * routes: a 304 that asks only whether the blob exists, as a HEAD does, so a
 * cold blob is not filled for a client that wants no body (docs/guarantees.md,
 * "Answers like a registry"; the status itself is compared with Distribution in
 * test/e2e/conformance.test.ts).
 */
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { Hono } from 'hono';
import type { AppEnv } from '../../src/http/app.js';
import { registerRegistryRoutes } from '../../src/http/registry-routes.js';
import { errorResponse } from '../../src/http/respond.js';
import { FakeUpstream, tempStore, testMirror } from '../harness/cache-fakes.js';

t.test("a cold blob asked with If-None-Match its digest: 304 after one upstream HEAD, no fill", async (t) => {
  const fx = await tempStore(t);
  const up = new FakeUpstream('docker.io');
  const mirror = testMirror(t, fx, [up]);
  const app = new Hono<AppEnv>();
  app.onError((err, c) => errorResponse(c, err));
  registerRegistryRoutes(app, mirror, fx.metrics);
  const digest = up.putBlob('library/a', randomBytes(100_000));

  for (const method of ['GET', 'HEAD']) {
    const res = await app.request(`/v2/library/a/blobs/${digest}`, { method, headers: { 'if-none-match': `"${digest}"` } });
    t.equal(res.status, 304, `${method}: 304`);
    t.equal(res.headers.get('etag'), `"${digest}"`);
    t.equal((await res.arrayBuffer()).byteLength, 0, `${method}: no body`);
  }
  t.equal(up.count('getBlob'), 0, 'the upstream was never asked for the bytes');
  t.equal(up.count('headBlob'), 2, 'only whether the blob exists');
  t.equal(mirror.fillsInFlight, 0, 'no fill under way');
  t.equal(fx.store.stat(digest), undefined, 'nothing cached');

  const other = await app.request(`/v2/library/a/blobs/${digest}`, { headers: { 'if-none-match': '"sha256:' + '0'.repeat(64) + '"' } });
  t.equal(other.status, 200, 'another ETag: the blob itself');
  t.equal((await other.arrayBuffer()).byteLength, 100_000);
});
