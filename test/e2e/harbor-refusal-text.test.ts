/**
 * A refusal is worded by Harbor on every path through berth. Harbor answers
 * a refused manifest HEAD with a bare 412 (reference §2: "A HEAD rejection
 * is a bodiless 412"), and berth asks with HEAD where it revalidates a tag
 * or checks that a repository holds a digest it cached through another one.
 * The client's GET must still carry Harbor's own message, to the letter:
 * by tag and by digest, after berth's HEAD or the client's, online and with
 * Harbor stopped.
 */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { ROBOT_ACCESS, startHarborSim } from '../harbor-sim/index.js';
import { makeImage } from '../harness/images.js';
import { startBerth } from '../harness/berth.js';
import { berthManifest, harborAnswer } from '../harness/harbor-pulls.js';
import { tempDirFor } from '../harness/procs.js';

/** Harbor's text for N vulnerabilities against a "High" threshold (vulnerable.go), spelled out so a drift shows. */
const harborText = (n: string): string =>
  `current image with ${n} cannot be pulled due to configured policy in 'Prevent images with vulnerability severity of "High" or higher from running.' ` +
  'To continue with pull, please contact your project administrator to exempt matched vulnerabilities through configuring the CVE allowlist.';
const TWO = harborText('2 vulnerabilities');
const ONE = harborText('1 vulnerability');

t.test("Harbor's refusal text survives berth's HEADs, by tag and by digest, online and offline", async (t) => {
  const work = await tempDirFor(t, 'berth-harbor-412');
  const sim = await startHarborSim(t);
  sim.addRobot('robot$edge-sync', 'Robot-Secret-4', { permissions: [{ kind: 'project', namespace: '*', access: ROBOT_ACCESS }] });
  sim.addProject('edge', { public: true, metadata: { prevent_vul: 'true', severity: 'high' } });
  sim.addProject('open', { public: true });

  const appImg = await makeImage(path.join(work, 'app'), { layers: 1, layerSize: 30_000, seed: 'r412-app', tag: 'v1' });
  const headImg = await makeImage(path.join(work, 'head'), { layers: 1, layerSize: 30_000, seed: 'r412-head', tag: 'v1' });
  const sharedImg = await makeImage(path.join(work, 'shared'), { layers: 1, layerSize: 30_000, seed: 'r412-shared', tag: 'v1' });
  const app = await sim.pushImage('edge', 'app', 'v1', appImg);
  const headOnly = await sim.pushImage('edge', 'head', 'v1', headImg);
  const shared = await sim.pushImage('edge', 'shared', 'v1', sharedImg);
  const ctd = await sim.pushImage('edge', 'ctd', 'v1', await makeImage(path.join(work, 'ctd'), { layers: 1, layerSize: 30_000, seed: 'r412-ctd', tag: 'v1' }));
  t.equal(await sim.pushImage('open', 'shared', 'v1', sharedImg), shared, 'the same image in a project without a policy');
  sim.setScan('edge', 'app', app, { status: 'Success', vulnerabilities: [] });
  const twoVulns = { status: 'Success', vulnerabilities: [
    { id: 'CVE-2024-4101', package: 'openssl', version: '3.0.11', severity: 'High' },
    { id: 'CVE-2024-4102', package: 'zlib', version: '1.2.13', severity: 'Low' },
  ] };
  sim.setScan('edge', 'head', headOnly, twoVulns);
  sim.setScan('edge', 'ctd', ctd, { status: 'Success', vulnerabilities: [{ id: 'CVE-2024-4301', package: 'curl', version: '8.0.0', severity: 'High' }] });
  sim.setScan('edge', 'shared', shared, { status: 'Success', vulnerabilities: [{ id: 'CVE-2024-4201', package: 'glibc', version: '2.36', severity: 'Critical' }] });

  const pw = path.join(work, 'robot.password');
  fs.writeFileSync(pw, 'Robot-Secret-4\n', { mode: 0o600 });
  // tag_ttl 0: every tag request is a revalidation with an upstream HEAD, the path under test.
  const berth = await startBerth(t, {
    tagTtl: '0s',
    upstreams: [{ registry: sim.host, url: sim.url, username: 'robot$edge-sync', password_file: pw }],
    extra: { harbor: { url: sim.url, username: 'robot$edge-sync', password_file: pw, sync_interval: '1h', offline_grace: '72h', on_expired: 'deny' } },
  });
  t.equal((await berth.cli(['sync'])).code, 0, 'policies synced');
  const upstreamHeads = (since: number, repo: string, status: number) =>
    sim.requests({ kind: 'v2', since }).filter((r) => r.method === 'HEAD' && r.path.startsWith(`/v2/${repo}/manifests/`) && r.status === status).length;

  await t.test("GET by tag after berth's revalidating HEAD (online)", async (t) => {
    t.equal((await berthManifest(berth, sim.host, 'edge/app', 'v1')).status, 200, 'pulled while clean: berth knows the tag');
    sim.setScan('edge', 'app', app, twoVulns);
    t.same(await harborAnswer(sim.url, 'edge/app', 'v1', 'robot$edge-sync', 'Robot-Secret-4'), { status: 412, message: TWO }, "Harbor's own answer");
    const mark = sim.mark();
    const get = await berthManifest(berth, sim.host, 'edge/app', 'v1');
    t.equal(get.status, 412);
    t.equal(get.message, TWO, "Harbor's words, not berth's");
    t.ok(upstreamHeads(mark, 'edge/app', 412) >= 1, 'berth revalidated with a HEAD, which Harbor refused bodiless');
    const again = await berthManifest(berth, sim.host, 'edge/app', 'v1');
    t.equal(again.message, TWO, 'and again');
  });

  await t.test("GET by tag after the client's own HEAD (online)", async (t) => {
    const head = await berthManifest(berth, sim.host, 'edge/head', 'v1', { method: 'HEAD' });
    t.equal(head.status, 412);
    t.equal(head.text, '', 'no body on HEAD');
    const get = await berthManifest(berth, sim.host, 'edge/head', 'v1');
    t.equal(get.status, 412);
    t.equal(get.message, TWO);
  });

  await t.test('GET by digest after a HEAD: client HEAD then GET, and a digest cached through another repository', async (t) => {
    const head = await berthManifest(berth, sim.host, 'edge/head', headOnly, { method: 'HEAD' });
    t.equal(head.status, 412);
    t.equal((await berthManifest(berth, sim.host, 'edge/head', headOnly)).message, TWO, 'client HEAD, then GET by digest');
    t.equal((await berthManifest(berth, sim.host, 'open/shared', shared)).status, 200, 'cached through open/shared');
    const mark = sim.mark();
    const get = await berthManifest(berth, sim.host, 'edge/shared', shared);
    t.equal(get.status, 412);
    t.equal(get.message, ONE, "edge/shared: Harbor's words");
    t.ok(upstreamHeads(mark, 'edge/shared', 412) >= 1, 'berth asked whether edge/shared holds the digest with a HEAD, which Harbor refused bodiless');
  });

  await t.test('a tag only ever refused to a HEAD (containerd resolves with HEAD)', async (t) => {
    t.equal((await berthManifest(berth, sim.host, 'edge/ctd', 'v1', { method: 'HEAD' })).status, 412, 'by tag');
    t.equal((await berthManifest(berth, sim.host, 'edge/ctd', ctd, { method: 'HEAD' })).status, 412, 'by digest');
  });

  await t.test("offline: every one of them still refused in Harbor's words", async (t) => {
    await sim.stop();
    for (const [repo, ref, text] of [
      ['edge/app', 'v1', TWO],
      ['edge/head', 'v1', TWO],
      ['edge/head', headOnly, TWO],
      ['edge/shared', shared, ONE],
      ['edge/ctd', 'v1', ONE],
      ['edge/ctd', ctd, ONE],
    ] as const) {
      const get = await berthManifest(berth, sim.host, repo, ref);
      t.equal(get.status, 412, `${repo} ${ref}`);
      t.equal(get.message, text, `${repo} ${ref}: Harbor's words`);
    }
    await sim.start();
  });
  t.same(sim.errors(), [], 'the simulator itself never failed');
});
