/**
 * Eviction with a small max_size: least recently used unpinned blobs go
 * first, pinned ones never, a blob being streamed survives, and the index
 * and the disk agree afterwards.
 */
import t from 'tap';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { createHash } from 'node:crypto';
import Database from 'better-sqlite3';
import { startTokenServer } from '../harness/token-server.js';
import { startRegistry } from '../harness/registry.js';
import { makeImage, pushImage, type TestImage } from '../harness/images.js';
import { startBerth, type Berth } from '../harness/berth.js';
import { tempDirFor, waitFor } from '../harness/procs.js';

const sha = (b: Buffer) => 'sha256:' + createHash('sha256').update(b).digest('hex');

async function get(berth: Berth, repo: string, digest: string): Promise<Buffer> {
  const res = await fetch(`${berth.url}/v2/${repo}/blobs/${digest}?ns=docker.io`);
  if (res.status !== 200) throw new Error(`GET ${digest}: ${res.status}`);
  return Buffer.from(await res.arrayBuffer());
}

const blobFile = (berth: Berth, d: string) => path.join(berth.cacheDir, 'blobs/sha256', d.slice(7, 9), d.slice(7));

/** The index and the disk name the same blobs, and every file hashes to its name. */
function agree(berth: Berth): { indexed: string[]; onDisk: string[] } {
  const db = new Database(path.join(berth.cacheDir, 'index.db'), { readonly: true });
  const indexed = (db.prepare('SELECT digest FROM blobs ORDER BY digest').all() as { digest: string }[]).map((r) => r.digest);
  db.close();
  const onDisk: string[] = [];
  const root = path.join(berth.cacheDir, 'blobs/sha256');
  for (const shard of fs.readdirSync(root)) for (const f of fs.readdirSync(path.join(root, shard))) onDisk.push(`sha256:${f}`);
  onDisk.sort();
  return { indexed, onDisk };
}

t.test('eviction keeps the cache under max_size by least recent use', async (t) => {
  const token = await startTokenServer(t, { users: { pusher: 'push-secret' } });
  const registry = await startRegistry(t, { token });
  const work = await tempDirFor(t, 'berth-evict');
  const creds = { creds: 'pusher:push-secret' };
  const small: TestImage = await makeImage(path.join(work, 'small'), { layers: 5, layerSize: 300_000, seed: 'evict-small', tag: 'v1' });
  const pinned: TestImage = await makeImage(path.join(work, 'pinned'), { layers: 1, layerSize: 300_000, seed: 'evict-pinned', tag: 'v1' });
  const big: TestImage = await makeImage(path.join(work, 'big'), { layers: 3, layerSize: 6_000_000, seed: 'evict-big', tag: 'v1' });
  await pushImage(small.layoutDir, 'v1', registry, 'library/small:v1', creds);
  await pushImage(pinned.layoutDir, 'v1', registry, 'library/pinned:v1', creds);
  await pushImage(big.layoutDir, 'v1', registry, 'library/big:v1', creds);

  await t.test('least recently used goes first; pinned never', async (t) => {
    const berth = await startBerth(t, { upstreams: [{ registry: 'docker.io', url: registry.url }], maxSize: '1000KiB' });
    const [l1, l2, l3, l4, l5] = small.manifests[0]!.layers as [string, string, string, string, string];
    const pre = await berth.cli(['prefetch', 'docker.io/library/pinned:v1']);
    t.equal(pre.code, 0, pre.stderr);
    const pinnedLayer = pinned.manifests[0]!.layers[0]!;
    await get(berth, 'library/small', l1);
    await get(berth, 'library/small', l2);
    await get(berth, 'library/small', l1); // l2 is now the least recently used of the two
    await get(berth, 'library/small', l3);
    await berth.service.waitForOutput(/evicted least recently used content/, 15_000);
    await waitFor('l2 evicted', () => !fs.existsSync(blobFile(berth, l2)), { timeoutMs: 10_000 });
    t.ok(fs.existsSync(blobFile(berth, l1)), 'recently used l1 kept');
    t.ok(fs.existsSync(blobFile(berth, l3)), 'newest l3 kept');
    t.ok(fs.existsSync(blobFile(berth, pinnedLayer)), 'pinned layer kept although least recently used');
    await get(berth, 'library/small', l4);
    await get(berth, 'library/small', l5);
    await waitFor('l1 evicted next', () => !fs.existsSync(blobFile(berth, l1)), { timeoutMs: 10_000 });
    t.ok(fs.existsSync(blobFile(berth, pinnedLayer)), 'pinned layer still kept');
    const status = JSON.parse((await berth.cli(['status', '--json'])).stdout) as { cache: { bytes: number; maxBytes: number } };
    t.ok(status.cache.bytes <= status.cache.maxBytes, `under max_size (${status.cache.bytes} <= ${status.cache.maxBytes})`);
    const a = agree(berth);
    t.same(a.indexed, a.onDisk, 'index and disk agree');
    t.same(await get(berth, 'library/small', l2).then(sha), l2, 'an evicted blob is fetched again on demand');
  });

  await t.test('a blob being streamed survives eviction', async (t) => {
    const berth = await startBerth(t, { upstreams: [{ registry: 'docker.io', url: registry.url }], maxSize: '14MiB' });
    const [b1, b2, b3] = big.manifests[0]!.layers as [string, string, string];
    await get(berth, 'library/big', b1);
    // A client that reads b1 slowly: headers received, body paused.
    const slow = await new Promise<http.IncomingMessage>((resolve, reject) => {
      http.get(`${berth.url}/v2/library/big/blobs/${b1}?ns=docker.io`, resolve).on('error', reject);
    });
    slow.pause();
    await get(berth, 'library/big', b2);
    await get(berth, 'library/big', b3);
    await berth.service.waitForOutput(/evicted least recently used content/, 15_000);
    t.ok(fs.existsSync(blobFile(berth, b1)), 'b1 (least recently used, but being read) was not deleted');
    await waitFor('b2 evicted instead', () => !fs.existsSync(blobFile(berth, b2)), { timeoutMs: 10_000 });
    const chunks: Buffer[] = [];
    slow.on('data', (c: Buffer) => chunks.push(c));
    slow.resume();
    await new Promise((res) => slow.on('end', res));
    t.equal(sha(Buffer.concat(chunks)), b1, 'the slow reader got every byte right');
    const a = agree(berth);
    t.same(a.indexed, a.onDisk, 'index and disk agree');
  });
});
