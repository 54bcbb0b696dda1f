/**
 * Issue 12: site peers. Three berths on 127.0.0.1, 127.0.0.2 and 127.0.0.3
 * (all loopback on Linux), membership from a static list, each with its own
 * cache and the same upstream: a real Distribution behind token auth, seen
 * through a recording proxy so the test can count what crossed the "WAN".
 */
import t from 'tap';
import path from 'node:path';
import { writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { request } from 'undici';
import { startTokenServer } from '../harness/token-server.js';
import { startRegistry } from '../harness/registry.js';
import { MANIFEST_ACCEPT, makeImage, pushImage, readBlob } from '../harness/images.js';
import { startContainerd, writeHostsToml } from '../harness/containerd.js';
import { startBerth, type Berth } from '../harness/berth.js';
import { freePort, tempDirFor } from '../harness/procs.js';
import { fetchOnce, inspectCache, startFaultProxy } from '../harness/fault-proxy.js';
import { rankMembers } from '../../src/peers/rendezvous.js';
import { signPeerRequest } from '../../src/peers/auth.js';

async function site(
  t: { teardown(fn: () => unknown): void },
  upstreamUrl: string,
  keyFile: string,
  extra: Record<string, unknown> = {},
  n = 3,
): Promise<{ nodes: Berth[]; peers: string[] }> {
  const peers: string[] = [];
  for (let i = 1; i <= n; i++) peers.push(`127.0.0.${i}:${await freePort()}`);
  const nodes = await Promise.all(
    peers.map((listen) =>
      startBerth(t, {
        upstreams: [{ registry: 'docker.io', url: upstreamUrl, connect_timeout: '1s', header_timeout: '5s' }],
        extra: { peers: { listen, key_file: keyFile, members: peers, connect_timeout: '1s', header_timeout: '5s' }, ...extra },
      }),
    ),
  );
  return { nodes, peers };
}

t.test('site peers', async (t) => {
  const token = await startTokenServer(t, { users: { pusher: 'push-secret' } });
  const registry = await startRegistry(t, { token });
  const proxy = await startFaultProxy(t, { target: registry.url });
  const work = await tempDirFor(t, 'berth-peers');
  const keyFile = path.join(work, 'site.key');
  await writeFile(keyFile, randomBytes(32).toString('base64') + '\n', { mode: 0o600 });
  const creds = 'pusher:push-secret';
  const img = await makeImage(path.join(work, 'img'), { layers: 4, layerSize: 300_000, seed: 'peers-a', tag: 'v1' });
  await pushImage(img.layoutDir, 'v1', registry, 'library/app:v1', { creds });
  const { nodes, peers } = await site(t, proxy.url, keyFile);
  const [a, b, c] = nodes as [Berth, Berth, Berth];
  // Authorized GETs: berth's anonymous first try is answered 401 by Distribution, before the token flow.
  const blobGets = (digest: string) => proxy.requests({ method: 'GET' }).filter((r) => r.authorized && r.path.endsWith(`/blobs/${digest}`)).length;

  await t.test('three nodes miss the same blobs at the same moment: the upstream serves each blob once', async (t) => {
    const got = await Promise.all(
      nodes.flatMap((node) => img.blobs.map(async (bl) => ({ bl, f: await fetchOnce(`${node.url}/v2/library/app/blobs/${bl.digest}?ns=docker.io`) }))),
    );
    for (const { bl, f } of got) t.same(f.body, await readBlob(img.layoutDir, bl.digest), `${bl.digest.slice(7, 19)}: exact bytes on every node`);
    for (const bl of img.blobs) t.equal(blobGets(bl.digest), 1, `${bl.digest.slice(7, 19)}: one upstream GET for the whole site (got ${blobGets(bl.digest)})`);
    const metrics = await Promise.all(nodes.map(async (n) => (await fetchOnce(`${n.url}/metrics`)).body.toString()));
    t.ok(metrics.some((m) => /^berth_peer_bytes_total\{direction="received"\} [1-9]/m.test(m)), 'bytes from peers are counted');
    t.ok(metrics.some((m) => /^berth_peer_bytes_total\{direction="sent"\} [1-9]/m.test(m)), 'bytes to peers are counted');
  });

  await t.test('the peer listener answers signed reads only', async (t) => {
    const key = Buffer.from((await import('node:fs')).readFileSync(keyFile, 'utf8').trim());
    const target = `/v2/library/app/blobs/${img.blobs[0]!.digest}?ns=docker.io`;
    const peer = `http://${peers[0]}`;
    const unsigned = await request(`${peer}${target}`);
    await unsigned.body.dump();
    t.equal(unsigned.statusCode, 401, 'unsigned: 401');
    const wrongKey = await request(`${peer}${target}`, { headers: signPeerRequest(randomBytes(32), { method: 'GET', path: target, now: Date.now() }) });
    await wrongKey.body.dump();
    t.equal(wrongKey.statusCode, 401, 'signed with another key: 401');
    const old = await request(`${peer}${target}`, { headers: signPeerRequest(key, { method: 'GET', path: target, now: Date.now() - 10 * 60_000 }) });
    await old.body.dump();
    t.equal(old.statusCode, 401, 'a signature from outside the clock window (a replay): 401');
    const headers = signPeerRequest(key, { method: 'GET', path: target, now: Date.now() });
    const good = await request(`${peer}${target}`, { headers });
    const body = Buffer.from(await good.body.arrayBuffer());
    t.equal(good.statusCode, 200, 'signed: 200');
    t.same(body, await readBlob(img.layoutDir, img.blobs[0]!.digest), 'and the bytes');
    const again = await request(`${peer}${target}`, { headers });
    await again.body.dump();
    t.equal(again.statusCode, 401, 'the same signed request again (replayed nonce): 401');
    const put = await request(`${peer}/v2/library/app/blobs/uploads/`, { method: 'POST', headers: signPeerRequest(key, { method: 'POST', path: '/v2/library/app/blobs/uploads/', now: Date.now() }) });
    await put.body.dump();
    t.equal(put.statusCode, 405, 'a signed write: 405');
  });

  await t.test('uplink down: an image only node A pulled is pulled on node C, by tag and by digest', async (t) => {
    const other = await makeImage(path.join(work, 'other'), { layers: 3, layerSize: 200_000, seed: 'peers-b', tag: 'v2' });
    await pushImage(other.layoutDir, 'v2', registry, 'library/other:v2', { creds });
    const ctd = await startContainerd(t);
    const hostsA = path.join(work, 'certs.d-a');
    await writeHostsToml(hostsA, 'docker.io', a.url);
    const pulled = await ctd.pull('docker.io/library/other:v2', { hostsDir: hostsA });
    t.equal(pulled.code, 0, `node A pulls: ${pulled.stderr}`);
    await registry.stop();
    const byTag = await fetchOnce(`${c.url}/v2/library/other/manifests/v2?ns=docker.io`, { headers: { Accept: MANIFEST_ACCEPT } });
    t.equal(byTag.status, 200, 'node C answers the tag with the upstream down');
    t.equal(byTag.headers['docker-content-digest'], other.manifestDigest, 'with the digest node A knows');
    const byDigest = await fetchOnce(`${b.url}/v2/library/other/manifests/${other.manifestDigest}?ns=docker.io`, { headers: { Accept: MANIFEST_ACCEPT } });
    t.equal(byDigest.status, 200, 'node B answers the digest with the upstream down');
    await ctd.forget();
    const hostsC = path.join(work, 'certs.d-c');
    await writeHostsToml(hostsC, 'docker.io', c.url);
    const offline = await ctd.pull('docker.io/library/other:v2', { hostsDir: hostsC });
    t.equal(offline.code, 0, `ctr pulls on node C with the uplink down: ${offline.stderr}`);
    t.equal((await ctd.images()).get('docker.io/library/other:v2'), other.manifestDigest, 'the right image');
  });

  await t.test('the [[prefetch]] list runs once per site: each node fetches the blobs it owns, and every node serves the image offline', async (t) => {
    const pre = await makeImage(path.join(work, 'pre'), { layers: 5, layerSize: 150_000, seed: 'peers-pre', tag: 'v1' });
    const reg2 = await startRegistry(t, { token });
    const proxy2 = await startFaultProxy(t, { target: reg2.url });
    await pushImage(pre.layoutDir, 'v1', reg2, 'library/pre:v1', { creds });
    const { nodes: sited, peers: ids } = await site(t, proxy2.url, keyFile, { prefetch: [{ image: 'docker.io/library/pre:v1' }] });
    await Promise.all(sited.map((n) => n.service.waitForOutput(/"msg":"prefetched"/, 60_000)));
    for (const [i, node] of sited.entries()) {
      const held = (await inspectCache(node.cacheDir)).indexed;
      const owned = pre.blobs.filter((bl) => rankMembers(bl.digest, ids)[0] === ids[i]).map((bl) => bl.digest).sort();
      t.same(pre.blobs.map((bl) => bl.digest).filter((d) => held.has(d)).sort(), owned, `node ${i + 1} holds exactly the blobs it owns`);
    }
    for (const bl of pre.blobs) {
      const gets = proxy2.requests({ method: 'GET' }).filter((r) => r.authorized && r.path.endsWith(`/blobs/${bl.digest}`)).length;
      t.equal(gets, 1, `${bl.digest.slice(7, 19)}: prefetched across the site with one upstream GET (got ${gets})`);
    }
    await reg2.stop();
    const ctd = await startContainerd(t);
    for (const [i, node] of sited.entries()) {
      await ctd.forget();
      const hosts = path.join(work, `certs.d-pre-${i}`);
      await writeHostsToml(hosts, 'docker.io', node.url);
      const r = await ctd.pull('docker.io/library/pre:v1', { hostsDir: hosts });
      t.equal(r.code, 0, `node ${i + 1} serves the prefetched image with the uplink down: ${r.stderr}`);
    }
  });
});
