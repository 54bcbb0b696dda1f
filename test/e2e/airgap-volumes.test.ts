/**
 * Air gap, carrying the disk: split exports (volumes imported in any order,
 * a missing, truncated or misordered volume refused before any write), an
 * interrupted import run again writing only what it lacks, and the
 * pre-flight (a cache on a small tmpfs, a max_size with nothing evictable,
 * a small export destination) refusing with the numbers and nothing
 * written. Real berths, Distribution and containerd.
 */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { startTokenServer } from '../harness/token-server.js';
import { cacheState } from '../harness/cache-state.js';
import { startRegistry } from '../harness/registry.js';
import { makeImage, pushImage } from '../harness/images.js';
import { startContainerd, writeHostsToml } from '../harness/containerd.js';
import { startBerth, type Berth } from '../harness/berth.js';
import { freePort, run, tempDirFor } from '../harness/procs.js';

const MiB = 1024 * 1024;

/** Mounts a tmpfs of `size` at `dir` (we run as root in CI); null with the reason when it cannot. */
async function mountTmpfs(t: { teardown(fn: () => unknown): void }, dir: string, size: string): Promise<string | null> {
  if (process.getuid?.() !== 0) return 'not root, so no tmpfs can be mounted';
  fs.mkdirSync(dir, { recursive: true });
  const r = await run('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir]);
  if (r.code !== 0) return `cannot mount a tmpfs (${r.stderr.trim() || `exit ${r.code}`})`;
  // Lazy: the berth using it may still be stopping when teardown runs.
  t.teardown(() => run('umount', ['-l', dir]));
  return null;
}

t.test('split volumes and pre-flight, with real berths, Distribution and containerd', async (t) => {
  const token = await startTokenServer(t, { users: { pusher: 'push-secret' } });
  const registry = await startRegistry(t, { token });
  const work = await tempDirFor(t, 'berth-airgap-volumes');
  const creds = { creds: 'pusher:push-secret' };
  // About 3 MiB: three volumes of 1 MiB.
  const big = await makeImage(path.join(work, 'big'), { layers: 3, layerSize: 1_000_000, seed: 'volumes-big', tag: 'v1' });
  await pushImage(big.layoutDir, 'v1', registry, 'library/big:v1', creds);

  const site = await startBerth(t, { upstreams: [{ registry: 'docker.io', url: registry.url }] });
  const deadPort = await freePort();
  const fresh = await startBerth(t, { upstreams: [{ registry: 'docker.io', url: `http://127.0.0.1:${deadPort}` }] });
  const ctd = await startContainerd(t);
  const freshHosts = path.join(work, 'certs.d-fresh');
  await writeHostsToml(freshHosts, 'docker.io', fresh.url);

  const volDir = path.join(work, 'stick');
  fs.mkdirSync(volDir);
  const base = path.join(volDir, 'site.tar');
  const vol = (i: number) => `${base}.${String(i).padStart(3, '0')}`;
  const plain = path.join(work, 'plain.tar');

  await t.test('export --split writes volumes that cat back into the plain tar', async (t) => {
    // A stale volume from an older, longer set must not survive.
    fs.writeFileSync(vol(7), 'stale');
    const r = await site.cli(['export', 'docker.io/library/big:v1', '-o', base, '--split', '1MiB']);
    t.equal(r.code, 0, r.stderr);
    t.match(r.stdout, /wrote 3 volumes of at most 1MiB/);
    t.same(fs.readdirSync(volDir).sort(), ['site.tar.000', 'site.tar.001', 'site.tar.002'], 'three volumes, no .partial, the stale one gone');
    t.equal(fs.statSync(vol(0)).size, MiB);
    t.equal(fs.statSync(vol(1)).size, MiB);
    t.ok(fs.statSync(vol(2)).size <= MiB && fs.statSync(vol(2)).size > 0);
    t.equal((await site.cli(['export', 'docker.io/library/big:v1', '-o', plain, '--quiet'])).code, 0);
    // Two exports differ only in the archive manifest's creation time (same length, ISO 8601).
    const created = (b: Buffer) => Buffer.from(b.toString('latin1').replace(/"created":"[^"]*"/, '"created":"-"'), 'latin1');
    const joined = Buffer.concat([0, 1, 2].map((i) => fs.readFileSync(vol(i))));
    t.ok(created(joined).equals(created(fs.readFileSync(plain))), 'cat site.tar.0* is the plain tar, byte for byte but for the creation time');
    const joinedFile = path.join(work, 'joined.tar');
    fs.writeFileSync(joinedFile, joined);
    const copy = await run('skopeo', ['inspect', `oci-archive:${joinedFile}:docker.io/library/big:v1`]);
    t.equal(copy.code, 0, `skopeo reads the joined tar: ${copy.stderr}`);
  });

  await t.test('--split below 1MiB is a usage error', async (t) => {
    const r = await site.cli(['export', 'docker.io/library/big:v1', '-o', path.join(work, 'tiny.tar'), '--split', '64KiB']);
    t.equal(r.code, 2);
    t.match(r.stderr, /--split 64KiB: a volume must be at least 1MiB/);
    t.notOk(fs.existsSync(path.join(work, 'tiny.tar.000')) || fs.existsSync(path.join(work, 'tiny.tar.000.partial')));
  });

  await t.test('an incomplete, truncated or misordered set is refused before any write', async (t) => {
    const before = cacheState(fresh.cacheDir);
    const bad = path.join(work, 'bad');
    fs.mkdirSync(bad);
    const copy = (i: number, to = i, bytes?: number) => {
      const data = fs.readFileSync(vol(i));
      fs.writeFileSync(path.join(bad, `site.tar.${String(to).padStart(3, '0')}`), bytes === undefined ? data : data.subarray(0, bytes));
    };
    const b = (i: number) => path.join(bad, `site.tar.${String(i).padStart(3, '0')}`);
    const cases: { name: string; make: () => void; args: () => string[]; why: RegExp }[] = [
      { name: 'middle volume missing', make: () => [0, 2].forEach((i) => copy(i)), args: () => [b(2), b(0)], why: /volume site\.tar\.001 of site\.tar is missing/ },
      { name: 'last volume missing', make: () => [0, 1].forEach((i) => copy(i)), args: () => [b(1), b(0)], why: /volume site\.tar\.002 is missing: the set ends at byte 2097152, the archive continues/ },
      { name: 'middle volume truncated', make: () => (copy(0), copy(1, 1, MiB - 4096), copy(2)), args: () => [b(0), b(1), b(2)], why: /volume site\.tar\.001 is 1044480 bytes where site\.tar\.000 is 1048576: it is truncated/ },
      { name: 'last volume truncated', make: () => (copy(0), copy(1), copy(2, 2, 2048)), args: () => [b(0), b(1), b(2)], why: /volume site\.tar\.002 is truncated \(2048 bytes, the others 1048576\)/ },
      { name: 'volumes swapped', make: () => (copy(0, 1), copy(1, 0), copy(2)), args: () => [b(0), b(1), b(2)], why: /no tar header at byte 0 \(in volume site\.tar\.000\).*out of order/ },
      { name: 'a volume of another set', make: () => (copy(0), copy(1), copy(2), fs.writeFileSync(b(3), Buffer.alloc(1000, 1))), args: () => [b(0), b(1), b(2), b(3)], why: /volume site\.tar\.002 is \d+ bytes where site\.tar\.000 is 1048576: it is truncated or from another set/ },
    ];
    for (const c of cases) {
      fs.rmSync(bad, { recursive: true, force: true });
      fs.mkdirSync(bad);
      c.make();
      const r = await fresh.cli(['import', ...c.args()]);
      t.equal(r.code, 1, `${c.name}: refused`);
      t.match(r.stderr, c.why, `${c.name}: says what (${r.stderr.trim()})`);
      t.same(cacheState(fresh.cacheDir), before, `${c.name}: no blob, row or tmp file written`);
    }
    // The same for a plain tar cut short: the scan finds it, not the import half way.
    const short = path.join(work, 'short.tar');
    fs.writeFileSync(short, fs.readFileSync(plain).subarray(0, 2 * MiB + 100));
    const r = await fresh.cli(['import', short]);
    t.equal(r.code, 1);
    t.match(r.stderr, /the archive is truncated: .*short\.tar ends at byte 2097252, the archive continues/);
    t.same(cacheState(fresh.cacheDir), before, 'truncated plain tar: nothing written');
  });

  await t.test('volumes in shuffled order import; containerd pulls with no upstream', async (t) => {
    const r = await fresh.cli(['import', vol(2), vol(0), vol(1)]);
    t.equal(r.code, 0, r.stderr);
    t.match(r.stdout, /docker\.io\/library\/big:v1@sha256:[a-f0-9]{64}\s+pinned, tagged/);
    t.match(r.stdout, /imported 2 manifests|imported 1 manifests/);
    await ctd.forget();
    const pull = await ctd.pull('docker.io/library/big:v1', { hostsDir: freshHosts });
    t.equal(pull.code, 0, `offline pull of the imported set: ${pull.stderr}`);
  });

  await t.test('an import run again writes nothing it already holds', async (t) => {
    const layer = big.manifests[0]!.layers[0]!;
    const file = path.join(fresh.cacheDir, 'blobs/sha256', layer.slice(7, 9), layer.slice(7));
    const ino = fs.statSync(file).ino;
    const before = cacheState(fresh.cacheDir);
    const r = await fresh.cli(['import', vol(0), vol(1), vol(2), '--json']);
    t.equal(r.code, 0, r.stderr);
    t.equal((JSON.parse(r.stdout) as { alreadyHeld: number }).alreadyHeld, 4, 'three layers and the config were held');
    t.equal(fs.statSync(file).ino, ino, 'the layer file was not written again');
    t.same(cacheState(fresh.cacheDir), before, 'nothing new');
  });

  await t.test('plain progress lines on a pipe; none with --quiet', async (t) => {
    const other = await startBerth(t, { upstreams: [{ registry: 'docker.io', url: `http://127.0.0.1:${deadPort}` }] });
    const r = await other.cli(['import', vol(0), vol(1), vol(2)]);
    t.equal(r.code, 0, r.stderr);
    t.match(r.stderr, /^import {2}100% {2}[\d.]+MiB\/[\d.]+MiB {2}5\/5 blobs {2}done in /m, 'a last line with the totals');
    t.notMatch(r.stderr, /\x1b\[/, 'no terminal codes on a pipe');
    const q = await site.cli(['export', 'docker.io/library/big:v1', '-o', path.join(work, 'q.tar'), '--quiet']);
    t.equal(q.stderr, '', 'quiet');
  });

  // ~40.1 MiB of incompressible layers for the pre-flight cases.
  const huge = await makeImage(path.join(work, 'huge'), { layers: 4, layerSize: 10_500_000, seed: 'volumes-huge', tag: 'v1' });
  await pushImage(huge.layoutDir, 'v1', registry, 'library/huge:v1', creds);
  const hugeTar = path.join(work, 'huge.tar');
  t.equal((await site.cli(['export', 'docker.io/library/huge:v1', '-o', hugeTar, '-q'])).code, 0, 'exported the 40 MiB image');

  const mnt = path.join(work, 'tmpfs-cache');
  const noCacheTmpfs = await mountTmpfs(t, mnt, '24m');
  await t.test('import into a 24 MiB tmpfs cache that needs 40 MiB is refused before any write', { skip: noCacheTmpfs ?? false }, async (t) => {
    const small = await startBerth(t, { cacheDir: path.join(mnt, 'cache'), upstreams: [{ registry: 'docker.io', url: `http://127.0.0.1:${deadPort}` }] });
    const before = cacheState(small.cacheDir);
    const r = await small.cli(['import', hugeTar]);
    t.equal(r.code, 1, 'refused');
    t.match(r.stderr, /not enough disk space: the import needs 40\.\d+MiB \(6 blobs the cache lacks\) plus 4MiB for the index, 2\d(\.\d+)?MiB free on .*tmpfs-cache\/cache: free space/);
    t.match(r.stderr, /nothing was written/);
    t.same(cacheState(small.cacheDir), before, 'no blob, row or tmp file');
  });

  await t.test('max_size too small with nothing evictable is refused before any write', async (t) => {
    const capped = await startBerth(t, { maxSize: '20MiB', upstreams: [{ registry: 'docker.io', url: `http://127.0.0.1:${deadPort}` }] });
    // Something pinned is in the cache, and nothing is evictable.
    t.equal((await capped.cli(['import', vol(0), vol(1), vol(2), '-q'])).code, 0);
    const before = cacheState(capped.cacheDir);
    const r = await capped.cli(['import', hugeTar]);
    t.equal(r.code, 1, 'refused');
    t.match(r.stderr, /not enough room under cache\.max_size: the import needs 40\.\d+MiB \(6 blobs the cache lacks\); the cache holds 2\.\d+MiB of max_size 20MiB and eviction may free 0B .*: raise cache\.max_size to at least 4\d\.\d+MiB/);
    t.same(cacheState(capped.cacheDir), before, 'no blob, row or tmp file');
  });

  const dest = path.join(work, 'tmpfs-dest');
  const noDestTmpfs = await mountTmpfs(t, dest, '8m');
  await t.test('export to a destination too small is refused before writing', { skip: noDestTmpfs ?? false }, async (t) => {
    const r = await site.cli(['export', 'docker.io/library/huge:v1', '-o', path.join(dest, 'huge.tar'), '--split', '4MiB']);
    t.equal(r.code, 1, 'refused');
    t.match(r.stderr, /not enough space for the export: it needs 40\.\d+MiB, [\d.]+MiB free on .*tmpfs-dest/);
    t.same(fs.readdirSync(dest), [], 'not even a .partial file');
  });
});
