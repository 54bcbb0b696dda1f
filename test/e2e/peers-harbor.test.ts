/**
 * Issue 12: site peers and Harbor. Nothing a peer says bypasses the node
 * that answers containerd: a private project's content needs the client's
 * credentials on that node even though another node holds the layers, and a
 * policy-refused image stays refused on every node. Real parts: the Harbor
 * simulator (v2.0 API, token service, policy chain over a real Distribution),
 * three berths on 127.0.0.1-3 with `[peers]`.
 */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { ROBOT_ACCESS, startHarborSim } from '../harbor-sim/index.js';
import { makeImage } from '../harness/images.js';
import { startBerth, type Berth } from '../harness/berth.js';
import { OCI_ACCEPT } from '../harness/harbor-pulls.js';
import { freePort, tempDirFor } from '../harness/procs.js';

function get(berth: Berth, ns: string, p: string, auth?: string): Promise<Response> {
  return fetch(`${berth.url}/v2/${p}?ns=${ns}`, { headers: { Accept: OCI_ACCEPT, ...(auth ? { Authorization: 'Basic ' + Buffer.from(auth).toString('base64') } : {}) } });
}

t.test('site peers with Harbor: private content and policy stay on the node that answers', async (t) => {
  const work = await tempDirFor(t, 'berth-peers-harbor');
  const sim = await startHarborSim(t);
  sim.addRobot('robot$edge-sync', 'Robot-Secret-1', { permissions: [{ kind: 'project', namespace: '*', access: ROBOT_ACCESS }] });
  sim.addProject('edge', { public: true, metadata: { prevent_vul: 'true', severity: 'high', reuse_sys_cve_allowlist: 'false' } });
  sim.addProject('secure', { public: false });
  sim.addUser('alice', 'alice-pw', { projects: { secure: 'guest' } });
  const privImg = await makeImage(path.join(work, 'priv'), { layers: 2, layerSize: 80_000, seed: 'ph-priv', tag: 'v1' });
  const vulnImg = await makeImage(path.join(work, 'vuln'), { layers: 1, layerSize: 60_000, seed: 'ph-vuln', tag: 'v1' });
  await sim.pushImage('secure', 'app', 'v1', privImg);
  const vuln = await sim.pushImage('edge', 'vuln', 'v1', vulnImg);
  sim.setScan('edge', 'vuln', vuln, { status: 'Success', vulnerabilities: [{ id: 'CVE-2024-1001', package: 'openssl', version: '3.0.11', severity: 'High' }] });

  const pw = path.join(work, 'robot.password');
  fs.writeFileSync(pw, 'Robot-Secret-1\n', { mode: 0o600 });
  const keyFile = path.join(work, 'site.key');
  fs.writeFileSync(keyFile, randomBytes(32).toString('base64'), { mode: 0o600 });
  const peers: string[] = [];
  for (let i = 1; i <= 3; i++) peers.push(`127.0.0.${i}:${await freePort()}`);
  const harbor = { url: sim.url, username: 'robot$edge-sync', password_file: pw, sync_interval: '1h', offline_grace: '72h', on_expired: 'deny' };
  const [a, , c] = (await Promise.all(
    peers.map((listen) =>
      startBerth(t, {
        upstreams: [{ registry: sim.host, url: sim.url, username: 'robot$edge-sync', password_file: pw }],
        extra: { harbor, peers: { listen, key_file: keyFile, members: peers } },
      }),
    ),
  )) as [Berth, Berth, Berth];
  for (const n of [a, c]) t.equal((await n.cli(['sync'])).code, 0, 'policies synced');

  await t.test('a private image pulled on node A: node C refuses it without credentials', async (t) => {
    const m = await get(a, sim.host, 'secure/app/manifests/v1', 'alice:alice-pw');
    t.equal(m.status, 200, 'node A, with alice’s pull secret');
    for (const bl of privImg.blobs) t.equal((await get(a, sim.host, `secure/app/blobs/${bl.digest}`, 'alice:alice-pw')).status, 200, `node A holds ${bl.digest.slice(7, 19)}`);
    const noCreds = await get(c, sim.host, 'secure/app/manifests/v1');
    t.equal(noCreds.status, 401, 'node C: the manifest needs credentials');
    t.match(noCreds.headers.get('www-authenticate') ?? '', /^Basic /);
    for (const bl of privImg.blobs) {
      const r = await get(c, sim.host, `secure/app/blobs/${bl.digest}`);
      await r.arrayBuffer();
      t.equal(r.status, 401, `node C: layer ${bl.digest.slice(7, 19)} needs credentials though node A holds it`);
    }
    const wrong = await get(c, sim.host, 'secure/app/manifests/v1', 'alice:wrong');
    await wrong.arrayBuffer();
    t.equal(wrong.status, 401, 'node C: a wrong password is refused');
    const right = await get(c, sim.host, `secure/app/blobs/${privImg.blobs[0]!.digest}`, 'alice:alice-pw');
    t.equal(Buffer.from(await right.arrayBuffer()).length, privImg.blobs[0]!.size, 'node C with alice’s pull secret: the layer');
  });

  await t.test('a policy-refused image is refused on every node', async (t) => {
    for (const [name, node] of [['A', a], ['C', c]] as const) {
      const r = await get(node, sim.host, 'edge/vuln/manifests/v1');
      const body = (await r.json()) as { errors: { code: string }[] };
      t.equal(r.status, 412, `node ${name}: 412`);
      t.equal(body.errors[0]?.code, 'PROJECTPOLICYVIOLATION');
    }
  });
});
