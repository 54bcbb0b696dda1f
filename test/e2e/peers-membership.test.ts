/**
 * Issue 12, site membership that changes while berth runs: from DNS (A records answered by a
 * DNS server the test controls) and from a Kubernetes EndpointSlice watch (served by
 * test/k8s-sim). Members joining and leaving change which node owns a blob, with no restart.
 *
 * The nodes that are asked are real berths (127.0.0.1, .2 and .3, one peer port for all, as a
 * headless Service's records give one port for every address), each with its own fault proxy in
 * front of a real Distribution behind token auth, so the test sees which node fetched what. The
 * node that asks runs in the test process (test/harness/peers.ts startInProcessNode: the real
 * Mirror, SitePeers and content store), so the test can step the membership through joins,
 * not-ready endpoints, relists and deletions and see each owner change at once. Daemons that
 * find each other through `[peers] dns` (dns_servers) and `kubernetes` (api_server, token_file,
 * ca_file) end to end are in peers-discovery.test.ts.
 */
import t, { type Test } from 'tap';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { Resolver } from 'node:dns/promises';
import pino from 'pino';
import { startTokenServer } from '../harness/token-server.js';
import { startRegistry } from '../harness/registry.js';
import { makeImage, pushImage, type TestImage } from '../harness/images.js';
import { startBerth } from '../harness/berth.js';
import { tempDirFor } from '../harness/procs.js';
import { startFaultProxy, type FaultProxy } from '../harness/fault-proxy.js';
import { startDnsServer } from '../harness/dns-server.js';
import { membersBecome, portFreeOnAll, startInProcessNode, writeSiteKey, type InProcessNode } from '../harness/peers.js';
import { startK8sSim } from '../k8s-sim/index.js';
import { DnsMembership } from '../../src/peers/membership.js';
import { kubernetesMembership } from '../../src/peers/kubernetes.js';
import { rankMembers } from '../../src/peers/rendezvous.js';

const REPO = 'library/app';
const silent = pino({ level: 'silent' });
const sha256 = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** The blobs the scenarios fetch, chosen by who owns them; see pickSite. */
interface Roles {
  /** Owned by A or B (the first members). */
  first: string;
  /** Owned by C (the member that joins), twice. */
  ofC: [string, string];
  /** Owned by A (the member that leaves), twice. */
  ofA: [string, string];
}

/**
 * A peer port free on 127.0.0.1-3 and an id for the in-process node such that the image has
 * blobs for every role, and the in-process node ranks last for each of them: then each is
 * fetched from a peer, never from the asking node's own uplink, whatever the members are.
 */
async function pickSite(img: TestImage): Promise<{ port: number; ids: [string, string, string]; self: string; roles: Roles }> {
  const blobs = img.blobs.map((b) => b.digest);
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = await portFreeOnAll(['127.0.0.1', '127.0.0.2', '127.0.0.3']);
    const ids = [1, 2, 3].map((i) => `127.0.0.${i}:${port}`) as [string, string, string];
    const [a, , c] = ids;
    const owner = (d: string): string => rankMembers(d, ids)[0]!;
    const ofA = blobs.filter((d) => owner(d) === a);
    const ofC = blobs.filter((d) => owner(d) === c);
    const first = blobs.find((d) => !ofA.slice(0, 2).includes(d) && !ofC.slice(0, 2).includes(d));
    if (ofA.length < 2 || ofC.length < 2 || !first) continue;
    const roles: Roles = { first, ofC: [ofC[0]!, ofC[1]!], ofA: [ofA[0]!, ofA[1]!] };
    const chosen = [roles.first, ...roles.ofC, ...roles.ofA];
    // The asking node is not listening anywhere: its id only has to rank last.
    for (let p = 1024; p < 65536; p++) {
      const self = `127.0.0.9:${p}`;
      if (chosen.every((d) => rankMembers(d, [self, ...ids])[3] === self)) return { port, ids, self, roles };
    }
  }
  throw new Error('no peer port gives the image a blob for every role');
}

/** Three berths, their uplinks (a fault proxy each, plus one for the in-process node), the image. */
async function startWorld(t: Test) {
  const token = await startTokenServer(t, { users: { pusher: 'push-secret' } });
  const registry = await startRegistry(t, { token });
  const work = await tempDirFor(t, 'berth-peers-membership');
  const keyFile = await writeSiteKey(work);
  const img = await makeImage(path.join(work, 'img'), { layers: 24, layerSize: 20_000, seed: 'peers-membership', tag: 'v1' });
  await pushImage(img.layoutDir, 'v1', registry, `${REPO}:v1`, { creds: 'pusher:push-secret' });
  const { port, ids, self, roles } = await pickSite(img);
  t.comment(`peers ${ids.join(' ')}; the asking node is ${self}`);
  const proxies = await Promise.all([0, 1, 2, 3].map(() => startFaultProxy(t, { target: registry.url })));
  await Promise.all(
    ids.map((listen, i) =>
      startBerth(t, {
        upstreams: [{ registry: 'docker.io', url: proxies[i]!.url, connect_timeout: '1s', header_timeout: '10s' }],
        extra: { peers: { listen, key_file: keyFile, members: ids, connect_timeout: '1s', header_timeout: '10s' } },
      }),
    ),
  );
  const names = new Map<string, string>([[ids[0], 'A'], [ids[1], 'B'], [ids[2], 'C'], [self, 'the asking node']]);
  const nameOf = (id: string): string => names.get(id) ?? id;
  const uplinkOf = [...ids, self];

  /**
   * The asking node GETs `digest`: it must get the exact bytes, and exactly one uplink, the
   * expected owner's, must have carried it.
   */
  const fetchFrom = async (t: Test, node: InProcessNode, digest: string, expectedOwner: string, why: string): Promise<void> => {
    const marks = proxies.map((p: FaultProxy) => p.mark());
    const body = await node.getBlob(REPO, digest);
    t.equal(sha256(body), digest, `${why}: exact bytes`);
    const fetched = proxies.flatMap((p, i) =>
      p.requests({ method: 'GET', since: marks[i] }).some((r) => r.authorized && r.path.endsWith(`/blobs/${digest}`)) ? [nameOf(uplinkOf[i]!)] : [],
    );
    t.same(fetched, [nameOf(expectedOwner)], `${why}: fetched by ${nameOf(expectedOwner)} only`);
  };
  /** Whom the asking node will ask first for `digest`, by the members it knows now. */
  const firstAsked = (node: InProcessNode, digest: string): string | undefined => {
    const peer = node.site.blobPeers(digest).before[0]?.registry;
    return peer === undefined ? undefined : nameOf(peer.replace(/^peer /, ''));
  };
  return { ids, self, roles, port, proxies, keyFile, fetchFrom, firstAsked, nameOf, uplink: proxies[3]!.url };
}

t.test('membership from DNS: a member added to or dropped from the answer changes which node is asked, without a restart', async (t) => {
  const w = await startWorld(t);
  const [a, b, c] = w.ids;
  const NAME = 'berth-peers.site.test';
  const dns = await startDnsServer(t);
  dns.set(NAME, { a: ['127.0.0.1', '127.0.0.2'] });
  const resolver = new Resolver({ timeout: 1_000, tries: 2 });
  resolver.setServers([dns.address]);
  // What `[peers] dns = "berth-peers.site.test:PORT"` builds, with the test's resolver.
  const membership = new DnsMembership({ name: NAME, port: w.port, intervalMs: 100, self: w.self, log: silent, resolver });
  const node = await startInProcessNode(t, { membership, upstreamUrl: w.uplink, keyFile: w.keyFile });
  t.same([...membership.members()], [a, b], 'the first answer names A and B');

  await w.fetchFrom(t, node, w.roles.first, rankMembers(w.roles.first, [a, b])[0]!, 'with A and B');

  const [joins] = w.roles.ofC;
  const before = w.firstAsked(node, joins);
  t.not(before, 'C', `before C joins, ${before} is asked first for C's blob`);
  dns.set(NAME, { a: ['127.0.0.1', '127.0.0.2', '127.0.0.3'] });
  await membersBecome(membership, [a, b, c]);
  t.equal(w.firstAsked(node, joins), 'C', 'C in the answer: C is asked first for the blobs it owns');
  await w.fetchFrom(t, node, joins, c, 'C joined');

  const [leaves] = w.roles.ofA;
  dns.set(NAME, { a: ['127.0.0.2', '127.0.0.3'] });
  await membersBecome(membership, [b, c]);
  await w.fetchFrom(t, node, leaves, rankMembers(leaves, [b, c])[0]!, "A dropped from the answer: A's blob comes from its next owner");
});

t.test('membership from a Kubernetes EndpointSlice watch: members leaving and joining change the owners, without a restart', async (t) => {
  const w = await startWorld(t);
  const [a, b, c] = w.ids;
  const sim = await startK8sSim(t, { namespace: 'berth', service: 'berth-peers' });
  const ports = [{ name: 'peer', port: w.port }];
  const ab = (aReady: boolean) => ({ name: 'berth-peers-x7k2p', endpoints: [{ addresses: ['127.0.0.1'], ready: aReady }, { addresses: ['127.0.0.2'] }], ports });
  sim.put(ab(true));
  // What `[peers] kubernetes = { namespace = "berth", service = "berth-peers", port = "peer" }` builds in a pod.
  const membership = kubernetesMembership({
    namespace: 'berth',
    service: 'berth-peers',
    port: 'peer',
    self: w.self,
    log: silent,
    apiServer: sim.url,
    caFile: sim.caFile,
    tokenFile: sim.tokenFile,
    backoff: { initialMs: 50, maxMs: 500 },
  });
  const node = await startInProcessNode(t, { membership, upstreamUrl: w.uplink, keyFile: w.keyFile });
  t.same([...membership.members()], [a, b], 'listed: A and B');
  await w.fetchFrom(t, node, w.roles.first, rankMembers(w.roles.first, [a, b])[0]!, 'with A and B');

  const [cJoins, cDeleted] = w.roles.ofC;
  const [aNotReady, aBack] = w.roles.ofA;

  t.not(w.firstAsked(node, cJoins), 'C', 'before C joins, another node is asked first for its blob');
  sim.put({ name: 'berth-peers-c9q4z', endpoints: [{ addresses: ['127.0.0.3'] }], ports });
  await membersBecome(membership, [a, b, c]);
  await w.fetchFrom(t, node, cJoins, c, 'C joined (a slice ADDED)');

  sim.put(ab(false));
  await membersBecome(membership, [b, c]);
  await w.fetchFrom(t, node, aNotReady, rankMembers(aNotReady, [b, c])[0]!, "A not ready (a slice MODIFIED): A's blob comes from its next owner");

  sim.put(ab(true));
  await membersBecome(membership, [a, b, c]);
  await w.fetchFrom(t, node, aBack, a, 'A ready again: A owns its blobs again');

  sim.remove('berth-peers-c9q4z');
  await membersBecome(membership, [a, b]);
  await w.fetchFrom(t, node, cDeleted, rankMembers(cDeleted, [a, b])[0]!, "C's slice DELETED: C's blob comes from its next owner");
});
