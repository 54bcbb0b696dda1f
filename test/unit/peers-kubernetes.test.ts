/**
 * Site membership from EndpointSlices, against the Kubernetes API simulator over real HTTPS:
 * the list, the watch events (ADDED, MODIFIED, DELETED, BOOKMARK, ERROR 410), a watch the server
 * ends or the network cuts, and the errors an operator must be able to read (token, RBAC, CA).
 * Every wait is on an event (a membership change, a request reaching the simulator).
 */
import { Writable } from 'node:stream';
import { pino } from 'pino';
import t from 'tap';
import { KubernetesError, kubernetesMembership, sliceMembers, type KubernetesMembershipOptions } from '../../src/peers/kubernetes.js';
import type { Membership } from '../../src/peers/membership.js';
import { makeCa } from '../harness/pki.js';
import { tempDirFor, type Teardown } from '../harness/procs.js';
import { startK8sSim, type SimRequest, type SliceSpec, type StartedK8sSim } from '../k8s-sim/index.js';

const NS = 'berth';
const SVC = 'berth-peers';
const SELF = '10.0.0.11:5051';
/** Generous: only a broken client waits this long. */
const WAIT_MS = 20_000;

function capturingLogger(): { log: pino.Logger; lines: string[] } {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(chunk.toString('utf8'));
      cb();
    },
  });
  return { log: pino({ level: 'debug' }, sink), lines };
}

/** Resolves once `m.members()` satisfies `ok`, checked now and on every change. */
function until(m: Membership, what: string, ok: (members: readonly string[]) => boolean): Promise<readonly string[]> {
  return new Promise((resolve, reject) => {
    let off = (): void => undefined;
    const timer = setTimeout(() => {
      off();
      reject(new Error(`members never became ${what}; they are ${JSON.stringify(m.members())}`));
    }, WAIT_MS);
    const check = (members: readonly string[]): void => {
      if (!ok(members)) return;
      clearTimeout(timer);
      off();
      resolve(members);
    };
    off = m.onChange(check);
    check(m.members());
  });
}

function equals(m: Membership, want: string[]): Promise<readonly string[]> {
  return until(m, JSON.stringify(want), (got) => JSON.stringify(got) === JSON.stringify(want));
}

/** The next request to the simulator that `pred` accepts. */
function request(sim: StartedK8sSim, kind: 'watch' | 'list', pred: (r: SimRequest) => boolean = () => true): Promise<SimRequest> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      sim.off(kind, on);
      reject(new Error(`no ${kind} request came`));
    }, WAIT_MS);
    const on = (r: SimRequest): void => {
      if (!pred(r)) return;
      clearTimeout(timer);
      sim.off(kind, on);
      resolve(r);
    };
    sim.on(kind, on);
  });
}

const sliceA: SliceSpec = {
  name: 'berth-peers-a1b2c',
  endpoints: [
    { addresses: ['10.0.0.11'] }, // this node
    { addresses: ['10.0.0.12'] },
    { addresses: ['10.0.0.13'], ready: false },
    { addresses: ['10.0.0.14'], ready: null, serving: null, terminating: null }, // conditions absent: ready
    { addresses: ['10.0.0.15'], ready: true, terminating: true }, // publishNotReadyAddresses keeps it ready
  ],
  ports: [
    { name: 'metrics', port: 9090 },
    { name: 'peer', port: 5051 },
  ],
};
const sliceB: SliceSpec = { name: 'berth-peers-v6x9z', addressType: 'IPv6', endpoints: [{ addresses: ['fd00::0:2'] }] };
/** Shares 10.0.0.12 with slice A (the EndpointSlice controller may name an endpoint twice while it moves it). */
const sliceF: SliceSpec = { name: 'berth-peers-f7g8h', endpoints: [{ addresses: ['10.0.0.12'] }] };

const initial = ['10.0.0.12:5051', '10.0.0.14:5051', '[fd00::2]:5051'];

async function seeded(t: Teardown): Promise<StartedK8sSim> {
  const sim = await startK8sSim(t, { namespace: NS, service: SVC });
  sim.put(sliceA);
  sim.put(sliceB);
  sim.put(sliceF);
  sim.put({ name: 'berth-peers-fqdn1', addressType: 'FQDN', endpoints: [{ addresses: ['berth-0.berth-peers.berth.svc'] }] });
  sim.put({ name: 'other-svc-q1w2e', service: 'other', endpoints: [{ addresses: ['10.9.9.9'] }] });
  sim.put({ name: 'berth-peers-noport', endpoints: [{ addresses: ['10.0.0.16'] }], ports: [{ name: 'http', port: 8080 }] });
  return sim;
}

function membership(t: Teardown, sim: StartedK8sSim, extra: Partial<KubernetesMembershipOptions> = {}): { m: Membership; lines: string[] } {
  const { log, lines } = capturingLogger();
  const m = kubernetesMembership({
    namespace: NS,
    service: SVC,
    port: 'peer',
    self: SELF,
    log,
    apiServer: sim.url,
    caFile: sim.caFile,
    tokenFile: sim.tokenFile,
    backoff: { initialMs: 5, maxMs: 50 },
    ...extra,
  });
  t.teardown(() => m.stop());
  return { m, lines };
}

/** A started membership with its first watch open. */
async function watching(t: Teardown, extra: Partial<KubernetesMembershipOptions> = {}): Promise<{ sim: StartedK8sSim; m: Membership; lines: string[] }> {
  const sim = await seeded(t);
  const firstWatch = request(sim, 'watch');
  const { m, lines } = membership(t, sim, extra);
  await m.start();
  await firstWatch;
  return { sim, m, lines };
}

async function rejection(p: Promise<unknown>): Promise<KubernetesError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof KubernetesError) return err;
    throw err;
  }
  throw new Error('expected a rejection');
}

t.test('the first list: ready endpoints of every slice of the Service, on the named port, self left out', async (t) => {
  const sim = await seeded(t);
  const firstWatch = request(sim, 'watch');
  const { m, lines } = membership(t, sim);
  t.same(m.members(), [], 'nothing before start');
  await m.start();
  t.same(m.members(), initial, 'not-ready, terminating, FQDN, other Services and slices without the port left out');
  t.ok(Object.isFrozen(m.members()));

  const list = sim.requests[0]!;
  t.equal(list.path, `/apis/discovery.k8s.io/v1/namespaces/${NS}/endpointslices`);
  t.equal(list.query.get('labelSelector'), `kubernetes.io/service-name=${SVC}`);
  t.equal(list.authorization, 'Bearer eyJhbGciOiJSUzI1NiJ9.sim-token-1.sig', 'the token file, trimmed');
  t.equal(list.watch, false);

  const watch = await firstWatch;
  t.equal(watch.status, 200);
  t.equal(watch.resourceVersion, String(sim.store.resourceVersion), 'watches from the list resourceVersion');
  t.equal(watch.query.get('allowWatchBookmarks'), 'true');
  t.match(watch.query.get('timeoutSeconds'), /^\d+$/);
  t.ok(lines.some((l) => l.includes('"level":40') && l.includes('berth-peers-noport') && l.includes('no port named')), 'a slice without the port is named in a warning');
});

t.test('an endpoint that turns not ready or terminating leaves; one that joins appears', async (t) => {
  const { sim, m } = await watching(t);
  const changes: Array<readonly string[]> = [];
  m.onChange((members) => changes.push(members));

  // 10.0.0.12 stays because slice F names it too; 10.0.0.14 is the one to watch.
  sim.put({ ...sliceA, endpoints: [{ addresses: ['10.0.0.12'] }, { addresses: ['10.0.0.14'], ready: false }] });
  await equals(m, ['10.0.0.12:5051', '[fd00::2]:5051']);

  sim.put({ ...sliceA, endpoints: [{ addresses: ['10.0.0.12'] }, { addresses: ['10.0.0.14'] }, { addresses: ['10.0.0.18'] }] });
  await equals(m, ['10.0.0.12:5051', '10.0.0.14:5051', '10.0.0.18:5051', '[fd00::2]:5051']);

  sim.put({ ...sliceA, endpoints: [{ addresses: ['10.0.0.12'] }, { addresses: ['10.0.0.14'], terminating: true, ready: false }, { addresses: ['10.0.0.18'] }] });
  await equals(m, ['10.0.0.12:5051', '10.0.0.18:5051', '[fd00::2]:5051']);

  sim.put({ name: 'berth-peers-new01', endpoints: [{ addresses: ['10.0.0.20'] }], ports: [{ name: 'peer', port: 6000 }] });
  await equals(m, ['10.0.0.12:5051', '10.0.0.18:5051', '10.0.0.20:6000', '[fd00::2]:5051']);

  // Not for this Service, or no change to the members: no event.
  sim.put({ name: 'other-svc-q1w2e', service: 'other', endpoints: [{ addresses: ['10.9.9.10'] }] });
  sim.put({ ...sliceF, endpoints: [{ addresses: ['10.0.0.12'], nodeName: 'moved' }] });
  sim.put({ name: 'berth-peers-new01', endpoints: [{ addresses: ['10.0.0.21'] }], ports: [{ name: 'peer', port: 6000 }] });
  await equals(m, ['10.0.0.12:5051', '10.0.0.18:5051', '10.0.0.21:6000', '[fd00::2]:5051']);
  t.equal(changes.length, 5, 'one change per real change of the members, none for the rest');
  t.equal(sim.requests.filter((r) => !r.watch).length, 1, 'all of it from one list and its watch');
});

t.test('a DELETED slice removes its members, and only its own', async (t) => {
  const { sim, m } = await watching(t);
  sim.remove(sliceB.name);
  await equals(m, ['10.0.0.12:5051', '10.0.0.14:5051']);
  // 10.0.0.12 is also in slice A: deleting F must keep it. The second delete is the one to wait on.
  sim.remove(sliceF.name);
  sim.remove(sliceA.name);
  await equals(m, []);
  sim.put(sliceF);
  await equals(m, ['10.0.0.12:5051']);
});

t.test('a BOOKMARK moves the resourceVersion the next watch starts from', async (t) => {
  const { sim, m } = await watching(t);
  const listed = sim.store.resourceVersion;
  const changes: Array<readonly string[]> = [];
  m.onChange((members) => changes.push(members));
  const bookmarked = sim.bookmark();
  t.not(bookmarked, String(listed), 'the bookmark carries a newer resourceVersion than anything the client saw');
  const next = request(sim, 'watch');
  sim.endWatches();
  const w = await next;
  t.equal(w.resourceVersion, bookmarked, 'the re-watch starts from the bookmark');
  t.equal(w.status, 200);
  t.same(changes, [], 'a bookmark changes no member');
  t.equal(sim.requests.filter((r) => !r.watch).length, 1, 'no relist for a bookmark or a clean end');
  t.same(m.members(), initial);
});

t.test('ERROR 410 Gone on an open watch: the client lists again and sees what the watch missed', async (t) => {
  const { sim, m } = await watching(t);
  sim.putSilently({ name: 'berth-peers-lost1', endpoints: [{ addresses: ['10.0.0.30'] }] });
  const relist = request(sim, 'list');
  const rewatch = request(sim, 'watch');
  sim.gone();
  await relist;
  await equals(m, ['10.0.0.12:5051', '10.0.0.14:5051', '10.0.0.30:5051', '[fd00::2]:5051']);
  const w = await rewatch;
  t.equal(w.resourceVersion, String(sim.store.resourceVersion), 'watches again from the new list');
  t.equal(w.status, 200);
});

t.test('a re-watch from a compacted resourceVersion gets ERROR 410: the client lists again', async (t) => {
  const { sim, m } = await watching(t);
  sim.store.bump();
  sim.store.compact();
  sim.putSilently({ name: 'berth-peers-lost2', endpoints: [{ addresses: ['10.0.0.31'] }] });
  const relist = request(sim, 'list');
  sim.dropWatches();
  await relist;
  await equals(m, ['10.0.0.12:5051', '10.0.0.14:5051', '10.0.0.31:5051', '[fd00::2]:5051']);
  const watches = sim.requests.filter((r) => r.watch);
  t.ok(Number(watches[1]!.resourceVersion) < sim.store.compactedAt, 'the second watch asked for a compacted resourceVersion');
});

t.test('a dropped connection: the client watches again from the last resourceVersion and misses nothing', async (t) => {
  const { sim, m } = await watching(t);
  sim.put({ name: 'berth-peers-new02', endpoints: [{ addresses: ['10.0.0.40'] }] });
  await until(m, 'with 10.0.0.40', (got) => got.includes('10.0.0.40:5051'));
  const seen = String(sim.store.resourceVersion);
  const next = request(sim, 'watch');
  sim.dropWatches();
  // Made while no watch is open: only a re-watch from `seen` delivers it.
  sim.put({ name: 'berth-peers-new03', endpoints: [{ addresses: ['10.0.0.41'] }] });
  const w = await next;
  t.equal(w.resourceVersion, seen);
  await until(m, 'with 10.0.0.41', (got) => got.includes('10.0.0.41:5051'));
  t.equal(sim.requests.filter((r) => !r.watch).length, 1, 'no relist');
});

t.test('a rotated token: the client reads the file again and keeps watching', async (t) => {
  const { sim, m } = await watching(t, { tokenMaxAgeMs: 60_000 });
  await sim.rotateToken('eyJhbGciOiJSUzI1NiJ9.sim-token-2.sig');
  // Read a minute ago, the old token is still in memory: its 401 sends the client back to the file.
  const refused = request(sim, 'watch', (r) => r.status === 401);
  const accepted = request(sim, 'watch', (r) => r.status === 200);
  sim.dropWatches();
  await refused;
  const w = await accepted;
  t.equal(w.authorization, 'Bearer eyJhbGciOiJSUzI1NiJ9.sim-token-2.sig');
  sim.put({ name: 'berth-peers-new04', endpoints: [{ addresses: ['10.0.0.50'] }] });
  await until(m, 'with 10.0.0.50', (got) => got.includes('10.0.0.50:5051'));
});

t.test('in-cluster config: the API server from KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT', async (t) => {
  const sim = await seeded(t);
  const { m } = membership(t, sim, { apiServer: undefined, env: { KUBERNETES_SERVICE_HOST: '127.0.0.1', KUBERNETES_SERVICE_PORT: String(sim.port) } });
  await m.start();
  t.same(m.members(), initial);
});

t.test('self in IPv6 form is left out however it is written', async (t) => {
  const sim = await seeded(t);
  const { m } = membership(t, sim, { self: '[FD00:0::2]:5051' });
  t.equal(m.self, '[fd00::2]:5051', 'self in the normal form of every member id');
  await m.start();
  t.same(m.members(), ['10.0.0.11:5051', '10.0.0.12:5051', '10.0.0.14:5051']);
});

t.test('a wrong token: start() rejects with K8S_UNAUTHORIZED naming the token file', async (t) => {
  const sim = await seeded(t);
  await sim.rotateToken('a-token-the-file-does-not-have', { writeFile: false });
  const { m } = membership(t, sim);
  const err = await rejection(m.start());
  t.equal(err.code, 'K8S_UNAUTHORIZED');
  t.equal(err.status, 401);
  t.match(err.message, '401 Unauthorized');
  t.match(err.message, sim.tokenFile);
  t.notMatch(err.message, 'sim-token-1', 'the token itself is never in the error');
  t.same(m.members(), []);
  t.equal(sim.requests.filter((r) => r.watch).length, 0, 'no watch after a failed list');
});

t.test('a namespace the Role does not cover: K8S_FORBIDDEN with the API server’s words and the fix', async (t) => {
  const sim = await seeded(t);
  const { m } = membership(t, sim, { namespace: 'kube-system' });
  const err = await rejection(m.start());
  t.equal(err.code, 'K8S_FORBIDDEN');
  t.match(err.message, 'cannot list resource "endpointslices"');
  t.match(err.message, 'get, list and watch');
});

t.test('configuration errors are clear before any request', async (t) => {
  const sim = await seeded(t);
  const notInPod = await rejection(membership(t, sim, { apiServer: undefined, env: {} }).m.start());
  t.equal(notInPod.code, 'K8S_CONFIG');
  t.match(notInPod.message, 'KUBERNETES_SERVICE_HOST');

  const noToken = await rejection(membership(t, sim, { tokenFile: `${sim.tokenFile}.missing` }).m.start());
  t.equal(noToken.code, 'K8S_CONFIG');
  t.match(noToken.message, /token .*token\.missing \(ENOENT\)/);

  const noCa = await rejection(membership(t, sim, { caFile: `${sim.caFile}.missing` }).m.start());
  t.equal(noCa.code, 'K8S_CONFIG');
  t.match(noCa.message, 'cluster CA');
  t.equal(sim.requests.length, 0);
});

t.test('an API server certificate the cluster CA did not sign: K8S_UNREACHABLE, nothing sent', async (t) => {
  const sim = await seeded(t);
  const other = await makeCa(await tempDirFor(t, 'k8s-other-ca'), 'another-ca');
  const err = await rejection(membership(t, sim, { caFile: other.certFile }).m.start());
  t.equal(err.code, 'K8S_UNREACHABLE');
  t.match(err.message, /UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED|CERT/);
  t.match(err.message, `not signed by ${other.certFile}`);
  t.equal(sim.requests.length, 0, 'the token never left on an unverified connection');
});

t.test('stop() closes the watch', async (t) => {
  const { sim, m } = await watching(t);
  const closed = new Promise((resolve) => sim.once('watch-closed', resolve));
  await m.stop();
  await closed;
  t.equal(sim.watchCount(), 0);
  await m.stop();
  t.same(m.members(), initial, 'the last members stay readable');
});

t.test('sliceMembers: the discovery.k8s.io/v1 rules on their own', async (t) => {
  const ports = [{ name: 'peer', port: 5051, protocol: 'TCP' }];
  t.same(sliceMembers({ addressType: 'IPv4', ports, endpoints: [{ addresses: ['10.0.0.1'], conditions: {} }] }, 'peer'), ['10.0.0.1:5051'], 'ready absent is ready');
  t.same(sliceMembers({ addressType: 'IPv4', ports, endpoints: [{ addresses: ['fd00::1'] }] }, 'peer'), [], 'an address of the other family is skipped');
  t.same(sliceMembers({ addressType: 'IPv4', ports: [{ name: 'peer', port: 5051, protocol: 'UDP' }], endpoints: [{ addresses: ['10.0.0.1'] }] }, 'peer'), [], 'a UDP port is not the peer port');
  t.same(sliceMembers({ addressType: 'IPv4', ports: null, endpoints: null }, 'peer'), [], 'null lists, as the API server sends them');
});
