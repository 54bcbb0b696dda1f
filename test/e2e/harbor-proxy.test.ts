/**
 * via_harbor_project with real containerd: docker.io pulls go through the
 * Harbor proxy-cache project while Harbor answers, and straight to docker.io
 * (here a Distribution standing in for it) once Harbor is stopped.
 */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { startHarborSim } from '../harbor-sim/index.js';
import { startRegistry } from '../harness/registry.js';
import { makeImage, pushImage } from '../harness/images.js';
import { startContainerd, writeHostsToml } from '../harness/containerd.js';
import { startBerth } from '../harness/berth.js';
import { tempDirFor } from '../harness/procs.js';

t.test('docker.io through a Harbor proxy-cache project, straight to docker.io when Harbor is down', async (t) => {
  const work = await tempDirFor(t, 'berth-harbor-proxy');
  const hub = await startRegistry(t);
  const first = await makeImage(path.join(work, 'first'), { layers: 2, layerSize: 50_000, seed: 'hp-first', tag: 'v1' });
  const second = await makeImage(path.join(work, 'second'), { layers: 2, layerSize: 50_000, seed: 'hp-second', tag: 'v1' });
  await pushImage(first.layoutDir, 'v1', hub, 'library/first:v1');
  await pushImage(second.layoutDir, 'v1', hub, 'library/second:v1');

  const sim = await startHarborSim(t);
  sim.addRobot('robot$edge-sync', 'Robot-Secret-2', {
    permissions: [{ kind: 'project', namespace: '*', access: ['project:read', 'metadata:list', 'metadata:read', 'repository:list', 'repository:read', 'repository:pull', 'artifact:list', 'artifact:read', 'artifact-addition:read', 'accessory:list', 'tag:list'].map((a) => ({ resource: a.split(':')[0]!, action: a.split(':')[1]! })) }],
  });
  sim.addProject('dockerhub-proxy', { public: true, upstream: { url: hub.url, type: 'docker-hub' } });
  const pw = path.join(work, 'robot.password');
  fs.writeFileSync(pw, 'Robot-Secret-2\n');
  const berth = await startBerth(t, {
    upstreams: [{ registry: 'docker.io', url: hub.url, via_harbor_project: 'dockerhub-proxy' }],
    extra: { harbor: { url: sim.url, username: 'robot$edge-sync', password_file: pw, sync_interval: '1h' } },
  });
  const hostsDir = path.join(work, 'certs.d');
  await writeHostsToml(hostsDir, 'docker.io', berth.url);
  const ctd = await startContainerd(t);
  t.equal((await berth.cli(['sync'])).code, 0, 'policies synced');

  await t.test('while Harbor answers, berth asks its proxy-cache project', async (t) => {
    const mark = sim.mark();
    const hubMark = hub.mark();
    const r = await ctd.pull('docker.io/library/first:v1', { hostsDir });
    t.equal(r.code, 0, `pull: ${r.stderr}`);
    const paths = sim.requests({ kind: 'v2', since: mark }).map((x) => x.path);
    t.ok(paths.some((p) => p.startsWith('/v2/dockerhub-proxy/library/first/manifests/')), 'manifests through /v2/dockerhub-proxy/library/first');
    t.ok(paths.some((p) => p.startsWith('/v2/dockerhub-proxy/library/first/blobs/')), 'blobs too');
    await sim.proxyIdle();
    t.ok(hub.requests({ since: hubMark }).length > 0, 'Harbor fetched from docker.io for berth');
  });

  await t.test('with Harbor stopped, berth goes straight to docker.io', async (t) => {
    await sim.stop();
    const hubMark = hub.mark();
    const r = await ctd.pull('docker.io/library/second:v1', { hostsDir });
    t.equal(r.code, 0, `pull: ${r.stderr}`);
    await hub.waitForRequests((reqs) => reqs.some((x) => x.seq >= hubMark && x.path.startsWith('/v2/library/second/blobs/')), 10_000);
    t.pass('blobs of an uncached image came straight from docker.io');
    await sim.start();
  });
  t.same(sim.errors(), [], 'the simulator itself never failed');
});
