/**
 * The content store's robustness at its edges, with real blob files and a
 * real index: an error that is not "the file is gone" (fd exhaustion, EIO,
 * a path the kernel refuses) fails the request and keeps the blob's row;
 * only ENOENT (and ENOTDIR) make berth forget a blob it holds.
 */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Target } from '../../src/cache/mirror.js';
import { renderError } from '../../src/oci/errors.js';
import { FakeUpstream, readAll, tempStore, testMirror } from '../harness/cache-fakes.js';

async function setup(t: { teardown(fn: () => unknown): void }, opts: { maxBytes?: number } = {}) {
  const fx = await tempStore(t, opts);
  const up = new FakeUpstream('docker.io');
  const mirror = testMirror(t, fx, [up]);
  const target: Target = { ns: null, name: 'library/a' };
  const get = async (digest: string) => {
    const h = await mirror.blob(target, digest, { head: false });
    return { source: h.source, body: await readAll(h.open!(0, h.size - 1)) };
  };
  const head = (digest: string) => mirror.blob(target, digest, { head: true });
  /** A blob pulled once through the mirror and settled in the cache. */
  const cached = async (size = 100_000) => {
    const data = randomBytes(size);
    const d = up.putBlob('library/a', data);
    await get(d);
    await mirror.drain(60_000);
    up.reset();
    return { d, data };
  };
  return { ...fx, up, mirror, get, head, cached };
}

const errno = (code: string) => Object.assign(new Error(`${code}: simulated`), { code, errno: -24, syscall: 'open' });

t.test('a cached blob that cannot be opened now (EMFILE): a clean 503, its row and file stay', async (t) => {
  const { files, index, up, get, cached } = await setup(t);
  const { d, data } = await cached();
  const openSync = files.openSync.bind(files);
  files.openSync = () => {
    throw errno('EMFILE');
  };
  const err = await get(d).then(
    () => null,
    (e: unknown) => e,
  );
  t.match(err, { code: 'UNAVAILABLE', status: 503 }, 'the request fails with a retryable 503');
  const rendered = renderError(err);
  t.equal(rendered.status, 503);
  t.match(rendered.body.errors[0]!.message, /EMFILE/, 'the message says why');
  t.notMatch(JSON.stringify(rendered.body), /at .*\.(ts|js):\d+/, 'no stack trace');
  t.ok(index.content.getBlob(d), 'the row stays: berth still holds the blob');
  t.same(up.log, [], 'the upstream is not asked (a 503 lets the client move on)');

  files.openSync = openSync;
  const again = await get(d);
  t.equal(again.source, 'cache', 'once fds are back, served from the cache');
  t.same(again.body, data);
  t.same(up.log, [], 'still without the upstream');
});

t.test('a cached blob whose stat fails with something else than ENOENT (ELOOP): HEAD is a 503, the row stays', async (t) => {
  const { dir, files, index, up, head, get, cached } = await setup(t);
  const { d, data } = await cached();
  // A real errno from the kernel: a symlink loop where the blob's path is looked up.
  const loop = path.join(dir, 'loop');
  fs.symlinkSync(loop, loop);
  const blobPath = files.layout.blobPath.bind(files.layout);
  files.layout.blobPath = (digest) => (digest === d ? loop : blobPath(digest));
  await t.rejects(head(d), { code: 'UNAVAILABLE', status: 503, message: /ELOOP/ }, 'HEAD: a retryable 503 naming the cause');
  t.ok(index.content.getBlob(d), 'the row stays');
  t.same(up.log, [], 'not claimed from the upstream either');

  files.layout.blobPath = blobPath;
  const h = await head(d);
  t.equal(h.source, 'cache', 'HEAD from the cache again');
  t.same((await get(d)).body, data);
});

t.test('a cached blob whose file is gone (ENOENT) is still forgotten and fetched again', async (t) => {
  const { files, index, up, get, head, cached } = await setup(t);
  const { d, data } = await cached();
  fs.rmSync(files.path(d));
  const h = await head(d);
  t.equal(h.source, 'upstream', 'HEAD asks the upstream');
  t.equal(index.content.getBlob(d), undefined, 'the row of the lost file is dropped');
  const g = await get(d);
  t.equal(g.source, 'upstream');
  t.same(g.body, data);
  t.ok(up.log.length > 0);
});
