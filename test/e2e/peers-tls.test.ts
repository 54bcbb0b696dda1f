/**
 * Issue 12: TLS between site peers, with the certificate machinery the
 * containerd listener already uses: each node serves its peer listener
 * with its own certificate from the site's private CA and trusts that CA
 * (`[peers] ca_file`) when it asks the others. A node whose certificate the
 * site's CA did not sign is not asked for anything (the asking node goes to
 * the upstream instead), and plain HTTP to a TLS peer listener gets nothing.
 */
import t from 'tap';
import path from 'node:path';
import { writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { request } from 'undici';
import { startTokenServer } from '../harness/token-server.js';
import { startRegistry } from '../harness/registry.js';
import { makeImage, pushImage, readBlob, type TestImage } from '../harness/images.js';
import { startBerth, type Berth } from '../harness/berth.js';
import { freePort, tempDirFor } from '../harness/procs.js';
import { fetchOnce, startFaultProxy } from '../harness/fault-proxy.js';
import { makeCa, issueLeaf } from '../harness/pki.js';
import { rankMembers } from '../../src/peers/rendezvous.js';

t.test('site peers over TLS', async (t) => {
  const token = await startTokenServer(t, { users: { pusher: 'push-secret' } });
  const registry = await startRegistry(t, { token });
  const proxy = await startFaultProxy(t, { target: registry.url });
  const work = await tempDirFor(t, 'berth-peers-tls');
  const keyFile = path.join(work, 'site.key');
  await writeFile(keyFile, randomBytes(32).toString('base64'), { mode: 0o600 });
  const img = await makeImage(path.join(work, 'img'), { layers: 3, layerSize: 200_000, seed: 'peers-tls', tag: 'v1' });
  await pushImage(img.layoutDir, 'v1', registry, 'library/app:v1', { creds: 'pusher:push-secret' });
  const ca = await makeCa(work, 'site-ca');
  const rogueCa = await makeCa(work, 'rogue-ca');
  const ids = [`127.0.0.1:${await freePort()}`, `127.0.0.2:${await freePort()}`];
  const certs = [await issueLeaf(ca, 'node1', { ips: ['127.0.0.1'] }), await issueLeaf(ca, 'node2', { ips: ['127.0.0.2'] })];
  const start = (i: number, leaf: { certFile: string; keyFile: string }) =>
    startBerth(t, {
      upstreams: [{ registry: 'docker.io', url: proxy.url }],
      extra: { peers: { listen: ids[i], key_file: keyFile, members: ids, tls_cert_file: leaf.certFile, tls_key_file: leaf.keyFile, ca_file: ca.certFile } },
    });
  const nodes: Berth[] = [await start(0, certs[0]!), await start(1, certs[1]!)];
  const gets = (digest: string) => proxy.requests({ method: 'GET' }).filter((r) => r.authorized && r.path.endsWith(`/blobs/${digest}`)).length;

  await t.test('blobs travel between peers over TLS: the upstream serves each once', async (t) => {
    for (const bl of img.blobs) {
      const [first, second] = await Promise.all(nodes.map((n) => fetchOnce(`${n.url}/v2/library/app/blobs/${bl.digest}?ns=docker.io`)));
      const want = await readBlob(img.layoutDir, bl.digest);
      t.same(first!.body, want);
      t.same(second!.body, want);
      t.equal(gets(bl.digest), 1, `${bl.digest.slice(7, 19)}: one upstream GET for both nodes`);
    }
  });

  await t.test('plain HTTP to a TLS peer listener gets no answer', async (t) => {
    await t.rejects(request(`http://${ids[0]}/v2/`, { headersTimeout: 5000, bodyTimeout: 5000 }).then((r) => r.body.dump()), 'no HTTP answer on the TLS port');
  });

  await t.test('a peer whose certificate the site CA did not sign is not trusted', async (t) => {
    // Node 1 again, with a certificate from another CA: node 2 must not take bytes from it.
    await nodes[0]!.stop();
    const rogue = await issueLeaf(rogueCa, 'rogue1', { ips: ['127.0.0.1'] });
    nodes[0] = await start(0, rogue);
    // A blob node 1 owns: fill it there, then ask node 2, which would go to node 1 first. Ownership
    // depends on the run's ports, so make images until one has such a blob: with a blob node 2
    // owned, node 1's fill would have gone through node 2 and left the blob in node 2's cache.
    const ownedByNode1 = async (): Promise<{ other: TestImage; owned: TestImage['blobs'][number] }> => {
      for (let n = 0; n < 20; n++) {
        const other = await makeImage(path.join(work, `other-${n}`), { layers: 2, layerSize: 100_000, seed: `peers-tls-2-${n}`, tag: 'v1' });
        const owned = other.blobs.find((bl) => rankMembers(bl.digest, ids)[0] === ids[0]);
        if (owned) return { other, owned };
      }
      throw new Error(`no blob of 20 images is owned by ${ids[0]}`);
    };
    const { other, owned } = await ownedByNode1();
    await pushImage(other.layoutDir, 'v1', registry, 'library/other:v1', { creds: 'pusher:push-secret' });
    const filled = await fetchOnce(`${nodes[0]!.url}/v2/library/other/blobs/${owned.digest}?ns=docker.io`);
    t.equal(filled.status, 200, 'node 1, the owner, serves the blob');
    t.equal(gets(owned.digest), 1, 'filled from the upstream');
    const before = gets(owned.digest);
    const r = await fetchOnce(`${nodes[1]!.url}/v2/library/other/blobs/${owned.digest}?ns=docker.io`);
    t.same(r.body, await readBlob(other.layoutDir, owned.digest), 'node 2 still serves the blob');
    t.equal(gets(owned.digest), before + 1, 'from the upstream: the untrusted peer was not used');
  });
});
