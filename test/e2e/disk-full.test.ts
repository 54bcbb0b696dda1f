/**
 * A full disk: berth's cache directory on an 8 MiB tmpfs (root mounts it in a
 * temp dir; skipped with a message when that is not possible). A fill that
 * hits ENOSPC must give its client the bytes (streamed from upstream) or a
 * clean 503, never a wrong or silently short answer; nothing partial may be
 * indexed; eviction should free room; and the daemon keeps serving what it has.
 */
import t, { type Test } from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { startTokenServer } from '../harness/token-server.js';
import { startRegistry } from '../harness/registry.js';
import { makeImage, pushImage, readBlob } from '../harness/images.js';
import { startBerth } from '../harness/berth.js';
import { run, tempDirFor, waitFor } from '../harness/procs.js';
import { fetchOnce, inspectCache, outcomeOf } from '../harness/fault-proxy.js';

// Regressions guarded here: a fill hitting ENOSPC once failed its readers after the 200 went out; a new
// manifest on a full disk was a 500; SQLITE_FULL in the batched index flush killed the daemon; ENOSPC
// never triggered eviction.

/** Mounts an 8 MiB tmpfs on `dir` (unmounted in `t`'s teardown); returns why not, or null. */
async function mountTmpfs(t: Test, dir: string): Promise<string | null> {
  if (process.getuid?.() !== 0) return 'not root, so no tmpfs can be mounted';
  fs.mkdirSync(dir, { recursive: true });
  const r = await run('mount', ['-t', 'tmpfs', '-o', 'size=8m', 'tmpfs', dir]);
  if (r.code !== 0) return `mount -t tmpfs failed: ${r.stderr.trim() || `exit ${r.code}`}`;
  t.teardown(async () => {
    const u = await run('umount', [dir]);
    if (u.code !== 0) await run('umount', ['-l', dir]);
  });
  return null;
}

const work = await tempDirFor(t, 'berth-diskfull');
const mnt = path.join(work, 'fs');
const noTmpfs = await mountTmpfs(t, mnt);

/** Writes a file until the filesystem says ENOSPC; returns its size. */
function fillUp(file: string): number {
  const fd = fs.openSync(file, 'w');
  let size = 0;
  try {
    for (const chunk of [1 << 20, 64 << 10, 4 << 10, 512]) {
      const buf = Buffer.alloc(chunk, 0x5a);
      for (;;) {
        try {
          size += fs.writeSync(fd, buf);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'ENOSPC') break;
          throw err;
        }
      }
    }
  } finally {
    fs.closeSync(fd);
  }
  return size;
}

t.test('a cache on a full disk', { skip: noTmpfs ? `needs a small tmpfs for the cache dir: ${noTmpfs}` : false }, async (t) => {

  const token = await startTokenServer(t, { users: { pusher: 'push-secret' } });
  const registry = await startRegistry(t, { token });
  const small = await makeImage(path.join(work, 'small'), { layers: 2, layerSize: 200_000, seed: 'df-small', tag: 'v1' });
  const fill = await makeImage(path.join(work, 'fill'), { layers: 4, layerSize: 2_000_000, seed: 'df-fill', tag: 'v1' });
  const big = await makeImage(path.join(work, 'big'), { layers: 1, layerSize: 12_000_000, seed: 'df-big', tag: 'v1' });
  for (const [img, repo] of [[small, 'library/small'], [fill, 'library/fill'], [big, 'library/big']] as const) {
    await pushImage(img.layoutDir, 'v1', registry, `${repo}:v1`, { creds: 'pusher:push-secret' });
  }
  const berth = await startBerth(t, { upstreams: [{ registry: 'docker.io', url: registry.url }], cacheDir: path.join(mnt, 'cache') });
  const url = (repo: string, kind: 'blobs' | 'manifests', ref: string) => `${berth.url}/v2/${repo}/${kind}/${ref}?ns=docker.io`;
  const expect = (img: typeof small, d: string) => readBlob(img.layoutDir, d);

  // What must keep working throughout: a cached image.
  const smallBlobs = [...small.manifests[0]!.layers, small.manifests[0]!.config];
  t.equal((await fetchOnce(url('library/small', 'manifests', 'v1'))).status, 200, 'small image manifest cached');
  for (const d of smallBlobs) t.equal(outcomeOf(await fetchOnce(url('library/small', 'blobs', d)), await expect(small, d)), 'exact', `small blob ${d.slice(7, 19)} cached`);
  const servesCached = async (t: Test, when: string) => {
    const m = await fetchOnce(url('library/small', 'manifests', 'v1'));
    t.equal(m.status, 200, `${when}: the cached manifest is served`);
    for (const d of smallBlobs) t.equal(outcomeOf(await fetchOnce(url('library/small', 'blobs', d)), await expect(small, d)), 'exact', `${when}: cached blob ${d.slice(7, 19)} served whole`);
    t.equal((await fetchOnce(`${berth.url}/healthz`)).status, 200, `${when}: healthz`);
    t.notOk(berth.service.hasExited(), `${when}: the daemon is alive`);
  };
  // A client has a fill's bytes once they are verified, before the commit (fsync, rename, index row):
  // what the cache holds is looked at once berth's own gauge says no fill is under way.
  const fillsInFlight = async () => Number(/^berth_fills_in_flight (\d+)/m.exec((await fetchOnce(`${berth.url}/metrics`, { timeoutMs: 5_000 })).body.toString('utf8'))?.[1] ?? 0);
  const settled = () => waitFor('fills under way to commit or fail', async () => (await fillsInFlight()) === 0, { timeoutMs: 30_000, intervalMs: 50 });
  const clean = async (t: Test, when: string, absent: string[]) => {
    await settled();
    const report = await inspectCache(berth.cacheDir);
    t.same(report.problems, [], `${when}: no temp file left, nothing partial indexed, index and disk agree`);
    t.same(absent.filter((d) => report.indexed.has(d) || report.files.has(d)), [], `${when}: the failed blob is neither indexed nor on disk`);
  };

  await t.test('a fill bigger than the disk', async (t) => {
    const layer = big.manifests[0]!.layers[0]!;
    const got = await fetchOnce(url('library/big', 'blobs', layer));
    const o = outcomeOf(got, await expect(big, layer));
    t.not(o, 'wrong', `never a wrong complete answer (${got.status}, ${got.body.length} bytes, ${o})`);
    t.ok(o === 'exact' || (o === 'error' && got.status === 503), `the client got its bytes or a clean 503 (got ${o}, ${got.status}, ${got.body.length} bytes)`);
    t.ok(berth.logs().some((l) => JSON.stringify(l).includes('ENOSPC')), 'berth saw ENOSPC (the fault under test) and logged it');
    await clean(t, 'after ENOSPC', [layer]);
    const report = await inspectCache(berth.cacheDir);
    t.same(smallBlobs.filter((d) => !report.indexed.has(d)), [], 'a blob that can never fit evicted nothing: the cached blobs are all still held');
    await servesCached(t, 'after ENOSPC');
  });

  await t.test('a disk with no room left at all', async (t) => {
    const filler = path.join(mnt, 'filler');
    const filled = fillUp(filler);
    t.teardown(() => fs.rmSync(filler, { force: true }));
    t.comment(`filler took ${filled} bytes`);
    await servesCached(t, 'disk full');

    const [layer0] = fill.manifests[0]!.layers;
    const got = await fetchOnce(url('library/fill', 'blobs', layer0!));
    const o = outcomeOf(got, await expect(fill, layer0!));
    t.not(o, 'wrong', `a new blob: never a wrong complete answer (${got.status}, ${got.body.length} bytes)`);
    t.ok(o === 'exact' || (o === 'error' && got.status === 503), `a new blob: its bytes or a clean 503 (got ${o}, ${got.status})`);

    const m = await fetchOnce(url('library/fill', 'manifests', fill.manifestDigest));
    t.not(outcomeOf(m, await readBlob(fill.layoutDir, fill.manifestDigest)), 'wrong', `a new manifest: never a wrong answer (${m.status})`);
    t.ok(m.status === 200 || m.status === 503, `a new manifest: served or a clean 503, not a 500 (${m.status})`);

    // berth writes batched access times every few seconds: wait until that write happened (or failed).
    const db = new Database(path.join(berth.cacheDir, 'index.db'), { readonly: true, fileMustExist: true });
    const lastAccess = () => (db.prepare('SELECT last_access FROM blobs WHERE digest = ?').get(smallBlobs[0]) as { last_access: number } | undefined)?.last_access ?? 0;
    const before = lastAccess();
    const touchedAt = Date.now();
    t.equal(outcomeOf(await fetchOnce(url('library/small', 'blobs', smallBlobs[0]!)), await expect(small, smallBlobs[0]!)), 'exact', 'a cache hit on a full disk');
    await waitFor('the access-time flush, or berth exiting', () => lastAccess() > before || berth.service.hasExited(), { timeoutMs: 15_000, intervalMs: 100 }).catch(() => undefined);
    db.close();
    const crashed = berth.service.hasExited();
    t.notOk(crashed, `the daemon survived its index writes on a full disk (${Date.now() - touchedAt} ms later)`);
    if (!crashed) {
      await servesCached(t, 'disk full, after an index write');
      await clean(t, 'disk full', [layer0!]);
    }

    fs.rmSync(filler);
    if (crashed) {
      // Go on with the guarantees after it on a live daemon (systemd would restart it too).
      t.comment(`berth died: ${/SqliteError[^\n]*/.exec(berth.service.output())?.[0] ?? 'see its output'}; restarting it`);
      await berth.restart();
      await clean(t, 'restarted after the crash', [layer0!]);
    }
    const again = await fetchOnce(url('library/fill', 'blobs', layer0!));
    t.equal(outcomeOf(again, await expect(fill, layer0!)), 'exact', 'room again: the blob fills');
    await settled();
    t.ok((await inspectCache(berth.cacheDir)).indexed.has(layer0!), 'and is cached');
  });

  await t.test('eviction frees room for a fill that hit ENOSPC', async (t) => {
    // Cached now: small (~0.4 MB) and fill's first layer (2 MB). Two more layers take the disk to ~6.5 of 8 MiB.
    const [, l1, l2, l3] = fill.manifests[0]!.layers;
    for (const d of [l1!, l2!]) t.equal(outcomeOf(await fetchOnce(url('library/fill', 'blobs', d)), await expect(fill, d)), 'exact', `${d.slice(7, 19)} cached`);
    const first = await fetchOnce(url('library/fill', 'blobs', l3!));
    t.not(outcomeOf(first, await expect(fill, l3!)), 'wrong', `the fill that does not fit: never a wrong answer (${first.status}, ${first.body.length} bytes)`);
    const second = await fetchOnce(url('library/fill', 'blobs', l3!));
    t.equal(outcomeOf(second, await expect(fill, l3!)), 'exact', `a second try finds room: least recently used blobs were evicted (${second.status}, ${second.body.length} bytes)`);
    await clean(t, 'after eviction', []);
    t.notOk(berth.service.hasExited(), 'the daemon is alive');
    t.equal((await fetchOnce(`${berth.url}/healthz`)).status, 200, 'healthz');
  });
});
