/**
 * A real EMFILE: the daemon's RLIMIT_NOFILE is lowered (prlimit on its pid)
 * until no new fd can be opened, then a cached blob is asked for over a
 * connection opened before. berth must answer a clean, retryable 503 and
 * keep the blob: once fds are back the same blob is served from the cache,
 * with no upstream request. (Every open/stat error used to drop the row.)
 */
import t from 'tap';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { startTokenServer } from '../harness/token-server.js';
import { startRegistry } from '../harness/registry.js';
import { makeImage, pushImage, readBlob } from '../harness/images.js';
import { startBerth } from '../harness/berth.js';
import { fetchOnce, inspectCache, startFaultProxy } from '../harness/fault-proxy.js';
import { run, tempDirFor, waitFor } from '../harness/procs.js';

const NO_PRLIMIT = (await run('prlimit', ['--version'])).code === 0 ? false : 'prlimit (util-linux) is not installed';

/** One GET over `agent` (a kept-alive connection): status and body. */
function get(agent: http.Agent, url: string): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    http
      .get(url, { agent }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.once('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
        res.once('error', reject);
      })
      .once('error', reject);
  });
}

/** The lowest fd number `pid` has free: with RLIMIT_NOFILE there, no new fd can be opened. */
function lowestFreeFd(pid: number): number {
  const used = new Set(fs.readdirSync(`/proc/${pid}/fd`).map(Number));
  let n = 0;
  while (used.has(n)) n++;
  return n;
}

t.test('a cached blob asked for while berth has no fd left', { skip: NO_PRLIMIT }, async (t) => {
  const token = await startTokenServer(t, { users: { pusher: 'push-secret' } });
  const registry = await startRegistry(t, { token });
  const work = await tempDirFor(t, 'berth-emfile');
  const img = await makeImage(path.join(work, 'img'), { layers: 1, layerSize: 300_000, seed: 'emfile', tag: 'v1' });
  await pushImage(img.layoutDir, 'v1', registry, 'library/emfile:v1', { creds: 'pusher:push-secret' });
  const proxy = await startFaultProxy(t, { target: registry.url });
  const berth = await startBerth(t, { upstreams: [{ registry: 'docker.io', url: proxy.url }] });
  const layer = img.manifests[0]!.layers[0]!;
  const expected = await readBlob(img.layoutDir, layer);
  const url = `${berth.url}/v2/library/emfile/blobs/${layer}?ns=docker.io`;
  const upstreamGets = () => proxy.requests({ method: 'GET' }).filter((r) => r.path.endsWith(`/blobs/${layer}`)).length;

  const first = await fetchOnce(url);
  t.equal(first.status, 200);
  t.ok(first.body.equals(expected), 'cached by a first pull');
  await waitFor('the blob indexed', async () => (await inspectCache(berth.cacheDir)).indexed.has(layer), { timeoutMs: 30_000, intervalMs: 50 });
  const gets = upstreamGets();

  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => agent.destroy());
  t.equal((await get(agent, `${berth.url}/healthz`)).status, 200, 'a connection is open before the fds run out');

  const pid = berth.service.pid;
  const limits = await run('prlimit', ['--pid', String(pid), '--nofile', '--raw', '--noheadings', '--output=SOFT,HARD']);
  const [soft, hard] = limits.stdout.trim().split(/\s+/);
  t.ok(soft && hard, `berth's fd limits: ${limits.stdout.trim()}`);
  const restore = async () => {
    await run('prlimit', ['--pid', String(pid), `--nofile=${soft}:${hard}`]);
  };
  t.teardown(restore);
  const lowered = await run('prlimit', ['--pid', String(pid), `--nofile=${lowestFreeFd(pid)}:${hard}`]);
  t.equal(lowered.code, 0, lowered.stderr);

  const starved = await get(agent, url);
  await restore();
  t.equal(starved.status, 503, 'a retryable 503');
  const body = starved.body.toString('utf8');
  t.match(JSON.parse(body), { errors: [{ code: 'UNAVAILABLE', message: /EMFILE/ }] }, 'the OCI envelope naming the cause');
  t.notMatch(body, /\bat .*\.js:\d+/, 'no stack trace');
  t.ok((await inspectCache(berth.cacheDir)).indexed.has(layer), 'the blob is still indexed');
  t.ok(berth.logs().some((l) => l.code === 'EMFILE' && l.digest === layer), 'berth logged it');

  const again = await fetchOnce(url);
  t.equal(again.status, 200, 'with fds back, served');
  t.ok(again.body.equals(expected), 'the exact bytes');
  t.equal(upstreamGets(), gets, 'from the cache: no upstream request');
  t.notOk(berth.service.hasExited(), 'the daemon is alive');
});
