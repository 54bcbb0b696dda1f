/**
 * Issue 17: a tag that `berth import` moves (the CLI, another process writing
 * the same index) must be what the running daemon answers. The daemon had the
 * old digest in memory, so with the upstream down it kept serving that as
 * "stale" while the index held the imported one.
 *
 * Real parts: Distribution behind token auth, images pushed and archived with
 * skopeo, berth as a daemon plus its CLI, containerd pulling through berth.
 */
import t from 'tap';
import path from 'node:path';
import Database from 'better-sqlite3';
import { startTokenServer } from '../harness/token-server.js';
import { startRegistry } from '../harness/registry.js';
import { MANIFEST_ACCEPT, makeImage, pushImage, sha256Digest } from '../harness/images.js';
import { startContainerd, writeHostsToml } from '../harness/containerd.js';
import { startBerth } from '../harness/berth.js';
import { run, tempDirFor } from '../harness/procs.js';
import { fetchOnce } from '../harness/fault-proxy.js';

/** What containerd sends: any single-image manifest or index. */
t.test('issue 17: a tag moved by berth import is what the running daemon serves', async (t) => {
  const token = await startTokenServer(t, { users: { pusher: 'push-secret' } });
  const registry = await startRegistry(t, { token });
  const work = await tempDirFor(t, 'berth-moved-tag');
  const creds = 'pusher:push-secret';
  const a = await makeImage(path.join(work, 'a'), { layers: 2, layerSize: 50_000, seed: 'moved-tag-a', tag: 'v1' });
  const b = await makeImage(path.join(work, 'b'), { layers: 2, layerSize: 50_000, seed: 'moved-tag-b', tag: 'v1' });
  t.not(a.manifestDigest, b.manifestDigest, 'two different images');
  await pushImage(a.layoutDir, 'v1', registry, 'library/app:v1', { creds });
  await pushImage(b.layoutDir, 'v1', registry, 'library/other:v1', { creds });

  // tag_ttl 1ms: every request for the tag after this one revalidates it with the upstream.
  const berth = await startBerth(t, { upstreams: [{ registry: 'docker.io', url: registry.url }], tagTtl: '1ms', serveStale: true });
  const ctd = await startContainerd(t);
  const hostsDir = path.join(work, 'certs.d');
  await writeHostsToml(hostsDir, 'docker.io', berth.url);
  const manifestUrl = `${berth.url}/v2/library/app/manifests/v1?ns=docker.io`;

  // 1. The daemon learns app:v1 -> A, with its blobs.
  const first = await ctd.pull('docker.io/library/app:v1', { hostsDir });
  t.equal(first.code, 0, `pull through berth with the upstream up: ${first.stderr}`);
  t.equal((await ctd.images()).get('docker.io/library/app:v1'), a.manifestDigest, 'containerd got A');
  const before = await fetchOnce(manifestUrl, { headers: { Accept: MANIFEST_ACCEPT } });
  t.equal(before.status, 200, 'GET app:v1 with the upstream up');
  t.equal(before.headers['docker-content-digest'], a.manifestDigest, 'berth answers app:v1 with A while the upstream has A');

  // 2. An archive that names docker.io/library/app:v1 -> B (the other image).
  const archive = path.join(work, 'moved.tar');
  const copy = await run('skopeo', ['copy', '--src-tls-verify=false', '--src-creds', creds, `docker://${registry.host}/library/other:v1`, `oci-archive:${archive}:docker.io/library/app:v1`]);
  t.equal(copy.code, 0, `skopeo archived library/other:v1 as docker.io/library/app:v1: ${copy.stderr}`);

  // 3. The CLI imports it into the same cache while the daemon runs.
  const imported = await berth.cli(['import', archive, '--json']);
  t.equal(imported.code, 0, `berth import while the daemon runs: ${imported.stderr}`);
  const res = JSON.parse(imported.stdout) as { images: { name: string; digest: string; tagged: boolean }[] };
  t.same(res.images.map((i) => [i.name, i.digest, i.tagged]), [['docker.io/library/app:v1', b.manifestDigest, true]], 'the import tagged app:v1 -> B');
  const db = new Database(path.join(berth.cacheDir, 'index.db'), { readonly: true });
  const row = db.prepare('SELECT digest FROM tags WHERE registry = ? AND repository = ? AND tag = ?').get('docker.io', 'library/app', 'v1') as { digest: string } | undefined;
  db.close();
  t.equal(row?.digest, b.manifestDigest, 'the index holds app:v1 -> B');

  // 4. The upstream goes away; the tag (tag_ttl 1ms) is past its time, so berth revalidates and fails.
  await registry.stop();

  // 5. The daemon serves what the index holds: B, as stale.
  const get = await fetchOnce(manifestUrl, { headers: { Accept: MANIFEST_ACCEPT } });
  t.equal(get.status, 200, `GET with the upstream down: ${get.status === 200 ? 200 : `${get.status} ${get.body.toString('utf8').slice(0, 200)}`}`);
  t.equal(get.headers['docker-content-digest'], b.manifestDigest, `GET: Docker-Content-Digest is the imported B, not A (${a.manifestDigest})`);
  t.equal(sha256Digest(get.body), b.manifestDigest, "GET: the body is B's manifest");
  t.match(get.headers['warning'], /unreachable/, 'GET: marked stale (the upstream is down)');

  const head = await fetchOnce(manifestUrl, { method: 'HEAD', headers: { Accept: MANIFEST_ACCEPT } });
  t.equal(head.status, 200, `HEAD with the upstream down: ${head.status}`);
  t.equal(head.headers['docker-content-digest'], b.manifestDigest, `HEAD: Docker-Content-Digest is the imported B, not A (${a.manifestDigest})`);
  t.match(head.headers['warning'], /unreachable/, 'HEAD: marked stale (the upstream is down)');

  await ctd.forget();
  const offline = await ctd.pull('docker.io/library/app:v1', { hostsDir });
  t.equal(offline.code, 0, `pull through berth with the upstream down: ${offline.stderr}`);
  t.equal((await ctd.images()).get('docker.io/library/app:v1'), b.manifestDigest, `containerd pulled B offline, not A (${a.manifestDigest})`);
});
