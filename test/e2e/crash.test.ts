/**
 * Crash safety: berth is killed with SIGKILL in the middle of many concurrent
 * fills, round after round, on the same cache. After every restart the cache
 * must be clean: `berth verify` (run beside the daemon) finds nothing, and the
 * test's own independent check agrees, which also looks where verify does
 * not: no temp file survives start-up, every blob file is in the index with
 * its size (verify walks the index, not the disk) and hashes to its name,
 * every indexed blob has its file, every stored manifest hashes to its
 * digest. And pulls (manifest + blob GETs, digests checked) succeed.
 *
 * The upstream is slowed by the fault proxy (a trickle) so that fills are
 * reliably under way when the kill lands; a seeded jitter moves the kill
 * across every stage of a fill (streaming, fsync, rename, index insert).
 * Set CRASH_SEED to replay a run.
 */
import t from 'tap';
import path from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { startTokenServer } from '../harness/token-server.js';
import { startRegistry } from '../harness/registry.js';
import { makeImage, pushImage, readBlob } from '../harness/images.js';
import { startBerth } from '../harness/berth.js';
import { tempDirFor, waitFor } from '../harness/procs.js';
import { fetchOnce, inspectCache, outcomeOf, startFaultProxy, type Outcome } from '../harness/fault-proxy.js';

const ROUNDS = 10;
const NEW_PER_ROUND = 3;
const CLIENTS = 12;

/** mulberry32: a small seeded PRNG, so a failing run can be replayed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = Math.imul(a ^ (a >>> 15), 1 | a);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

t.test('kill -9 during concurrent fills, round after round', async (t) => {
  const seed = Number(process.env.CRASH_SEED ?? randomBytes(4).readUInt32LE(0));
  t.comment(`CRASH_SEED=${seed}`);
  const rand = prng(seed);

  const token = await startTokenServer(t, { users: { pusher: 'push-secret' } });
  const registry = await startRegistry(t, { token });
  const work = await tempDirFor(t, 'berth-crash');
  const img = await makeImage(path.join(work, 'img'), { layers: ROUNDS * NEW_PER_ROUND, layerSize: 1_000_000, seed: 'crash', tag: 'v1' });
  await pushImage(img.layoutDir, 'v1', registry, 'library/crash:v1', { creds: 'pusher:push-secret' });
  const layers = [...img.manifests[0]!.layers];
  const bytes = new Map<string, Buffer>();
  for (const d of [...layers, img.manifests[0]!.config]) bytes.set(d, await readBlob(img.layoutDir, d));

  const proxy = await startFaultProxy(t, { target: registry.url });
  const berth = await startBerth(t, { upstreams: [{ registry: 'docker.io', url: proxy.url }] });
  const blobUrl = (d: string) => `${berth.url}/v2/library/crash/blobs/${d}?ns=docker.io`;
  const tagUrl = `${berth.url}/v2/library/crash/manifests/v1?ns=docker.io`;
  // berth's own gauge, not tmp/ (which a broken build might not use): how many fills are under way.
  const fillsInFlight = async () => Number(/^berth_fills_in_flight (\d+)/m.exec((await fetchOnce(`${berth.url}/metrics`, { timeoutMs: 5_000 })).body.toString('utf8'))?.[1] ?? 0);

  const seen: string[] = [];
  const wrong: string[] = [];
  let killedMidFill = 0;
  const restartMs: number[] = [];
  for (let round = 1; round <= ROUNDS; round++) {
    const fresh = layers.slice((round - 1) * NEW_PER_ROUND, round * NEW_PER_ROUND);
    const old = seen.length ? [seen[Math.floor(rand() * seen.length)]!, seen[Math.floor(rand() * seen.length)]!] : [];
    const picked = [...fresh, ...old, img.manifests[0]!.config];
    seen.push(...fresh);
    // Three speeds (a 1 MB layer in ~0.1, ~0.25 and ~0.65 s), so fills finish at different
    // moments and the kill finds some streaming and some committing or done.
    const slow = fresh.map((d, i) => proxy.addRule({ method: 'GET', path: new RegExp(`/blobs/${d}$`), fault: { kind: 'trickle', chunkBytes: 64 * 1024, intervalMs: [5, 15, 40][i % 3]! } }));

    // Every fresh blob gets at least two clients (a shared fill), the rest go anywhere.
    const targets = Array.from({ length: CLIENTS }, (_, i) => (i < fresh.length * 2 ? fresh[i % fresh.length]! : picked[Math.floor(rand() * picked.length)]!));
    const clients = [fetchOnce(tagUrl), ...targets.map((d) => fetchOnce(blobUrl(d)))];

    await waitFor('a fill under way', async () => (await fillsInFlight()) > 0, { timeoutMs: 15_000, intervalMs: 5 });
    // Seeded jitter, not a wait for state: it moves the kill across streaming, fsync, rename and index insert.
    await sleep(Math.floor(rand() * 700));
    const parts = await fillsInFlight();
    if (parts > 0) killedMidFill++;
    await berth.kill9();
    for (const rule of slow) rule.remove();

    const results = await Promise.all(clients);
    results.slice(1).forEach((r, i) => {
      const d = targets[i]!;
      const o: Outcome = outcomeOf(r, bytes.get(d)!);
      if (o === 'wrong') wrong.push(`round ${round}: ${d} -> ${r.status}, ${r.body.length} bytes`);
    });

    const restartAt = Date.now();
    await berth.restart();
    restartMs.push(Date.now() - restartAt);
    const report = await inspectCache(berth.cacheDir, { rehash: true });
    t.same(report.problems, [], `round ${round} (${parts} fills under way at the kill): after restart, no temp file, index and disk agree, every blob hashes to its name`);

    // `berth verify` beside the live daemon, while a pull runs: the tag, then every blob of this round.
    const verify = berth.cli(['verify', '--json']);
    const manifest = await fetchOnce(tagUrl, { headers: { Accept: 'application/vnd.oci.image.manifest.v1+json' } });
    const after = await Promise.all(picked.map((d) => fetchOnce(blobUrl(d))));
    const v = await verify;
    t.equal(v.code, 0, `round ${round}: berth verify is clean`, { stdout: v.stdout.slice(0, 2000), stderr: v.stderr.slice(0, 2000) });
    const bad = after.map((r, i) => [picked[i]!, outcomeOf(r, bytes.get(picked[i]!)!)] as const).filter(([, o]) => o !== 'exact');
    t.ok(manifest.status === 200 && sha256(manifest.body) === img.manifestDigest && bad.length === 0, `round ${round}: the pull after the restart succeeds (${bad.map(([d, o]) => `${d.slice(7, 19)} ${o}`).join(', ') || 'all exact'})`);
  }

  t.comment(`restarts took ${restartMs.join(', ')} ms`);
  t.same(wrong, [], 'no client ever got a complete wrong answer, killed or not');
  t.ok(killedMidFill >= ROUNDS / 3, `most kills landed while fills were under way (${killedMidFill} of ${ROUNDS})`);
  const final = await inspectCache(berth.cacheDir, { rehash: true });
  t.same(final.problems, [], 'the final cache is clean');
  t.ok(layers.every((d) => final.indexed.has(d)), 'and holds every layer once the dust settles');
});

function sha256(b: Buffer): string {
  return `sha256:${createHash('sha256').update(b).digest('hex')}`;
}
