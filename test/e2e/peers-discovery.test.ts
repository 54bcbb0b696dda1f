/**
 * Issue 12, membership discovered by real berth daemons: `[peers] dns` asked of a DNS server the
 * test runs (`dns_servers`), and `[peers] kubernetes` watched on the Kubernetes API simulator
 * (test/k8s-sim) through `api_server`, `token_file` and `ca_file`, as berth under systemd on a
 * cluster's nodes would. Three berths on 127.0.0.1, .2 and .3 (one peer port for all, as A records
 * and a headless Service's endpoints give one port for every address), a real Distribution behind
 * token auth seen through one recording proxy: what crossed the "WAN".
 *
 * For each source: the three nodes miss the same blobs at the same moment and the upstream serves
 * each blob once for the site; then node C leaves the source (dropped from the DNS answer, its
 * endpoint not ready), and once node A logs 'site members changed' without a restart, A no longer
 * asks C for a blob C would own (A's berth_peer_requests_total for C stays put), while before it
 * did.
 */
import t, { type Test } from 'tap';
import path from 'node:path';
import { startTokenServer } from '../harness/token-server.js';
import { startRegistry, type Registry } from '../harness/registry.js';
import { makeImage, pushImage, readBlob, type TestImage } from '../harness/images.js';
import { startBerth, type Berth } from '../harness/berth.js';
import { tempDirFor } from '../harness/procs.js';
import { fetchOnce, startFaultProxy, type FaultProxy } from '../harness/fault-proxy.js';
import { startDnsServer } from '../harness/dns-server.js';
import { portFreeOnAll, writeSiteKey } from '../harness/peers.js';
import { startK8sSim } from '../k8s-sim/index.js';
import { rankMembers } from '../../src/peers/rendezvous.js';

const HOSTS = ['127.0.0.1', '127.0.0.2', '127.0.0.3'] as const;
const CREDS = 'pusher:push-secret';

interface World {
  registry: Registry;
  proxy: FaultProxy;
  keyFile: string;
  work: string;
}

async function startWorld(t: Test): Promise<World> {
  const token = await startTokenServer(t, { users: { pusher: 'push-secret' } });
  const registry = await startRegistry(t, { token });
  const proxy = await startFaultProxy(t, { target: registry.url });
  const work = await tempDirFor(t, 'berth-peers-discovery');
  const keyFile = await writeSiteKey(work);
  return { registry, proxy, keyFile, work };
}

/** Starts the three berths, each with `[peers]` `listen` on its own address and `membership`. */
function startNodes(t: Test, w: World, ids: readonly string[], membership: Record<string, unknown>): Promise<Berth[]> {
  return Promise.all(
    ids.map((listen) =>
      startBerth(t, {
        upstreams: [{ registry: 'docker.io', url: w.proxy.url, connect_timeout: '1s', header_timeout: '10s' }],
        extra: { peers: { listen, key_file: w.keyFile, connect_timeout: '1s', header_timeout: '10s', ...membership } },
      }),
    ),
  );
}

/** Authorized GETs of one blob through the proxy (berth's anonymous first try gets Distribution's 401). */
function upstreamGets(w: World, digest: string, since?: number): number {
  return w.proxy.requests({ method: 'GET', ...(since === undefined ? {} : { since }) }).filter((r) => r.authorized && r.path.endsWith(`/blobs/${digest}`)).length;
}

/** What `node` counted of its requests to `peer` (berth_peer_requests_total, every result). */
async function requestsTo(node: Berth, peer: string): Promise<number> {
  const text = (await fetchOnce(`${node.url}/metrics`)).body.toString();
  let n = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith('berth_peer_requests_total{') && line.includes(`peer="${peer}"`)) n += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return n;
}

/** Resolves with the first log line of `node` (so far or from now on) that satisfies `pred`. */
function logLine(node: Berth, pred: (l: Record<string, unknown>) => boolean, timeoutMs = 30_000): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const seen = node.logs().find(pred);
    if (seen) return resolve(seen);
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no matching log line within ${timeoutMs} ms`));
    }, timeoutMs);
    const off = node.service.onLine((line) => {
      if (!line.startsWith('{')) return;
      let l: Record<string, unknown>;
      try {
        l = JSON.parse(line) as Record<string, unknown>;
      } catch {
        return;
      }
      if (!pred(l)) return;
      clearTimeout(timer);
      off();
      resolve(l);
    });
  });
}

const membersChanged = (members: string[]) => (l: Record<string, unknown>) =>
  l.msg === 'site members changed' && JSON.stringify(l.members) === JSON.stringify(members);

/** An image with at least two blobs that `owner` owns among `ids` (one to show it is asked, one that it no longer is). */
async function imageOwnedPartlyBy(w: World, name: string, ids: readonly string[], owner: string): Promise<{ img: TestImage; owned: [string, string] }> {
  for (let i = 0; i < 20; i++) {
    const img = await makeImage(path.join(w.work, `${name}-${i}`), { layers: 12, layerSize: 30_000, seed: `${name}-${i}`, tag: 'v1' });
    const owned = img.blobs.map((b) => b.digest).filter((d) => rankMembers(d, ids)[0] === owner);
    if (owned.length >= 2) return { img, owned: [owned[0]!, owned[1]!] };
  }
  throw new Error(`no image with two blobs owned by ${owner}`);
}

/**
 * The scenario both sources share: `leave()` takes C out of the source; A must notice (its log)
 * and then stop asking C.
 */
async function scenario(t: Test, w: World, name: string, ids: readonly string[], nodes: Berth[], leave: () => void): Promise<void> {
  const [a, , c] = ids as [string, string, string];
  const [nodeA] = nodes as [Berth, Berth, Berth];
  const img = await makeImage(path.join(w.work, name), { layers: 4, layerSize: 300_000, seed: `${name}-together`, tag: 'v1' });
  await pushImage(img.layoutDir, 'v1', w.registry, `library/${name}:v1`, { creds: CREDS });

  await t.test('three nodes miss the same blobs at the same moment: the upstream serves each blob once', async (t) => {
    const got = await Promise.all(
      nodes.flatMap((node) => img.blobs.map(async (bl) => ({ bl, f: await fetchOnce(`${node.url}/v2/library/${name}/blobs/${bl.digest}?ns=docker.io`) }))),
    );
    for (const { bl, f } of got) t.same(f.body, await readBlob(img.layoutDir, bl.digest), `${bl.digest.slice(7, 19)}: exact bytes on every node`);
    for (const bl of img.blobs) t.equal(upstreamGets(w, bl.digest), 1, `${bl.digest.slice(7, 19)}: one upstream GET for the whole site`);
  });

  await t.test('C leaves the source: A notices without a restart and no longer asks C', async (t) => {
    const { img: later, owned } = await imageOwnedPartlyBy(w, `${name}-later`, ids, c);
    await pushImage(later.layoutDir, 'v1', w.registry, `library/${name}-later:v1`, { creds: CREDS });
    const [asked, notAsked] = owned;
    const get = async (digest: string): Promise<void> => {
      const mark = w.proxy.mark();
      const f = await fetchOnce(`${nodeA.url}/v2/library/${name}-later/blobs/${digest}?ns=docker.io`);
      t.equal(f.status, 200, `${digest.slice(7, 19)}: 200`);
      t.same(f.body, await readBlob(later.layoutDir, digest), `${digest.slice(7, 19)}: exact bytes`);
      t.equal(upstreamGets(w, digest, mark), 1, `${digest.slice(7, 19)}: one upstream GET`);
    };

    const before = await requestsTo(nodeA, c);
    await get(asked);
    t.ok((await requestsTo(nodeA, c)) > before, 'while C is a member, A asks C for a blob C owns');

    leave();
    const changed = await logLine(nodeA, membersChanged([ids[1]!]));
    t.same(changed.members, [ids[1]], `A logs 'site members changed': ${JSON.stringify(changed.members)}`);
    const after = await requestsTo(nodeA, c);
    await get(notAsked);
    t.equal(await requestsTo(nodeA, c), after, `C gone: A does not ask C for a blob C would own (its next owner is ${rankMembers(notAsked, [a, ids[1]!])[0]})`);
  });
}

t.test('[peers] dns with dns_servers: daemons follow a DNS answer the test controls', async (t) => {
  const w = await startWorld(t);
  const port = await portFreeOnAll(HOSTS);
  const ids = HOSTS.map((h) => `${h}:${port}`);
  const NAME = 'berth-peers.site.test';
  const dns = await startDnsServer(t);
  dns.set(NAME, { a: [...HOSTS] });
  const nodes = await startNodes(t, w, ids, { dns: `${NAME}:${port}`, dns_servers: [dns.address], resolve_interval: '1s' });
  for (const [i, node] of nodes.entries()) {
    const started = node.logs().find((l) => l.msg === 'site peers');
    t.same(started?.members, ids.filter((_, j) => j !== i), `node ${i + 1} found the others in the answer of ${dns.address}`);
  }
  t.ok(dns.queries.some((q) => q.name === NAME && q.type === 'A'), 'the daemons asked the test DNS server, not the system resolver');
  await scenario(t, w, 'dns', ids, nodes, () => dns.set(NAME, { a: ['127.0.0.1', '127.0.0.2'] }));
});

t.test('[peers] kubernetes with api_server, token_file, ca_file: daemons watch EndpointSlices from outside a pod', async (t) => {
  const w = await startWorld(t);
  const port = await portFreeOnAll(HOSTS);
  const ids = HOSTS.map((h) => `${h}:${port}`);
  const sim = await startK8sSim(t, { namespace: 'berth', service: 'berth-peers' });
  const slice = (cReady: boolean) => ({
    name: 'berth-peers-x7k2p',
    endpoints: [{ addresses: ['127.0.0.1'] }, { addresses: ['127.0.0.2'], ready: true }, { addresses: ['127.0.0.3'], ready: cReady }],
    ports: [{ name: 'peer', port }],
  });
  sim.put(slice(true));
  const nodes = await startNodes(t, w, ids, {
    kubernetes: { namespace: 'berth', service: 'berth-peers', port: 'peer', api_server: sim.url, token_file: sim.tokenFile, ca_file: sim.caFile },
  });
  for (const [i, node] of nodes.entries()) {
    const started = node.logs().find((l) => l.msg === 'site peers');
    t.same(started?.members, ids.filter((_, j) => j !== i), `node ${i + 1} listed the others' ready endpoints`);
  }
  const bearer = sim.requests.filter((r) => r.status === 200).map((r) => r.authorization);
  t.ok(bearer.length >= 3 && bearer.every((a) => a === `Bearer ${sim.token}`), 'with the token from token_file');
  await scenario(t, w, 'k8s', ids, nodes, () => sim.put(slice(false)));
});
