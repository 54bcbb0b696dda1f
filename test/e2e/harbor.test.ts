/**
 * Harbor end to end: real containerd pulls through berth from the Harbor
 * simulator (Harbor's v2.0 API, token service and §2 policy chain over a
 * real Distribution). A vulnerable image is refused with Harbor's own
 * message, a clean one pulls, an allowlist change takes effect after
 * `berth sync`, both decisions hold with Harbor stopped, and a private
 * image pulls only with pull-secret credentials Harbor accepted, offline too.
 */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { ROBOT_ACCESS, startHarborSim } from '../harbor-sim/index.js';
import { makeImage } from '../harness/images.js';
import { startContainerd, writeHostsToml } from '../harness/containerd.js';
import { startBerth } from '../harness/berth.js';
import { berthManifest, harborAnswer } from '../harness/harbor-pulls.js';
import { tempDirFor, waitFor } from '../harness/procs.js';

t.test('Harbor policy and private projects, online and offline, with real containerd', async (t) => {
  const work = await tempDirFor(t, 'berth-harbor');
  const sim = await startHarborSim(t);
  sim.addRobot('robot$edge-sync', 'Robot-Secret-1', { permissions: [{ kind: 'project', namespace: '*', access: ROBOT_ACCESS }] });
  sim.addProject('edge', { public: true, metadata: { prevent_vul: 'true', severity: 'high', reuse_sys_cve_allowlist: 'false' } });
  sim.addProject('secure', { public: false });
  sim.addUser('alice', 'alice-pw', { projects: { secure: 'guest' } });
  sim.addUser('mallory', 'mallory-pw');

  const vulnImg = await makeImage(path.join(work, 'vuln'), { layers: 2, layerSize: 60_000, seed: 'h-vuln', tag: 'v1' });
  const cleanImg = await makeImage(path.join(work, 'clean'), { layers: 2, layerSize: 60_000, seed: 'h-clean', tag: 'v1' });
  const critImg = await makeImage(path.join(work, 'crit'), { layers: 1, layerSize: 60_000, seed: 'h-crit', tag: 'v1' });
  const privImg = await makeImage(path.join(work, 'priv'), { layers: 2, layerSize: 60_000, seed: 'h-priv', tag: 'v1' });
  const laterImg = await makeImage(path.join(work, 'later'), { layers: 1, layerSize: 60_000, seed: 'h-later', tag: 'v1' });
  const vuln = await sim.pushImage('edge', 'vuln', 'v1', vulnImg);
  const clean = await sim.pushImage('edge', 'clean', 'v1', cleanImg);
  const crit = await sim.pushImage('edge', 'crit', 'v1', critImg);
  await sim.pushImage('secure', 'app', 'v1', privImg);
  const later = await sim.pushImage('edge', 'later', 'v1', laterImg);
  sim.setScan('edge', 'later', later, { status: 'Success', vulnerabilities: [] });
  sim.setScan('edge', 'vuln', vuln, { status: 'Success', vulnerabilities: [
    { id: 'CVE-2024-1001', package: 'openssl', version: '3.0.11', severity: 'High' },
    { id: 'CVE-2024-1002', package: 'zlib', version: '1.2.13', severity: 'Low' },
  ] });
  sim.setScan('edge', 'clean', clean, { status: 'Success', vulnerabilities: [] });
  sim.setScan('edge', 'crit', crit, { status: 'Success', vulnerabilities: [{ id: 'CVE-2024-2001', package: 'glibc', version: '2.36', severity: 'Critical' }] });

  const pw = path.join(work, 'robot.password');
  fs.writeFileSync(pw, 'Robot-Secret-1\n', { mode: 0o600 });
  const harborCfg = { url: sim.url, username: 'robot$edge-sync', password_file: pw, sync_interval: '1h', offline_grace: '72h', on_expired: 'deny', prefetch_labels: ['edge-site'] };
  const berth = await startBerth(t, {
    upstreams: [{ registry: sim.host, url: sim.url, username: 'robot$edge-sync', password_file: pw }],
    extra: { harbor: harborCfg },
  });
  // Berth is the only host (no fallback): a refusal must not fall through to Harbor itself.
  const hostsDir = path.join(work, 'certs.d');
  await writeHostsToml(hostsDir, sim.host, berth.url);
  const ctd = await startContainerd(t);
  const ref = (repo: string) => `${sim.host}/${repo}:v1`;

  await t.test('berth sync fetches the policies', async (t) => {
    const r = await berth.cli(['sync', '--json']);
    t.equal(r.code, 0, r.stderr);
    const s = JSON.parse(r.stdout) as { projects: number; hash: string };
    t.ok(s.projects >= 2);
    t.match(s.hash, /^sha256:[a-f0-9]{64}$|^[a-f0-9]{64}$/);
  });

  await t.test('berth prefetch with no argument takes what Harbor marks: a label, a preheat policy', async (t) => {
    sim.setLabels('edge', 'clean', clean, ['edge-site']);
    sim.setPreheatPolicies('edge', [{ id: 1, name: 'edge-hot', project_id: 1, provider_id: 1, enabled: true, filters: JSON.stringify([{ type: 'repository', value: 'lat*' }, { type: 'tag', value: 'v*' }]), trigger: JSON.stringify({ type: 'manual', trigger_setting: {} }) }]);
    const r = await berth.cli(['prefetch', '--json']);
    t.equal(r.code, 0, r.stderr);
    const images = (JSON.parse(r.stdout) as { image: string }[]).map((x) => x.image).sort();
    t.same(images, [`${sim.host}/edge/clean:v1`, `${sim.host}/edge/later:v1`], 'the labelled image and the one the preheat policy selects');
  });

  await t.test("a vulnerable image is refused with Harbor's message; a clean one pulls", async (t) => {
    const pull = await ctd.pull(ref('edge/vuln'), { hostsDir });
    t.not(pull.code, 0, 'containerd refuses');
    t.match(pull.stderr, /412 Precondition Failed/);
    const b = await berthManifest(berth, sim.host, 'edge/vuln', 'v1');
    t.equal(b.status, 412);
    t.equal(b.json?.errors?.[0]?.code, 'PROJECTPOLICYVIOLATION');
    const h = await harborAnswer(sim.url, 'edge/vuln', 'v1', 'robot$edge-sync', 'Robot-Secret-1');
    t.equal(h.status, 412, 'Harbor itself refuses it too');
    t.equal(b.json?.errors?.[0]?.message, h.message, "berth's message is Harbor's, to the letter");
    t.match(b.json?.errors?.[0]?.message ?? '', /current image with 2 vulnerabilities cannot be pulled due to configured policy in 'Prevent images with vulnerability severity of "High" or higher from running\./);
    const head = await berthManifest(berth, sim.host, 'edge/vuln', 'v1', { method: 'HEAD' });
    t.equal(head.status, 412);
    t.equal(head.text, '', 'no body on HEAD');
    const ok = await ctd.pull(ref('edge/clean'), { hostsDir });
    t.equal(ok.code, 0, `clean image pulls: ${ok.stderr}`);
    const critRes = await berthManifest(berth, sim.host, 'edge/crit', 'v1');
    t.equal(critRes.status, 412, 'the critical one is refused too (and now cached, for the offline checks)');
    t.ok(berth.logs().some((l) => l.msg === 'pull refused by policy'), 'each refusal is logged with its reason');
  });

  await t.test("a policy tightened after caching is enforced from berth's own snapshot, in Harbor's words", async (t) => {
    const first = await ctd.pull(ref('edge/later'), { hostsDir });
    t.equal(first.code, 0, `pulls while clean: ${first.stderr}`);
    sim.setScan('edge', 'later', later, { status: 'Success', vulnerabilities: [
      { id: 'CVE-2024-3001', package: 'curl', version: '8.0.0', severity: 'Critical' },
      { id: 'CVE-2024-3002', package: 'curl', version: '8.0.0', severity: 'Medium' },
      { id: 'CVE-2024-3003', package: 'expat', version: '2.5.0', severity: 'Low' },
    ] });
    t.equal((await berthManifest(berth, sim.host, 'edge/later', 'v1')).status, 200, 'served from the cache until berth syncs');
    t.equal((await berth.cli(['sync'])).code, 0);
    await waitFor('the daemon to pick up the new snapshot', async () => (await berthManifest(berth, sim.host, 'edge/later', 'v1')).status === 412, { timeoutMs: 10_000, intervalMs: 200 });
    const b = await berthManifest(berth, sim.host, 'edge/later', 'v1');
    const h = await harborAnswer(sim.url, 'edge/later', 'v1', 'robot$edge-sync', 'Robot-Secret-1');
    t.equal(h.status, 412);
    t.equal(b.json?.errors?.[0]?.message, h.message, "berth's own evaluation gives Harbor's message, to the letter");
    t.ok(berth.logs().some((l) => l.msg === 'pull refused by policy' && l.reason === 'vuln-severity'), 'logged with the reason');
  });

  await t.test('an allowlist change takes effect after berth sync', async (t) => {
    sim.setProjectAllowlist('edge', ['CVE-2024-1001']);
    t.equal((await berthManifest(berth, sim.host, 'edge/vuln', 'v1')).status, 412, 'still refused before the sync');
    const r = await berth.cli(['sync']);
    t.equal(r.code, 0, r.stderr);
    t.match(r.stdout, /edge/, `sync prints what changed:\n${r.stdout}`);
    await waitFor('the daemon to pick up the new snapshot', async () => (await berthManifest(berth, sim.host, 'edge/vuln', 'v1')).status === 200, { timeoutMs: 10_000, intervalMs: 200 });
    const pull = await ctd.pull(ref('edge/vuln'), { hostsDir });
    t.equal(pull.code, 0, `allowlisted image pulls: ${pull.stderr}`);
    const h = await harborAnswer(sim.url, 'edge/vuln', 'v1', 'robot$edge-sync', 'Robot-Secret-1');
    t.equal(h.status, 200, 'Harbor agrees');
  });

  await t.test('a private image pulls with pull-secret credentials Harbor accepts, never without', async (t) => {
    const none = await ctd.pull(ref('secure/app'), { hostsDir });
    t.not(none.code, 0, 'no credentials: refused');
    const noneHttp = await berthManifest(berth, sim.host, 'secure/app', 'v1');
    t.equal(noneHttp.status, 401);
    t.match(noneHttp.headers.get('www-authenticate') ?? '', /^Basic /);
    const blob = privImg.manifests[0]!.layers[0]!;
    const blobNoAuth = await fetch(`${berth.url}/v2/secure/app/blobs/${blob}?ns=${sim.host}`);
    t.equal(blobNoAuth.status, 401, 'blobs of a private project need credentials too');
    const wrong = await ctd.pull(ref('secure/app'), { hostsDir, user: 'mallory:mallory-pw' });
    t.not(wrong.code, 0, 'credentials without access: refused');
    const ok = await ctd.pull(ref('secure/app'), { hostsDir, user: 'alice:alice-pw' });
    t.equal(ok.code, 0, `alice pulls: ${ok.stderr}`);
    const guess = await berthManifest(berth, sim.host, 'secure/app', 'v1', { auth: 'alice:a-wrong-guess' });
    t.equal(guess.status, 401, "a stranger's guess at alice's password is refused (and must not erase her remembered pair)");
    const tagsAnon = await fetch(`${berth.url}/v2/secure/app/tags/list?ns=${sim.host}`);
    t.equal(tagsAnon.status, 401, "a private repository's tag list needs credentials too");
    const viaPublic = await fetch(`${berth.url}/v2/edge/clean/blobs/${blob}?ns=${sim.host}`);
    t.not(viaPublic.status, 200, 'a private blob is not handed out under a public repository');
  });

  await t.test('with Harbor stopped, both decisions hold and private content stays private', async (t) => {
    await sim.stop();
    t.equal((await berthManifest(berth, sim.host, 'edge/crit', 'v1')).status, 412, 'an image Harbor refused is still refused offline');
    t.equal((await berthManifest(berth, sim.host, 'edge/later', 'v1')).status, 412, 'a cached image the policy refuses is still refused offline');
    await ctd.forget();
    const clean = await ctd.pull(ref('edge/clean'), { hostsDir });
    t.equal(clean.code, 0, `clean image pulls offline: ${clean.stderr}`);
    const alice = await ctd.pull(ref('secure/app'), { hostsDir, user: 'alice:alice-pw' });
    t.equal(alice.code, 0, `remembered credentials pull offline: ${alice.stderr}`);
    const anon = await berthManifest(berth, sim.host, 'secure/app', 'v1');
    t.equal(anon.status, 401, 'no credentials: refused offline');
    const mallory = await berthManifest(berth, sim.host, 'secure/app', 'v1', { auth: 'mallory:mallory-pw' });
    t.equal(mallory.status, 401, 'unverified credentials: refused offline');
    const alicWrong = await berthManifest(berth, sim.host, 'secure/app', 'v1', { auth: 'alice:not-her-password' });
    t.equal(alicWrong.status, 401, 'a wrong password for a remembered user: refused offline');
  });

  await t.test('audit, status and metrics show the refusals; no secret anywhere', async (t) => {
    const a = await berth.cli(['audit', '--json']);
    t.equal(a.code, 0, a.stderr);
    const rows = JSON.parse(a.stdout) as { decision: string; repository: string; reason: string | null; username: string | null }[];
    t.ok(rows.some((r) => r.decision === 'refused' && r.repository === 'edge/vuln' && /vulnerabilit/.test(r.reason ?? '')), 'refusal recorded with why');
    t.ok(rows.some((r) => r.decision === 'unauthorized' && r.repository === 'secure/app'), 'unauthorized recorded');
    t.ok(rows.some((r) => r.username === 'alice'), 'the user name is recorded');
    const st = JSON.parse((await berth.cli(['status', '--json'])).stdout) as { policy: { snapshotAgeMs: number | null; projects: { name: string }[] }; audit: { last24h: Record<string, number> } };
    t.ok(st.policy.snapshotAgeMs !== null);
    t.ok(st.policy.projects.some((p) => p.name === 'edge'));
    t.ok((st.audit.last24h.refused ?? 0) >= 2);
    const metrics = await (await fetch(`${berth.url}/metrics`)).text();
    t.match(metrics, /berth_policy_denials_total\{reason="vuln-severity",project="edge"\} [1-9]/, 'by reason and project');
    t.match(metrics, /berth_policy_snapshot_age_seconds \d/);
    const everything = berth.service.output() + a.stdout + metrics + JSON.stringify(st);
    for (const secret of ['Robot-Secret-1', 'alice-pw', 'mallory-pw', 'not-her-password']) t.notOk(everything.includes(secret), `${secret} appears nowhere`);
  });

  await t.test('past offline_grace, on_expired = "deny" refuses', async (t) => {
    await sim.start();
    const short = await startBerth(t, {
      upstreams: [{ registry: sim.host, url: sim.url, username: 'robot$edge-sync', password_file: pw }],
      extra: { harbor: { ...harborCfg, offline_grace: '2s' } },
    });
    t.equal((await short.cli(['sync'])).code, 0);
    t.equal((await berthManifest(short, sim.host, 'edge/clean', 'v1')).status, 200, 'served while the snapshot is fresh');
    await sim.stop();
    const since = Date.now();
    await waitFor('offline_grace to pass', () => Date.now() - since > 2500, { intervalMs: 100, timeoutMs: 10_000 });
    const r = await berthManifest(short, sim.host, 'edge/clean', 'v1');
    t.equal(r.status, 412);
    t.match(r.json?.errors?.[0]?.message ?? '', /last synced from Harbor/);
    await sim.start();
  });
  t.same(sim.errors(), [], 'the simulator itself never failed');
});
