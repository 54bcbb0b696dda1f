/**
 * Signature accessories through berth, against the Harbor simulator: Harbor
 * exempts a cosign or notation signature from every pull check (reference
 * §2a step 3, §12.1), so `cosign verify` and policy controllers can fetch the
 * signature of an image a content-trust or vulnerability policy guards.
 * berth must let them through too: by tag (cosign's `sha256-<hex>.sig`) and
 * by digest, GET and HEAD, with real clients (skopeo, containerd's fetch),
 * online and with Harbor stopped, even when berth has no synced facts for
 * the signature (it then judges the manifest's own content). The signatures:
 * cosign's default (tag scheme, signed twice, so the first is untagged and
 * nothing in Harbor's JSON for it says "signature"), cosign's and notation's
 * OCI `subject` forms.
 */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { ROBOT_ACCESS, startHarborSim } from '../harbor-sim/index.js';
import { makeImage, sha256Digest } from '../harness/images.js';
import { startContainerd, writeHostsToml } from '../harness/containerd.js';
import { startBerth, type Berth } from '../harness/berth.js';
import { berthManifest, harborAnswer } from '../harness/harbor-pulls.js';
import { run, tempDirFor } from '../harness/procs.js';

/** What these requests accept: OCI images and indexes, and Docker schema2 images. */
const ACCEPT = 'application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json';

/** `skopeo inspect --raw` through berth: the manifest GET a signature verifier makes, from a real client. */
async function skopeoRaw(berth: Berth, repoAndRef: string): Promise<{ code: number | null; digest?: string; stderr: string }> {
  const r = await run('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${berth.host}/${repoAndRef}`], { timeoutMs: 60_000 });
  return { code: r.code, stderr: r.stderr, ...(r.code === 0 ? { digest: sha256Digest(r.stdoutBuf) } : {}) };
}

t.test('signature accessories are exempt from the pull checks through berth, as in Harbor', async (t) => {
  const work = await tempDirFor(t, 'berth-harbor-sig');
  const sim = await startHarborSim(t);
  sim.addRobot('robot$edge-sync', 'Robot-Secret-3', { permissions: [{ kind: 'project', namespace: '*', access: ROBOT_ACCESS }] });
  // Both signatures required, and a vulnerability policy that refuses the image itself.
  sim.addProject('signed', { public: true, metadata: { enable_content_trust_cosign: 'true', enable_content_trust: 'true', prevent_vul: 'true', severity: 'low' } });
  const img = await makeImage(path.join(work, 'app'), { layers: 1, layerSize: 40_000, seed: 'sig-app', tag: 'v1' });
  const subject = await sim.pushImage('signed', 'app', 'v1', img);
  sim.setScan('signed', 'app', subject, { status: 'Success', vulnerabilities: [{ id: 'CVE-2024-7001', package: 'openssl', version: '3.0.11', severity: 'High' }] });
  const ociCosignSig = await sim.addAccessory('signed', 'app', subject, 'signature.cosign');
  const notationSig = await sim.addAccessory('signed', 'app', subject, 'signature.notation');
  // cosign's default form, signed twice (a second key, a re-run pipeline): the tag moves on.
  const firstSig = await sim.cosignSign('signed', 'app', subject);
  const cosignSig = await sim.cosignSign('signed', 'app', subject);
  const sigTag = `sha256-${subject.slice('sha256:'.length)}.sig`;
  const all = [
    ['cosign by tag', sigTag, cosignSig],
    ['cosign by digest', cosignSig, cosignSig],
    ['the earlier cosign signature by digest', firstSig, firstSig],
    ['cosign (OCI subject) by digest', ociCosignSig, ociCosignSig],
    ['notation by digest', notationSig, notationSig],
  ] as const;

  const pw = path.join(work, 'robot.password');
  fs.writeFileSync(pw, 'Robot-Secret-3\n', { mode: 0o600 });
  const berth = await startBerth(t, {
    upstreams: [{ registry: sim.host, url: sim.url, username: 'robot$edge-sync', password_file: pw }],
    extra: { harbor: { url: sim.url, username: 'robot$edge-sync', password_file: pw, sync_interval: '1h', offline_grace: '72h', on_expired: 'deny' } },
  });
  t.equal((await berth.cli(['sync'])).code, 0, 'policies synced');

  await t.test('Harbor itself serves the signatures and refuses the image', async (t) => {
    t.not(firstSig, cosignSig, 'signing again made a new signature manifest');
    for (const [what, ref] of all) t.equal((await harborAnswer(sim.url, 'signed/app', ref, 'robot$edge-sync', 'Robot-Secret-3', ACCEPT)).status, 200, what);
    t.equal((await harborAnswer(sim.url, 'signed/app', 'v1', 'robot$edge-sync', 'Robot-Secret-3', ACCEPT)).status, 412, 'the vulnerable image is refused');
  });

  await t.test('online: the signatures by tag and by digest, GET and HEAD', async (t) => {
    for (const [what, ref, digest] of all) {
      const head = await berthManifest(berth, sim.host, 'signed/app', ref, { method: 'HEAD', accept: ACCEPT });
      t.equal(head.status, 200, `HEAD ${what}`);
      const get = await berthManifest(berth, sim.host, 'signed/app', ref, { accept: ACCEPT });
      t.equal(get.status, 200, `GET ${what}: ${get.message ?? ''}`);
      t.equal(sha256Digest(get.body), digest, `GET ${what} is the signature manifest`);
    }
    const image = await berthManifest(berth, sim.host, 'signed/app', 'v1', { accept: ACCEPT });
    t.equal(image.status, 412, 'the image the signatures sign stays refused');
    t.match(image.message ?? '', /^current image with 1 vulnerability cannot be pulled/);
  });

  await t.test('real clients fetch the signatures: skopeo (by tag and digest) and containerd', async (t) => {
    const byTag = await skopeoRaw(berth, `signed/app:${sigTag}`);
    t.equal(byTag.code, 0, `skopeo by tag: ${byTag.stderr}`);
    t.equal(byTag.digest, cosignSig, 'the tag names the latest signature');
    for (const sig of [firstSig, notationSig]) {
      const byDigest = await skopeoRaw(berth, `signed/app@${sig}`);
      t.equal(byDigest.code, 0, `skopeo by digest: ${byDigest.stderr}`);
      t.equal(byDigest.digest, sig, 'the signature manifest');
    }
    // containerd fetches the manifest and its blobs (the signature payload) as a verifier does.
    const hostsDir = path.join(work, 'certs.d');
    await writeHostsToml(hostsDir, sim.host, berth.url);
    const ctd = await startContainerd(t);
    for (const ref of [`${sim.host}/signed/app:${sigTag}`, `${sim.host}/signed/app@${firstSig}`]) {
      const r = await ctd.ctr(['content', 'fetch', '--hosts-dir', hostsDir, ref]);
      t.equal(r.code, 0, `ctr content fetch ${ref}${r.code === 0 ? '' : `: ${r.stderr}`}`);
    }
    const have = await ctd.content();
    t.ok(have.includes(cosignSig) && have.includes(firstSig), 'both signature manifests are in containerd');
  });

  await t.test('offline: the signatures still pull, the image is still refused', async (t) => {
    await sim.stop();
    for (const [what, ref] of all) {
      t.equal((await berthManifest(berth, sim.host, 'signed/app', ref, { accept: ACCEPT })).status, 200, `GET ${what}`);
      t.equal((await berthManifest(berth, sim.host, 'signed/app', ref, { method: 'HEAD', accept: ACCEPT })).status, 200, `HEAD ${what}`);
    }
    t.equal((await berthManifest(berth, sim.host, 'signed/app', 'v1', { accept: ACCEPT })).status, 412, 'the image is refused');
    await sim.start();
  });

  await t.test('offline after a restart, with no synced facts for the signatures: their own content decides', async (t) => {
    // A fresh berth that caches the signatures online but never syncs: its
    // facts live only in memory, so a restart without Harbor has none.
    const fresh = await startBerth(t, {
      upstreams: [{ registry: sim.host, url: sim.url, username: 'robot$edge-sync', password_file: pw }],
      extra: { harbor: { url: sim.url, username: 'robot$edge-sync', password_file: pw, sync_interval: '1h', offline_grace: '72h', on_expired: 'deny' } },
    });
    for (const [what, ref] of all) t.equal((await berthManifest(fresh, sim.host, 'signed/app', ref, { accept: ACCEPT })).status, 200, `cached online: ${what}`);
    await berthManifest(fresh, sim.host, 'signed/app', 'v1', { accept: ACCEPT });
    await sim.stop();
    await fresh.stop();
    await fresh.restart();
    for (const [what, ref] of all) {
      const get = await berthManifest(fresh, sim.host, 'signed/app', ref, { accept: ACCEPT });
      t.equal(get.status, 200, `GET ${what}: ${get.message ?? ''}`);
      t.equal((await berthManifest(fresh, sim.host, 'signed/app', ref, { method: 'HEAD', accept: ACCEPT })).status, 200, `HEAD ${what}`);
    }
    const image = await berthManifest(fresh, sim.host, 'signed/app', 'v1', { accept: ACCEPT });
    t.equal(image.status, 412, 'the image itself is still refused (its facts are unknown offline: fail closed)');
    await sim.start();
  });
  t.same(sim.errors(), [], 'the simulator itself never failed');
});
