/**
 * Air-gapped sites: prefetch and pins, export/import (berth's and skopeo's
 * archives), bad tars refused with nothing kept, verify, gc, status, unpin —
 * with real containerd, Distribution and skopeo.
 */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';
import Database from 'better-sqlite3';
import { startTokenServer } from '../harness/token-server.js';
import { cacheState } from '../harness/cache-state.js';
import { readTar, writeTar } from '../harness/tar.js';
import { startRegistry } from '../harness/registry.js';
import { makeImage, pushImage } from '../harness/images.js';
import { startContainerd, writeHostsToml } from '../harness/containerd.js';
import { startBerth, type Berth } from '../harness/berth.js';
import { freePort, run, tempDirFor } from '../harness/procs.js';

t.test('air-gapped sites with real containerd, Distribution and skopeo', async (t) => {
  const token = await startTokenServer(t, { users: { pusher: 'push-secret' } });
  const registry = await startRegistry(t, { token });
  const work = await tempDirFor(t, 'berth-airgap');
  const creds = { creds: 'pusher:push-secret' };
  const app = await makeImage(path.join(work, 'app'), { layers: 3, layerSize: 150_000, seed: 'airgap-app', tag: 'v1' });
  const multi = await makeImage(path.join(work, 'multi'), { layers: 2, layerSize: 80_000, seed: 'airgap-multi', tag: 'v1', platforms: ['linux/amd64', 'linux/arm64'] });
  await pushImage(app.layoutDir, 'v1', registry, 'library/app:v1', creds);
  await pushImage(multi.layoutDir, 'v1', registry, 'library/multi:v1', creds);

  const site = await startBerth(t, { upstreams: [{ registry: 'docker.io', url: registry.url }] });
  const ctd = await startContainerd(t);
  const hostsDir = path.join(work, 'certs.d');
  await writeHostsToml(hostsDir, 'docker.io', site.url);

  await t.test('prefetch while the upstream is up, pull while it is down', async (t) => {
    const r = await site.cli(['prefetch', 'docker.io/library/app:v1', 'multi:v1', '--platform', 'linux/amd64', '--json']);
    t.equal(r.code, 0, r.stderr);
    const results = JSON.parse(r.stdout) as { image: string; digest: string; blobs: number }[];
    t.same(results.map((x) => x.image), ['docker.io/library/app:v1', 'docker.io/library/multi:v1']);
    t.equal(results[0]!.digest, app.manifestDigest);
    t.equal(results[0]!.blobs, 4, '3 layers and a config');
    await registry.stop();
    const pull = await ctd.pull('docker.io/library/app:v1', { hostsDir });
    t.equal(pull.code, 0, `pull with the upstream down: ${pull.stderr}`);
    const pull2 = await ctd.pull('docker.io/library/multi:v1', { hostsDir, platform: 'linux/amd64' });
    t.equal(pull2.code, 0, `multi-platform pull with the upstream down: ${pull2.stderr}`);
    const status = JSON.parse((await site.cli(['status', '--json'])).stdout) as { daemon: { running: boolean }; cache: { pinnedImages: number; blobs: number }; upstreams: { reachable: boolean }[] };
    t.equal(status.daemon.running, true);
    t.equal(status.cache.pinnedImages, 2);
    t.ok(status.cache.blobs >= 7);
    t.equal(status.upstreams[0]!.reachable, false, 'status sees the upstream down');
    await registry.start();
  });

  const exported = path.join(work, 'site.tar');
  await t.test('export from one berth; skopeo reads it', async (t) => {
    const r = await site.cli(['export', 'docker.io/library/app:v1', 'docker.io/library/multi:v1', '-o', exported]);
    t.equal(r.code, 0, r.stderr);
    t.match(r.stdout, /wrote .*site\.tar/);
    const entries = await readTar(exported);
    t.ok(entries.some((e) => e.name === 'oci-layout'));
    const index = JSON.parse(entries.find((e) => e.name === 'index.json')!.data.toString()) as { manifests: { digest: string; annotations: Record<string, string> }[] };
    t.same(index.manifests.map((m) => m.annotations['org.opencontainers.image.ref.name']), ['docker.io/library/app:v1', 'docker.io/library/multi:v1']);
    t.equal(index.manifests[0]!.digest, app.manifestDigest);
    for (const e of entries.filter((x) => x.name.startsWith('blobs/sha256/'))) {
      t.equal('sha256:' + createHash('sha256').update(e.data).digest('hex'), 'sha256:' + e.name.slice('blobs/sha256/'.length), `${e.name} hashes to its name`);
    }
    const copy = await run('skopeo', ['copy', `oci-archive:${exported}:docker.io/library/app:v1`, `dir:${path.join(work, 'skopeo-out')}`]);
    t.equal(copy.code, 0, `skopeo reads berth's export: ${copy.stderr}`);
  });

  const deadPort = await freePort();
  const fresh = await startBerth(t, { upstreams: [{ registry: 'docker.io', url: `http://127.0.0.1:${deadPort}` }] });
  const freshHosts = path.join(work, 'certs.d-fresh');
  await writeHostsToml(freshHosts, 'docker.io', fresh.url);

  await t.test('import into a fresh berth with no upstream at all, pull with containerd', async (t) => {
    const r = await fresh.cli(['import', exported, '--json']);
    t.equal(r.code, 0, r.stderr);
    const res = JSON.parse(r.stdout) as { images: { name: string; tagged: boolean }[] };
    t.same(res.images.map((i) => [i.name, i.tagged]), [['docker.io/library/app:v1', true], ['docker.io/library/multi:v1', true]]);
    const idx = new Database(path.join(fresh.cacheDir, 'index.db'), { readonly: true });
    const linked = (repo: string, d: string) => idx.prepare('SELECT 1 FROM links WHERE registry = ? AND repository = ? AND digest = ?').get('docker.io', repo, d) !== undefined;
    t.ok(linked('library/app', app.manifests[0]!.layers[0]!), "an image's content is linked to its own name");
    t.notOk(linked('library/multi', app.manifests[0]!.layers[0]!), "and not to another image's name in the same archive");
    idx.close();
    await ctd.forget();
    const pull = await ctd.pull('docker.io/library/app:v1', { hostsDir: freshHosts });
    t.equal(pull.code, 0, `pull from the imported cache: ${pull.stderr}`);
    const pull2 = await ctd.pull(`docker.io/library/multi@${multi.manifestDigest}`, { hostsDir: freshHosts, platform: 'linux/amd64' });
    t.equal(pull2.code, 0, `pull by digest from the imported cache: ${pull2.stderr}`);
  });

  await t.test("berth imports skopeo's archive", async (t) => {
    const archive = path.join(work, 'skopeo.tar');
    const copy = await run('skopeo', ['copy', '--src-tls-verify=false', '--src-creds', 'pusher:push-secret', `docker://${registry.host}/library/multi:v1`, `oci-archive:${archive}:docker.io/library/skopeo-multi:v2`]);
    t.equal(copy.code, 0, copy.stderr);
    const r = await fresh.cli(['import', archive]);
    t.equal(r.code, 0, r.stderr);
    t.match(r.stdout, /docker\.io\/library\/skopeo-multi:v2@sha256:[a-f0-9]{64}\s+pinned, tagged/);
    await ctd.forget();
    const pull = await ctd.pull('docker.io/library/skopeo-multi:v2', { hostsDir: freshHosts });
    t.equal(pull.code, 0, `pull of the skopeo-made archive: ${pull.stderr}`);
  });

  await t.test('bad tars are refused with the reason and leave the cache unchanged', async (t) => {
    const good = await readTar(exported);
    const blobEntry = good.find((e) => e.name.startsWith('blobs/sha256/') && e.data.length > 10_000)!;
    const layerName = blobEntry.name;
    const cases: { name: string; entries: Parameters<typeof writeTar>[1]; why: RegExp }[] = [
      { name: 'bad digest', entries: good.map((e) => (e.name === layerName ? { name: e.name, data: Buffer.concat([e.data.subarray(0, 100), Buffer.from([e.data[100]! ^ 0xff]), e.data.subarray(101)]) } : { name: e.name, data: e.data })), why: /does not match its digest/ },
      { name: 'path outside the layout', entries: [...good.map((e) => ({ name: e.name, data: e.data })), { name: '../evil', data: Buffer.from('x') }], why: /outside the layout/ },
      { name: 'absolute path', entries: [{ name: '/etc/evil', data: Buffer.from('x') }, ...good.map((e) => ({ name: e.name, data: e.data }))], why: /absolute path/ },
      { name: 'symlink', entries: [...good.map((e) => ({ name: e.name, data: e.data })), { name: 'blobs/sha256/' + 'a'.repeat(64), type: 'symlink', linkname: '/etc/passwd' }], why: /symlink/ },
      { name: 'hard link', entries: [...good.map((e) => ({ name: e.name, data: e.data })), { name: 'blobs/sha256/' + 'b'.repeat(64), type: 'link', linkname: layerName }], why: /link/ },
      { name: 'missing blob', entries: good.filter((e) => e.name !== layerName).map((e) => ({ name: e.name, data: e.data })), why: /missing from the archive/ },
    ];
    const before = cacheState(fresh.cacheDir);
    for (const c of cases) {
      const file = path.join(work, `bad-${c.name.replace(/ /g, '-')}.tar`);
      await writeTar(file, c.entries);
      const r = await fresh.cli(['import', file]);
      t.equal(r.code, 1, `${c.name}: refused`);
      t.match(r.stderr, c.why, `${c.name}: says why (${r.stderr.trim()})`);
      t.same(cacheState(fresh.cacheDir), before, `${c.name}: cache unchanged`);
    }
    const truncated = path.join(work, 'bad-truncated.tar');
    const whole = fs.readFileSync(exported);
    fs.writeFileSync(truncated, whole.subarray(0, Math.floor(whole.length / 2)));
    const r = await fresh.cli(['import', truncated]);
    t.equal(r.code, 1, 'truncated: refused');
    t.match(r.stderr, /truncated/, `truncated: says why (${r.stderr.trim()})`);
    t.same(cacheState(fresh.cacheDir), before, 'truncated: cache unchanged');
    t.notOk(fs.existsSync(path.join(path.dirname(fresh.cacheDir), 'evil')), 'nothing written outside the cache');
  });

  await t.test('verify quarantines a corrupted blob; gc removes unreferenced files; unpin', async (t) => {
    const layer = app.manifests[0]!.layers[0]!;
    const file = path.join(fresh.cacheDir, 'blobs/sha256', layer.slice(7, 9), layer.slice(7));
    const bytes = fs.readFileSync(file);
    bytes.writeUInt8(bytes.readUInt8(7) ^ 0xff, 7);
    fs.writeFileSync(file, bytes);
    const v1 = await fresh.cli(['verify', '--json']);
    t.equal(v1.code, 1, 'verify fails');
    const res = JSON.parse(v1.stdout) as { corrupt: { digest: string }[] };
    t.same(res.corrupt.map((c) => c.digest), [layer]);
    t.notOk(fs.existsSync(file), 'moved out of blobs/');
    t.equal(fs.readdirSync(path.join(fresh.cacheDir, 'quarantine')).length, 1, 'into quarantine/');
    t.equal((await fresh.cli(['verify'])).code, 0, 'a second verify is clean');
    const orphan = path.join(fresh.cacheDir, 'blobs/sha256/ab', 'ab' + '0'.repeat(62));
    fs.mkdirSync(path.dirname(orphan), { recursive: true });
    fs.writeFileSync(orphan, 'orphan');
    const old = new Date(Date.now() - 3600_000);
    fs.utimesSync(orphan, old, old);
    const gc = await fresh.cli(['gc', '--json']);
    t.equal(gc.code, 0, gc.stderr);
    t.equal((JSON.parse(gc.stdout) as { orphanFilesRemoved: number }).orphanFilesRemoved, 1);
    t.notOk(fs.existsSync(orphan));
    // A crash between a blob's rename and its index row: verify indexes the intact file again.
    const lost = app.manifests[0]!.layers[1]!;
    const lostFile = path.join(fresh.cacheDir, 'blobs/sha256', lost.slice(7, 9), lost.slice(7));
    const db = new Database(path.join(fresh.cacheDir, 'index.db'));
    db.prepare('DELETE FROM blobs WHERE digest = ?').run(lost);
    db.close();
    fs.utimesSync(lostFile, old, old);
    const v3 = await fresh.cli(['verify', '--json']);
    t.equal(v3.code, 0, 'an intact orphan is not a problem');
    t.same((JSON.parse(v3.stdout) as { adopted: string[] }).adopted, [lost], 'it is indexed again');
    t.equal((await fresh.cli(['unpin', 'docker.io/library/app:v1'])).code, 0);
    t.equal((await fresh.cli(['unpin', 'app:v1'])).code, 1, 'not pinned any more');
  });
  await t.test('the daemon fetches and pins the [[prefetch]] list itself', async (t) => {
    const scheduled = await startBerth(t, {
      upstreams: [{ registry: 'docker.io', url: registry.url }],
      extra: { prefetch: [{ image: 'docker.io/library/app:v1', platforms: ['linux/amd64'] }] },
    });
    await scheduled.service.waitForOutput(/"msg":"prefetched"/, 30_000);
    const status = JSON.parse((await scheduled.cli(['status', '--json'])).stdout) as { cache: { pinnedImages: number; blobs: number } };
    t.equal(status.cache.pinnedImages, 1, 'pinned by the daemon');
    t.equal(status.cache.blobs, 4, 'all layers and the config cached');
  });
});
