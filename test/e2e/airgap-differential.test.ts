/**
 * Air gap, second round (issue 15): differential exports against an
 * inventory, signed archives, and imports that check before they write,
 * with real berths, Distribution, skopeo and containerd.
 *
 * Site A holds images one, two and three (two shares its first three layers
 * with one); site B holds one. B's inventory goes to A; A's `export --have
 * --sign` carries only what B lacks; B imports it with --trust and containerd
 * pulls two and three with the upstream stopped.
 */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { gunzipSync } from 'node:zlib';
import Database from 'better-sqlite3';
import { startTokenServer } from '../harness/token-server.js';
import { cacheState } from '../harness/cache-state.js';
import { readTar, writeTar, type WriteEntry } from '../harness/tar.js';
import { startRegistry } from '../harness/registry.js';
import { makeImage, pushImage, type TestImage } from '../harness/images.js';
import { startContainerd, writeHostsToml } from '../harness/containerd.js';
import { startBerth, type Berth } from '../harness/berth.js';
import { freePort, run, tempDirFor } from '../harness/procs.js';

const sha = (b: Buffer): string => 'sha256:' + createHash('sha256').update(b).digest('hex');
const contentOf = (img: TestImage): string[] => [...new Set([img.manifestDigest, ...img.manifests.map((m) => m.digest), ...img.blobs.map((b) => b.digest)])];
const sizeOf = (img: TestImage, digest: string): number => img.blobs.find((b) => b.digest === digest)?.size ?? img.manifests.find((m) => m.digest === digest)!.size;

t.test('differential, signed air-gap updates between two berths', async (t) => {
  const token = await startTokenServer(t, { users: { pusher: 'push-secret' } });
  const registry = await startRegistry(t, { token });
  const work = await tempDirFor(t, 'berth-airgap-diff');
  const creds = { creds: 'pusher:push-secret' };
  // two is one plus a fourth layer: the same first three layers (layers are a function of seed and index).
  const one = await makeImage(path.join(work, 'one'), { layers: 3, layerSize: 120_000, seed: 'diff-base', tag: 'v1' });
  const two = await makeImage(path.join(work, 'two'), { layers: 4, layerSize: 120_000, seed: 'diff-base', tag: 'v1' });
  const three = await makeImage(path.join(work, 'three'), { layers: 2, layerSize: 90_000, seed: 'diff-three', tag: 'v1' });
  t.same(two.manifests[0]!.layers.slice(0, 3), one.manifests[0]!.layers, 'two shares its first three layers with one');
  await pushImage(one.layoutDir, 'v1', registry, 'library/one:v1', creds);
  await pushImage(two.layoutDir, 'v1', registry, 'library/two:v1', creds);
  await pushImage(three.layoutDir, 'v1', registry, 'library/three:v1', creds);
  const images = { one: 'docker.io/library/one:v1', two: 'docker.io/library/two:v1', three: 'docker.io/library/three:v1' };

  const siteA = await startBerth(t, { upstreams: [{ registry: 'docker.io', url: registry.url }] });
  const siteB = await startBerth(t, { upstreams: [{ registry: 'docker.io', url: registry.url }] });
  t.equal((await siteA.cli(['prefetch', images.one, images.two, images.three])).code, 0, 'site A holds one, two and three');
  t.equal((await siteB.cli(['prefetch', images.one])).code, 0, 'site B holds one');

  const keys = path.join(work, 'keys');
  fs.mkdirSync(keys);
  await t.test('keygen writes a 0600 private key and a public key, and never overwrites', async (t) => {
    const r = await siteA.cli(['keygen', '-o', path.join(keys, 'site'), '--json']);
    t.equal(r.code, 0, r.stderr);
    const k = JSON.parse(r.stdout) as { key: string; pub: string; fingerprint: string };
    t.equal(fs.statSync(k.key).mode & 0o777, 0o600, 'private key 0600');
    t.match(fs.readFileSync(k.key, 'utf8'), /^-----BEGIN PRIVATE KEY-----/);
    t.match(fs.readFileSync(k.pub, 'utf8'), /^-----BEGIN PUBLIC KEY-----/);
    t.match(k.fingerprint, /^sha256:[a-f0-9]{64}$/);
    const again = await siteA.cli(['keygen', '-o', path.join(keys, 'site')]);
    t.equal(again.code, 1, 'refuses to overwrite');
    t.match(again.stderr, /exists/);
    t.equal((await siteA.cli(['keygen', '-o', path.join(keys, 'other')])).code, 0, 'a second, untrusted key');
  });
  const key = path.join(keys, 'site.key');
  const pub = path.join(keys, 'site.pub');

  const inventory = path.join(work, 'b-inventory.jsonl.gz');
  await t.test("site B's inventory lists what it holds", async (t) => {
    const r = await siteB.cli(['inventory', '--out', inventory, '--json']);
    t.equal(r.code, 0, r.stderr);
    const lines = gunzipSync(fs.readFileSync(inventory)).toString().trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    t.match(lines[0], { type: 'berth-inventory', version: 1 });
    t.match(lines.at(-1), { type: 'end', blobs: one.blobs.length, manifests: 1, tags: 1, pins: 1 });
    t.same(lines.filter((l) => l.type === 'blob').map((l) => l.digest).sort(), one.blobs.map((b) => b.digest).sort(), 'every blob of one');
    t.same(lines.filter((l) => l.type === 'manifest').map((l) => l.digest), [one.manifestDigest]);
    t.same(lines.filter((l) => l.type === 'tag').map((l) => [l.registry, l.repository, l.tag, l.digest]), [['docker.io', 'library/one', 'v1', one.manifestDigest]]);
    t.same(lines.filter((l) => l.type === 'pin').map((l) => [l.image, l.digest]), [[images.one, one.manifestDigest]]);
  });

  const diff = path.join(work, 'update.tar');
  const missing = [...new Set([...contentOf(two), ...contentOf(three)])].filter((d) => !contentOf(one).includes(d));
  await t.test("A's export --have carries only what B lacks", async (t) => {
    const r = await siteA.cli(['export', images.one, images.two, images.three, '-o', diff, '--have', inventory, '--sign', key, '--json']);
    t.equal(r.code, 0, r.stderr);
    const res = JSON.parse(r.stdout) as { omitted: { blobs: number; manifests: number }; inventory: string; signedBy: string };
    t.equal(res.inventory, sha(fs.readFileSync(inventory)), 'made against the inventory file');
    t.equal(res.omitted.blobs, one.blobs.length);
    const entries = await readTar(diff);
    t.same(entries.slice(0, 2).map((e) => e.name), ['berth-archive.json', 'berth-archive.sig'], 'the archive manifest and its signature come first');
    const carried = entries.filter((e) => e.name.startsWith('blobs/sha256/')).map((e) => 'sha256:' + e.name.slice(13));
    for (const d of contentOf(one)) t.notOk(carried.includes(d), `no blob of image one: ${d}`);
    t.same(carried.sort(), [...missing].sort(), 'every blob and manifest of two and three that one lacks');
    const manifest = JSON.parse(entries[0]!.data.toString()) as { entries: { name: string; size: number; digest: string }[]; omitted: { digest: string; kind: string }[]; inventory: string };
    t.same(manifest.entries.map((e) => e.name), entries.slice(2).map((e) => e.name), 'lists every other entry in order');
    for (const [i, e] of manifest.entries.entries()) {
      t.equal(e.size, entries[i + 2]!.data.length, `${e.name} size`);
      t.equal(e.digest, sha(entries[i + 2]!.data), `${e.name} digest`);
    }
    t.same(manifest.omitted.map((o) => o.digest).sort(), contentOf(one).sort(), "lists image one's digests as left out");
    const index = JSON.parse(entries.find((e) => e.name === 'index.json')!.data.toString()) as { manifests: { annotations: Record<string, string> }[] };
    t.same(index.manifests.map((m) => m.annotations['org.opencontainers.image.ref.name']), [images.one, images.two, images.three], 'index.json still names every image');
    const missingBytes = missing.reduce((n, d) => n + (d === two.manifestDigest || d === three.manifestDigest ? sizeOf(d === two.manifestDigest ? two : three, d) : sizeOf(two.blobs.some((b) => b.digest === d) ? two : three, d)), 0);
    const size = fs.statSync(diff).size;
    // The rest is tar framing (a 512-byte header and padding to 512 per entry, 1 KiB at the end)
    // and berth's and the layout's small files.
    const small = entries.filter((e) => !e.name.startsWith('blobs/')).reduce((n, e) => n + e.data.length, 0);
    const framing = size - missingBytes - small;
    t.ok(size > missingBytes && framing <= 1024 * entries.length + 1024, `the tar (${size} bytes) holds the missing content (${missingBytes} bytes), ${small} bytes of archive manifest, signature, oci-layout and index.json, and ${framing} bytes of tar framing for ${entries.length} entries`);
    t.ok(size - missingBytes < 16 * 1024, `within a few KiB of the missing content: ${size - missingBytes} bytes more`);
  });

  const deadPort = await freePort();
  const lacking = await startBerth(t, { upstreams: [{ registry: 'docker.io', url: `http://127.0.0.1:${deadPort}` }] });
  await t.test('a differential tar into a berth that lacks a digest it leaves out is refused, nothing kept', async (t) => {
    const before = cacheState(lacking.cacheDir);
    const r = await lacking.cli(['import', diff, '--trust', pub]);
    t.equal(r.code, 1);
    t.match(r.stderr, /lacks \d+: (blob|manifest) sha256:[a-f0-9]{64}/, `names the digest: ${r.stderr.trim()}`);
    t.ok(contentOf(one).some((d) => r.stderr.includes(d)), 'a digest of image one');
    t.same(cacheState(lacking.cacheDir), before, 'cache unchanged');
  });

  await t.test('B imports it with --trust; containerd pulls two and three with the upstream stopped', async (t) => {
    await registry.stop();
    const before = cacheState(siteB.cacheDir);
    const r = await siteB.cli(['import', diff, '--trust', pub, '--json']);
    t.equal(r.code, 0, r.stderr);
    const res = JSON.parse(r.stdout) as { images: { name: string; tagged: boolean }[]; omitted: number; signature: { checked: boolean; key: string } };
    t.same(res.images.map((i) => [i.name, i.tagged]), [[images.one, true], [images.two, true], [images.three, true]]);
    t.equal(res.omitted, contentOf(one).length);
    t.equal(res.signature.checked, true, 'signature checked');
    t.notMatch(r.stderr, /not checked/);
    t.equal(cacheState(siteB.cacheDir).blobs, before.blobs + missing.filter((d) => d !== two.manifestDigest && d !== three.manifestDigest).length, 'only the missing blobs were added');
    const idx = new Database(path.join(siteB.cacheDir, 'index.db'), { readonly: true });
    const linked = idx.prepare('SELECT 1 FROM links WHERE registry = ? AND repository = ? AND digest = ?').get('docker.io', 'library/two', one.manifests[0]!.layers[0]!) !== undefined;
    idx.close();
    t.ok(linked, "a layer two shares with one, left out of the tar, is linked to two's repository");
    const ctd = await startContainerd(t);
    const hostsDir = path.join(work, 'certs.d-b');
    await writeHostsToml(hostsDir, 'docker.io', siteB.url);
    for (const ref of [images.two, images.three, images.one]) {
      const pull = await ctd.pull(ref, { hostsDir });
      t.equal(pull.code, 0, `ctr pulls ${ref} offline: ${pull.stderr}`);
    }
    await registry.start();
  });

  await t.test('signed archives: refused when altered, incomplete, padded, wrongly signed or unsigned; cache unchanged', async (t) => {
    const signed = path.join(work, 'three-signed.tar');
    const unsigned = path.join(work, 'three-unsigned.tar');
    t.equal((await siteA.cli(['export', images.three, '-o', signed, '--sign', key])).code, 0);
    t.equal((await siteA.cli(['export', images.three, '-o', unsigned])).code, 0);
    const skopeo = await run('skopeo', ['copy', `oci-archive:${signed}:${images.three}`, `dir:${path.join(work, 'skopeo-signed')}`]);
    t.equal(skopeo.code, 0, `skopeo reads a signed full export (extra files ignored): ${skopeo.stderr}`);
    const target = await startBerth(t, { upstreams: [{ registry: 'docker.io', url: `http://127.0.0.1:${deadPort}` }] });
    const good = await readTar(signed);
    const flip = (data: Buffer): Buffer => {
      const b = Buffer.from(data);
      const at = Math.floor(b.length / 2);
      b[at] = b[at]! ^ 0x01;
      return b;
    };
    const extra = randomBytes(1000);
    const cases: { name: string; entries?: WriteEntry[]; file?: string; trust?: string; why: RegExp }[] = [
      ...good.map((e, i) => ({ name: `one flipped byte in ${e.name}`, entries: good.map((x, j) => (i === j ? { name: x.name, data: flip(x.data) } : x)), why: /signature|does not match|damaged|not JSON|altered/ })),
      { name: 'a layer removed', entries: good.filter((e) => e.name !== `blobs/sha256/${three.manifests[0]!.layers[1]!.slice(7)}`), why: /listed entry .* is missing/ },
      { name: 'the last entry removed', entries: good.slice(0, -1), why: /listed entry "index\.json" is missing/ },
      { name: 'the signature removed', entries: good.filter((e) => e.name !== 'berth-archive.sig'), why: /not signed/ },
      { name: 'an entry added', entries: [...good, { name: `blobs/sha256/${sha(extra).slice(7)}`, data: extra }], why: /not listed in berth-archive\.json/ },
      { name: 'an entry added in the middle', entries: [...good.slice(0, 3), { name: `blobs/sha256/${sha(extra).slice(7)}`, data: extra }, ...good.slice(3)], why: /not listed in berth-archive\.json/ },
      { name: 'the wrong key', file: signed, trust: path.join(keys, 'other.pub'), why: /signed by key sha256:[a-f0-9]{64}, which is not trusted/ },
      { name: 'an unsigned archive', file: unsigned, why: /not signed/ },
    ];
    const before = cacheState(target.cacheDir);
    for (const [i, c] of cases.entries()) {
      let file = c.file;
      if (!file) {
        file = path.join(work, `bad-signed-${i}.tar`);
        await writeTar(file, c.entries!);
      }
      const r = await target.cli(['import', file, '--trust', c.trust ?? pub]);
      t.equal(r.code, 1, `${c.name}: refused`);
      t.match(r.stderr, c.why, `${c.name}: says why (${r.stderr.trim()})`);
      t.notMatch(r.stderr, /\n\s+at /, `${c.name}: no stack trace`);
      t.same(cacheState(target.cacheDir), before, `${c.name}: cache unchanged (blob count and index rows)`);
    }
    const ok = await target.cli(['import', signed, '--trust', path.join(keys, 'other.pub'), '--trust', pub]);
    t.equal(ok.code, 0, `a good signature imports (one of two trusted keys): ${ok.stderr}`);
    t.match(ok.stdout, /signature verified: sha256:[a-f0-9]{64}/);
    t.equal(cacheState(target.cacheDir).blobs, before.blobs + three.blobs.length);
  });

  await t.test('[airgap] trust in the config; without trust the import says the archive was not checked', async (t) => {
    const unsigned = path.join(work, 'three-unsigned.tar');
    const dead = [{ registry: 'docker.io', url: `http://127.0.0.1:${deadPort}` }];
    const strict = await startBerth(t, { upstreams: dead, extra: { airgap: { trust: [pub] } } });
    const r = await strict.cli(['import', unsigned]);
    t.equal(r.code, 1, 'refused by the configured trust');
    t.match(r.stderr, /not signed/);
    const bad = await strict.cli(['import', unsigned, '--trust', path.join(work, 'nope.pub')]);
    t.equal(bad.code, 1);
    t.match(bad.stderr, /cannot read the trusted key .*nope\.pub: ENOENT/);
    const lax = await startBerth(t, { upstreams: dead });
    const ok = await lax.cli(['import', unsigned, '--json']);
    t.equal(ok.code, 0, ok.stderr);
    t.match(ok.stderr, /origin was not checked/);
    t.match(JSON.parse(ok.stdout), { signature: { checked: false } });
  });
});
