/**
 * The core mirror, end to end with real parts: a Distribution registry behind
 * token auth (docker.io's flow), images pushed with skopeo, berth as a real
 * process, and containerd pulling through it with `ctr images pull --hosts-dir`.
 */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import http from 'node:http';
import { createHash } from 'node:crypto';
import { startTokenServer } from '../harness/token-server.js';
import { startRegistry } from '../harness/registry.js';
import { makeImage, pushImage } from '../harness/images.js';
import { startContainerd, writeHostsToml } from '../harness/containerd.js';
import { startBerth } from '../harness/berth.js';
import { tempDirFor, waitFor } from '../harness/procs.js';

/** A request with the target sent byte for byte (fetch would normalise %2e%2e and ..). */
function rawRequest(base: string, target: string, method = 'GET'): Promise<{ status: number; body: string }> {
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: u.hostname, port: u.port, path: target, method }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

const sha = (b: Buffer) => 'sha256:' + createHash('sha256').update(b).digest('hex');

t.test('core mirror with real containerd, Distribution and skopeo', async (t) => {
  const token = await startTokenServer(t, { users: { pusher: 'push-secret', edge: 'edge-secret' }, grant: (user, repo, requested) => {
    if (user === 'pusher') return requested;
    if (repo.startsWith('private/')) return user === 'edge' ? ['pull'] : [];
    return requested.filter((a) => a === 'pull');
  } });
  const registry = await startRegistry(t, { token });
  const work = await tempDirFor(t, 'berth-core');
  const creds = { creds: 'pusher:push-secret' };

  const app = await makeImage(path.join(work, 'app'), { layers: 3, layerSize: 200_000, seed: 'app', tag: 'v1' });
  const multi = await makeImage(path.join(work, 'multi'), { layers: 2, layerSize: 100_000, seed: 'multi', tag: 'v1', platforms: ['linux/amd64', 'linux/arm64'] });
  const big = await makeImage(path.join(work, 'big'), { layers: 1, layerSize: 8_000_000, seed: 'big', tag: 'v1' });
  const corrupt = await makeImage(path.join(work, 'corrupt'), { layers: 1, layerSize: 300_000, seed: 'corrupt', tag: 'v1' });
  const priv = await makeImage(path.join(work, 'priv'), { layers: 1, layerSize: 50_000, seed: 'priv', tag: 'v1' });
  const uncached = await makeImage(path.join(work, 'uncached'), { layers: 1, layerSize: 10_000, seed: 'uncached', tag: 'v1' });
  await pushImage(app.layoutDir, 'v1', registry, 'library/app:v1', creds);
  await pushImage(multi.layoutDir, 'v1', registry, 'library/multi:v1', creds);
  await pushImage(big.layoutDir, 'v1', registry, 'library/big:v1', creds);
  await pushImage(corrupt.layoutDir, 'v1', registry, 'library/corrupt:v1', creds);
  await pushImage(priv.layoutDir, 'v1', registry, 'private/app:v1', creds);
  await pushImage(uncached.layoutDir, 'v1', registry, 'library/uncached:v1', creds);

  const pwFile = path.join(work, 'edge.password');
  fs.writeFileSync(pwFile, 'edge-secret\n');
  const berth = await startBerth(t, {
    upstreams: [{ registry: 'docker.io', url: registry.url, username: 'edge', password_file: pwFile }],
    tagTtl: '1s',
  });
  const ctd = await startContainerd(t);
  const hostsDir = path.join(work, 'certs.d');
  await writeHostsToml(hostsDir, 'docker.io', berth.url);

  const blobGets = (digests: string[], since: number) =>
    registry.requests({ method: 'GET', since }).filter((r) => digests.some((d) => r.path.endsWith(`/blobs/${d}`)));
  const allBlobGets = (since: number) => registry.requests({ method: 'GET', pathRe: /\/blobs\//, since });

  await t.test('a multi-layer image pulls through berth', async (t) => {
    const mark = registry.mark();
    const r = await ctd.pull('docker.io/library/app:v1', { hostsDir });
    t.equal(r.code, 0, `ctr pull: ${r.stderr}`);
    const digests = app.blobs.map((b) => b.digest);
    await registry.waitForRequests(() => blobGets(digests, mark).length >= digests.length, 10_000);
    t.equal(blobGets(digests, mark).length, digests.length, 'each layer and the config fetched from the upstream exactly once');
    t.ok(berth.logs().some((l) => l.msg === 'request' && typeof l.reqId === 'string'), 'request lines carry a request id');
  });

  await t.test('the second pull crosses no WAN for blobs', async (t) => {
    await ctd.forget('docker.io/library/app:v1');
    const mark = registry.mark();
    const r = await ctd.pull('docker.io/library/app:v1', { hostsDir });
    t.equal(r.code, 0, `ctr pull: ${r.stderr}`);
    t.same(allBlobGets(mark), [], 'no upstream blob request');
    t.equal(registry.requests({ method: 'GET', pathRe: /\/manifests\/sha256:/, since: mark }).length, 0, 'no upstream manifest GET by digest');
  });

  await t.test('a multi-platform index pulls the chosen platform', async (t) => {
    const r = await ctd.pull('docker.io/library/multi:v1', { hostsDir, platform: 'linux/arm64' });
    t.equal(r.code, 0, `ctr pull: ${r.stderr}`);
    const res = await fetch(`${berth.url}/v2/library/multi/manifests/v1?ns=docker.io`, { headers: { Accept: 'application/vnd.oci.image.index.v1+json' } });
    const body = Buffer.from(await res.arrayBuffer());
    t.equal(res.status, 200);
    t.equal(res.headers.get('docker-content-digest'), multi.manifestDigest, 'index digest unchanged from upstream');
    t.equal(sha(body), multi.manifestDigest, 'index bytes verbatim');
    t.equal(res.headers.get('content-type'), multi.mediaType);
  });

  await t.test('nginx and library/nginx are one repository', async (t) => {
    const a = await fetch(`${berth.url}/v2/app/manifests/v1?ns=docker.io`);
    const b = await fetch(`${berth.url}/v2/library/app/manifests/v1?ns=docker.io`);
    t.equal(a.status, 200);
    t.equal(a.headers.get('docker-content-digest'), b.headers.get('docker-content-digest'));
    t.equal(a.headers.get('docker-content-digest'), app.manifestDigest);
  });

  await t.test('20 concurrent cold requests for one blob share one upstream GET', async (t) => {
    const layer = big.manifests[0]!.layers[0]!;
    const expected = big.blobs.find((b) => b.digest === layer)!;
    const mark = registry.mark();
    const results = await Promise.all(
      Array.from({ length: 20 }, async () => {
        const res = await fetch(`${berth.url}/v2/library/big/blobs/${layer}?ns=docker.io`);
        return { status: res.status, body: Buffer.from(await res.arrayBuffer()) };
      }),
    );
    for (const r of results) {
      t.equal(r.status, 200);
      t.equal(r.body.length, expected.size);
    }
    t.ok(results.every((r) => sha(r.body) === layer), 'every client received the right bytes');
    await registry.waitForRequests(() => blobGets([layer], mark).length >= 1, 10_000);
    t.equal(blobGets([layer], mark).length, 1, 'exactly one upstream blob GET');
    const metrics = await (await fetch(`${berth.url}/metrics`)).text();
    const coalesced = Number(/^berth_coalesced_waiters_total (\d+)/m.exec(metrics)?.[1] ?? 0);
    t.ok(coalesced >= 1, `berth counted coalesced waiters (${coalesced})`);
  });

  await t.test('Range answers are exact, on cached and on cold blobs', async (t) => {
    const layer = app.manifests[0]!.layers[0]!;
    const full = Buffer.from(await (await fetch(`${berth.url}/v2/library/app/blobs/${layer}?ns=docker.io`)).arrayBuffer());
    const r1 = await fetch(`${berth.url}/v2/library/app/blobs/${layer}?ns=docker.io`, { headers: { Range: 'bytes=100-199' } });
    t.equal(r1.status, 206);
    t.equal(r1.headers.get('content-range'), `bytes 100-199/${full.length}`);
    t.equal(r1.headers.get('content-length'), '100');
    t.same(Buffer.from(await r1.arrayBuffer()), full.subarray(100, 200));
    const r2 = await fetch(`${berth.url}/v2/library/app/blobs/${layer}?ns=docker.io`, { headers: { Range: 'bytes=-10' } });
    t.same(Buffer.from(await r2.arrayBuffer()), full.subarray(full.length - 10));
    const r3 = await fetch(`${berth.url}/v2/library/app/blobs/${layer}?ns=docker.io`, { headers: { Range: `bytes=${full.length}-` } });
    t.equal(r3.status, 416);
    t.equal(r3.headers.get('content-range'), `bytes */${full.length}`);
    t.match(await r3.json(), { errors: [{ code: 'RANGE_INVALID' }] });
    // cold: the first request for this blob is a Range request
    const cold = multi.manifests[1]!.layers[1]!;
    const coldSize = multi.blobs.find((b) => b.digest === cold)!.size;
    const r4 = await fetch(`${berth.url}/v2/library/multi/blobs/${cold}?ns=docker.io`, { headers: { Range: 'bytes=1000-1999' } });
    t.equal(r4.status, 206);
    t.equal(r4.headers.get('content-range'), `bytes 1000-1999/${coldSize}`);
    const part = Buffer.from(await r4.arrayBuffer());
    const whole = Buffer.from(await (await fetch(`${berth.url}/v2/library/multi/blobs/${cold}?ns=docker.io`)).arrayBuffer());
    t.equal(sha(whole), cold);
    t.same(part, whole.subarray(1000, 2000));
  });

  await t.test('HEAD answers carry the headers and no body', async (t) => {
    const m = await fetch(`${berth.url}/v2/library/app/manifests/v1?ns=docker.io`, { method: 'HEAD' });
    t.equal(m.status, 200);
    t.equal(m.headers.get('docker-content-digest'), app.manifestDigest);
    t.ok(Number(m.headers.get('content-length')) > 0);
    const layer = app.manifests[0]!.layers[1]!;
    const b = await fetch(`${berth.url}/v2/library/app/blobs/${layer}?ns=docker.io`, { method: 'HEAD' });
    t.equal(b.status, 200);
    t.equal(b.headers.get('content-length'), String(app.blobs.find((x) => x.digest === layer)!.size));
    t.equal(b.headers.get('docker-content-digest'), layer);
    const miss = await fetch(`${berth.url}/v2/library/app/blobs/sha256:${'0'.repeat(64)}?ns=docker.io`, { method: 'HEAD' });
    t.equal(miss.status, 404);
  });

  await t.test('a private repository pulls with berth\'s upstream credentials', async (t) => {
    const r = await ctd.pull('docker.io/private/app:v1', { hostsDir });
    t.equal(r.code, 0, `ctr pull: ${r.stderr}`);
  });

  await t.test('a byte flipped upstream is never cached nor completed as a 200', async (t) => {
    const layer = corrupt.manifests[0]!.layers[0]!;
    const size = corrupt.blobs.find((b) => b.digest === layer)!.size;
    const file = path.join(registry.dataDir, 'docker/registry/v2/blobs/sha256', layer.slice(7, 9), layer.slice(7), 'data');
    const bytes = fs.readFileSync(file);
    bytes.writeUInt8(bytes.readUInt8(size - 5) ^ 0xff, size - 5);
    fs.writeFileSync(file, bytes);
    for (let i = 0; i < 2; i++) {
      let complete = false;
      let got = 0;
      try {
        const res = await fetch(`${berth.url}/v2/library/corrupt/blobs/${layer}?ns=docker.io`);
        const body = Buffer.from(await res.arrayBuffer());
        got = body.length;
        complete = res.status === 200 && body.length === size;
      } catch {
        complete = false;
      }
      t.notOk(complete, `attempt ${i + 1}: the client never got a complete 200 (${got} bytes)`);
    }
    const cached = fs.existsSync(path.join(berth.cacheDir, 'blobs/sha256', layer.slice(7, 9), layer.slice(7)));
    t.notOk(cached, 'nothing cached under the digest');
    const r = await ctd.pull('docker.io/library/corrupt:v1', { hostsDir, timeoutMs: 60_000 });
    t.not(r.code, 0, 'containerd pull of the corrupted image fails');
    t.ok(berth.logs().some((l) => l.msg === 'blob fill failed; nothing cached'), 'berth logged the discarded fill');
  });

  await t.test('bad input gets 4xx OCI errors and touches nothing outside the cache dir', async (t) => {
    const parent = path.dirname(berth.cacheDir);
    const canary = path.join(parent, 'canary.txt');
    fs.writeFileSync(canary, 'canary');
    const before = fs.readdirSync(parent).sort();
    const cases: Array<[string, number, string]> = [
      ['/v2/UPPER/manifests/x', 400, 'NAME_INVALID'],
      ['/v2/a/%2e%2e/%2e%2e/canary.txt/manifests/x', 400, 'NAME_INVALID'],
      ['/v2/a/../../canary.txt/manifests/x', 400, 'NAME_INVALID'],
      ['/v2/a/blobs/sha256:' + 'a'.repeat(64) + '/../../../canary.txt', 404, 'NOT_FOUND'],
      ['/v2/..%2f..%2fcanary.txt/blobs/sha256:' + 'a'.repeat(64), 400, 'NAME_INVALID'],
      ['/v2/a/blobs/sha256:../../canary.txt', 404, 'NOT_FOUND'],
      ['/v2/a/blobs/sha256:..%2f..%2fcanary.txt', 400, 'DIGEST_INVALID'],
      ['/v2/a/blobs/sha256:' + 'A'.repeat(64), 400, 'DIGEST_INVALID'],
      ['/v2/a/manifests/bad%20tag', 404, 'MANIFEST_UNKNOWN'],
      ['/v2/a/manifests/..', 404, 'MANIFEST_UNKNOWN'],
      ['/v2/a/manifests/sha256:..%2f..%2fcanary.txt', 400, 'DIGEST_INVALID'],
      ['/v2/a/manifests/latest?ns=evil.example.com', 403, 'DENIED'],
      ['/v2/a/manifests/latest?ns=' + encodeURIComponent('127.0.0.1:1/x'), 400, 'NAME_INVALID'],
      ['/v2/library/nope/manifests/latest?ns=docker.io', 404, 'MANIFEST_UNKNOWN'],
      [`/v2/library/app/blobs/sha256:${'1'.repeat(64)}?ns=docker.io`, 404, 'BLOB_UNKNOWN'],
      ['/v3/whatever', 404, 'NOT_FOUND'],
    ];
    for (const [p, status, code] of cases) {
      const res = await rawRequest(berth.url, p);
      t.equal(res.status, status, `${p} -> ${status}`);
      t.match(JSON.parse(res.body), { errors: [{ code }] }, `${p} -> ${code}`);
    }
    for (const method of ['PUT', 'POST', 'PATCH', 'DELETE']) {
      const res = await fetch(`${berth.url}/v2/library/app/manifests/v1`, { method, body: method === 'DELETE' ? null : '{}' });
      t.equal(res.status, 405, `${method} is refused`);
      t.match(await res.json(), { errors: [{ code: 'UNSUPPORTED' }] });
    }
    t.equal(fs.readFileSync(canary, 'utf8'), 'canary');
    t.same(fs.readdirSync(parent).sort(), before, 'nothing new next to the cache dir');
  });

  await t.test('a reference that is neither a tag nor a digest: 404 MANIFEST_UNKNOWN, as the conformance suite expects, and the upstream is not asked', async (t) => {
    const mark = registry.mark();
    const target = '/v2/library/x/manifests/.INVALID_MANIFEST_NAME?ns=docker.io';
    const get = await rawRequest(berth.url, target);
    t.equal(get.status, 404, 'GET: 404');
    t.match(JSON.parse(get.body), { errors: [{ code: 'MANIFEST_UNKNOWN' }] }, 'GET: MANIFEST_UNKNOWN in the OCI envelope');
    const head = await rawRequest(berth.url, target, 'HEAD');
    t.equal(head.status, 404, 'HEAD: 404');
    t.equal(head.body, '', 'HEAD: no body');
    await registry.barrier();
    t.same(registry.requests({ since: mark }).map((r) => `${r.method} ${r.uri}`), [], 'the upstream saw no request');
  });

  await t.test('upstream down: cached images pull by tag and digest, an uncached one fails fast', async (t) => {
    await ctd.forget();
    await registry.stop();
    // tag_ttl is 1s: make sure revalidation is due, so the stale path is what answers.
    const since = Date.now();
    await waitFor('tag_ttl to lapse', () => Date.now() - since > 1100, { intervalMs: 100 });
    const head = await fetch(`${berth.url}/v2/library/app/manifests/v1?ns=docker.io`);
    t.equal(head.status, 200);
    t.match(head.headers.get('warning') ?? '', /unreachable/, 'stale answer carries a Warning');
    const byTag = await ctd.pull('docker.io/library/app:v1', { hostsDir });
    t.equal(byTag.code, 0, `by tag: ${byTag.stderr}`);
    await ctd.forget();
    const byDigest = await ctd.pull(`docker.io/library/app@${app.manifestDigest}`, { hostsDir });
    t.equal(byDigest.code, 0, `by digest: ${byDigest.stderr}`);
    const started = Date.now();
    const miss = await ctd.pull('docker.io/library/uncached:v1', { hostsDir, timeoutMs: 60_000 });
    const took = Date.now() - started;
    t.not(miss.code, 0, 'uncached pull fails');
    t.ok(took < 20_000, `and fails fast (${took} ms)`);
    const res = await fetch(`${berth.url}/v2/library/uncached/manifests/v1?ns=docker.io`);
    t.equal(res.status, 503);
    t.match(await res.json(), { errors: [{ code: 'UNAVAILABLE' }] });
    const metrics = await (await fetch(`${berth.url}/metrics`)).text();
    t.match(metrics, /berth_stale_answers_total\{upstream="docker.io"\} [1-9]/);
  });

  await t.test('the cache survives a restart; SIGTERM exits cleanly', async (t) => {
    await berth.stop();
    t.equal(await berth.service.exited, 0, 'exit code 0 after SIGTERM');
    await berth.restart();
    await ctd.forget();
    const r = await ctd.pull('docker.io/library/app:v1', { hostsDir });
    t.equal(r.code, 0, `pull from the cache after restart, upstream still down: ${r.stderr}`);
    const secretsInLogs = berth.logs().some((l) => JSON.stringify(l).includes('edge-secret'));
    t.notOk(secretsInLogs, 'the upstream password never appears in the logs');
  });

  await registry.start();
});
