/**
 * Issue 12, site peers when something goes wrong: the owner of a blob dies (kill -9) in the
 * middle of a 64 MiB transfer to another node; a peer answers with a flipped byte; the whole
 * uplink is gone and only one node holds an imported archive. Three real berths on 127.0.0.1,
 * .2 and .3 with `[peers]` static members, a real Distribution behind token auth, each node's
 * upstream seen through a fault proxy of its own (so the test can slow one node's uplink and
 * count what each node fetched), real `ctr` pulls where the issue says so.
 */
import t from 'tap';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { startTokenServer } from '../harness/token-server.js';
import { startRegistry } from '../harness/registry.js';
import { makeImage, pushImage, readBlob } from '../harness/images.js';
import { startContainerd, writeHostsToml } from '../harness/containerd.js';
import { startBerth, type Berth } from '../harness/berth.js';
import { tempDirFor } from '../harness/procs.js';
import { fetchOnce, inspectCache, outcomeOf, startFaultProxy, type FaultProxy } from '../harness/fault-proxy.js';
import { peerAddresses, startSite, streamingGet, waitForCached, writeSiteKey } from '../harness/peers.js';
import { rankMembers } from '../../src/peers/rendezvous.js';

const MiB = 1024 * 1024;
const sha256 = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const blobUrl = (node: Berth, repo: string, digest: string): string => `${node.url}/v2/${repo}/blobs/${digest}?ns=docker.io`;
/** Authorized GETs of one blob through a node's upstream proxy (Distribution answers the anonymous first try 401). */
const blobGets = (proxy: FaultProxy, digest: string, since?: number): number =>
  proxy.requests({ method: 'GET', ...(since === undefined ? {} : { since }) }).filter((r) => r.authorized && r.path.endsWith(`/blobs/${digest}`)).length;
const metric = async (node: Berth, re: RegExp): Promise<number> => {
  const text = (await fetchOnce(`${node.url}/metrics`)).body.toString();
  let sum = 0;
  for (const line of text.split('\n')) {
    const m = re.exec(line);
    if (m) sum += Number(m[1]);
  }
  return sum;
};

// A 64 MiB image, three sites of three berths and a containerd: more than the default 180 s on a busy machine.
t.setTimeout(420_000);

t.test('site peers under faults', async (t) => {
  const token = await startTokenServer(t, { users: { pusher: 'push-secret' } });
  const registry = await startRegistry(t, { token });
  const work = await tempDirFor(t, 'berth-peers-faults');
  const keyFile = await writeSiteKey(work);
  const creds = 'pusher:push-secret';

  await t.test('the owner is killed (kill -9) in the middle of a 64 MiB transfer: the asking node still serves the whole, correct blob', async (t) => {
    const img = await makeImage(path.join(work, 'big'), { layers: 1, layerSize: 64 * MiB, seed: 'peers-kill-owner', tag: 'v1' });
    await pushImage(img.layoutDir, 'v1', registry, 'library/big:v1', { creds });
    const layer = img.manifests[0]!.layers[0]!;
    const expected = await readBlob(img.layoutDir, layer);
    t.ok(expected.length > 60 * MiB, `the layer is big (${expected.length} bytes)`);

    const peers = await peerAddresses(3);
    const proxies = await Promise.all(peers.map(() => startFaultProxy(t, { target: registry.url })));
    const nodes = await startSite(t, { keyFile, nodes: peers.map((listen, i) => ({ listen, upstreamUrl: proxies[i]!.url })) });
    const order = rankMembers(layer, peers);
    const at = (id: string) => peers.indexOf(id);
    const [owner, next, asker] = [at(order[0]!), at(order[1]!), at(order[2]!)];
    t.comment(`owner ${peers[owner]}, next in line ${peers[next]}, asking node ${peers[asker]}`);
    // The owner's uplink hands over 4 MiB and then goes silent: the owner is mid-fill, streaming to the asker.
    const stall = proxies[owner]!.addRule({ method: 'GET', path: new RegExp(`/blobs/${layer}$`), authorized: true, fault: { kind: 'stallBody', afterBytes: 4 * MiB } });

    const get = streamingGet(blobUrl(nodes[asker]!, 'library/big', layer));
    await get.received(1);
    t.equal(stall.applied, 1, "the bytes the client has came through the owner's stalled uplink");
    await nodes[owner]!.kill9();
    const got = await get.done;
    t.equal(got.status, 200, 'status 200');
    t.ok(got.complete, `the body arrived whole (${got.error ?? 'no error'})`);
    t.equal(got.body.length, expected.length, 'every byte');
    t.equal(sha256(got.body), layer, 'the bytes hash to the digest');
    t.equal(outcomeOf(got, expected), 'exact', 'exact: a complete 200 with the right bytes');
    const fromNext = blobGets(proxies[next]!, layer);
    const fromOwn = blobGets(proxies[asker]!, layer);
    t.equal(fromNext + fromOwn, 1, `the rest came from one other source: the next member's upstream (${fromNext}) or the asking node's own (${fromOwn})`);

    // Cached on the asking node: a second GET crosses no uplink.
    const mark = proxies.map((p) => p.mark());
    const again = await fetchOnce(blobUrl(nodes[asker]!, 'library/big', layer));
    t.equal(outcomeOf(again, expected), 'exact', 'the second GET: exact bytes');
    t.same(proxies.map((p, i) => blobGets(p, layer, mark[i])), [0, 0, 0], 'and no upstream request on any node');
    await waitForCached(nodes[asker]!, layer);
    const cache = await inspectCache(nodes[asker]!.cacheDir, { rehash: true });
    t.equal(cache.files.get(layer), expected.length, 'the blob is in the asking node’s cache');
    t.same(cache.problems, [], 'and the cache is consistent');
  });

  await t.test('a peer that serves a flipped byte: never a complete 200 with wrong bytes, nothing wrong cached', async (t) => {
    const img = await makeImage(path.join(work, 'flip'), { layers: 2, layerSize: 400_000, seed: 'peers-flip', tag: 'v1' });
    await pushImage(img.layoutDir, 'v1', registry, 'library/flip:v1', { creds });
    const layer = img.manifests[0]!.layers[0]!;
    const expected = await readBlob(img.layoutDir, layer);

    // Node B reaches node A only through a proxy that flips one byte of every blob body.
    // B ranks members by the names it knows them by, so the proxy must own this layer in B's eyes.
    // Each try draws B's and C's addresses afresh too: with them fixed, a B or C that happened to
    // rank high for this layer left every proxy port behind it (a failure in about 2/(tries+2) runs);
    // fresh draws make each try an even 1-in-3 chance.
    let flipper: FaultProxy | undefined;
    let peers: string[] = [];
    for (let i = 0; i < 40 && !flipper; i++) {
      const drawn = await peerAddresses(3);
      const p = await startFaultProxy(t, { target: `http://${drawn[0]}`, host: '127.0.0.4' });
      if (rankMembers(layer, [p.host, drawn[1]!, drawn[2]!])[0] === p.host) {
        flipper = p;
        peers = drawn;
      } else {
        await p.close();
      }
    }
    if (!flipper) throw new Error('no proxy port ranks before node B');
    const [a, b, c] = peers as [string, string, string];
    const flips = flipper.addRule({ method: 'GET', path: /\/blobs\//, fault: { kind: 'flip', offset: 1000 } });
    const proxyB = await startFaultProxy(t, { target: registry.url });
    const [, nodeB] = (await startSite(t, {
      keyFile,
      nodes: [
        { listen: a, upstreamUrl: registry.url },
        { listen: b, upstreamUrl: proxyB.url, members: [flipper.host, b, c] },
        { listen: c, upstreamUrl: registry.url },
      ],
    })) as [Berth, Berth, Berth];

    const first = await fetchOnce(blobUrl(nodeB, 'library/flip', layer));
    t.equal(flips.applied, 1, 'node B asked node A (through the flipping proxy) first');
    t.equal(blobGets(proxyB, layer), 0, 'not its own upstream');
    t.not(outcomeOf(first, expected), 'wrong', `never a complete 200 with wrong bytes (got ${first.status}, ${first.body.length} bytes, complete ${first.complete})`);
    t.ok(await metric(nodeB, /^berth_digest_mismatches_total\{[^}]*\} (\d+)/), 'the verification failure is counted');
    const cache = await inspectCache(nodeB.cacheDir, { rehash: true });
    t.same(cache.problems, [], 'nothing wrong in node B’s cache');
    t.notOk(cache.files.has(layer) && !first.body.equals(expected), 'no copy of the wrong bytes');

    // The peer still answers wrongly: node B must not be stuck with it.
    const second = await fetchOnce(blobUrl(nodeB, 'library/flip', layer));
    t.equal(outcomeOf(second, expected), 'exact', `while the peer still flips, the next GET gets the exact bytes from another source (got ${second.status}, ${second.body.length} bytes)`);
    t.equal(flips.applied, 1, 'the peer that answered wrongly was not asked again for this blob');

    flipper.clearRules();
    const third = await fetchOnce(blobUrl(nodeB, 'library/flip', layer));
    t.equal(outcomeOf(third, expected), 'exact', 'with the peer healed too: exact bytes');
    await waitForCached(nodeB, layer);
    const after = await inspectCache(nodeB.cacheDir, { rehash: true });
    t.same(after.problems, [], 'node B’s cache is consistent');
    t.equal(after.files.get(layer), expected.length, 'and holds the right blob');
  });

  await t.test('an archive imported on node A only: ctr pulls it through nodes B and C with no upstream at all', async (t) => {
    const img = await makeImage(path.join(work, 'imported'), { layers: 3, layerSize: 250_000, seed: 'peers-import', tag: 'v1' });
    await pushImage(img.layoutDir, 'v1', registry, 'library/imported:v1', { creds });
    // The archive comes from a berth outside the site.
    const maker = await startBerth(t, { upstreams: [{ registry: 'docker.io', url: registry.url }] });
    const archive = path.join(work, 'imported.tar');
    const pre = await maker.cli(['prefetch', 'docker.io/library/imported:v1']);
    t.equal(pre.code, 0, `prefetch on the archive's maker: ${pre.stderr}`);
    const exp = await maker.cli(['export', 'docker.io/library/imported:v1', '-o', archive]);
    t.equal(exp.code, 0, `export: ${exp.stderr}`);
    await maker.stop();
    await registry.stop();

    const peers = await peerAddresses(3);
    // Every node's upstream is the stopped Distribution: nothing answers there.
    const [a, b, c] = (await startSite(t, { keyFile, nodes: peers.map((listen) => ({ listen, upstreamUrl: registry.url })) })) as [Berth, Berth, Berth];
    const imp = await a.cli(['import', archive]);
    t.equal(imp.code, 0, `import on node A: ${imp.stderr}`);

    const ctd = await startContainerd(t);
    for (const [name, node] of [['B', b], ['C', c]] as const) {
      const hosts = path.join(work, `certs.d-import-${name}`);
      await writeHostsToml(hosts, 'docker.io', node.url);
      const pulled = await ctd.pull('docker.io/library/imported:v1', { hostsDir: hosts });
      t.equal(pulled.code, 0, `ctr pulls through node ${name} with no upstream: ${pulled.stderr}`);
      t.equal((await ctd.images()).get('docker.io/library/imported:v1'), img.manifestDigest, `node ${name}: the right image`);
      for (const bl of img.blobs) await waitForCached(node, bl.digest);
      const held = await inspectCache(node.cacheDir, { rehash: true });
      t.same(held.problems, [], `node ${name}'s cache is consistent`);
      t.ok(img.blobs.every((bl) => held.files.has(bl.digest)), `node ${name} now holds every blob`);
      await ctd.forget();
    }
  });
});
