/**
 * An upstream that accepts connections and never answers (a black-holing WAN,
 * a stuck proxy: common at edge sites). A cached tag whose tag_ttl has passed
 * must not wait header_timeout on its revalidation: past revalidate_timeout
 * berth answers with the last known digest (stale, with a Warning) and the
 * revalidation goes on in the background, one per tag however many ask,
 * and is ended at shutdown rather than holding the exit open.
 *
 * header_timeout is 60s and revalidate_timeout 1s; the bound asserted (20s)
 * is far from both, so it cannot flake and still fails if berth waits.
 */
import t from 'tap';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { startTokenServer } from '../harness/token-server.js';
import { startRegistry } from '../harness/registry.js';
import { makeImage, pushImage } from '../harness/images.js';
import { startContainerd, writeHostsToml } from '../harness/containerd.js';
import { startBerth } from '../harness/berth.js';
import { tempDirFor, waitFor } from '../harness/procs.js';
import { fetchOnce, startFaultProxy } from '../harness/fault-proxy.js';

const BOUND_MS = 20_000;

t.test('a hanging upstream does not hold up cached tags', async (t) => {
  const token = await startTokenServer(t, { users: { pusher: 'push-secret' } });
  const registry = await startRegistry(t, { token });
  const work = await tempDirFor(t, 'berth-slow-upstream');
  const img = await makeImage(path.join(work, 'app'), { layers: 2, layerSize: 50_000, seed: 'slow-upstream', tag: 'v1' });
  await pushImage(img.layoutDir, 'v1', registry, 'library/app:v1', { creds: 'pusher:push-secret' });

  const proxy = await startFaultProxy(t, { target: registry.url });
  const berth = await startBerth(t, {
    upstreams: [{ registry: 'docker.io', url: proxy.url, connect_timeout: '2s', header_timeout: '60s', body_timeout: '10s' }],
    tagTtl: '1s',
    env: { BERTH_CACHE_REVALIDATE_TIMEOUT: '1s' },
  });
  const ctd = await startContainerd(t);
  const hostsDir = path.join(work, 'certs.d');
  await writeHostsToml(hostsDir, 'docker.io', berth.url);

  // Cache the whole image while the upstream still answers.
  const warm = await ctd.pull('docker.io/library/app:v1', { hostsDir });
  t.equal(warm.code, 0, `first pull: ${warm.stderr}`);
  const cachedAt = Date.now();
  await waitFor('tag_ttl to lapse', () => Date.now() - cachedAt > 1_100, { intervalMs: 100 });

  // From here the upstream accepts every manifest HEAD and never answers it.
  const stall = proxy.addRule({ method: 'HEAD', path: /\/manifests\/v1$/, fault: { kind: 'stallHeaders' } });
  const url = `${berth.url}/v2/library/app/manifests/v1?ns=docker.io`;
  const mark = proxy.mark();

  await t.test('HEAD and GET of the cached tag answer with the last known digest, well before header_timeout', async (t) => {
    const head = await fetchOnce(url, { method: 'HEAD' });
    t.equal(head.status, 200, 'HEAD: 200');
    t.equal(head.headers['docker-content-digest'], img.manifestDigest, 'HEAD: the last known digest');
    t.match(head.headers.warning, /^299 - "berth: upstream docker\.io did not answer within 1s; serving the last known digest of library\/app:v1"$/);
    t.ok(head.ms < BOUND_MS, `HEAD answered in ${head.ms} ms (header_timeout is 60 s)`);

    const get = await fetchOnce(url);
    t.equal(get.status, 200, 'GET: 200');
    t.equal(`sha256:${createHash('sha256').update(get.body).digest('hex')}`, img.manifestDigest, 'GET: the last known bytes');
    t.match(get.headers.warning, /did not answer within 1s/);
    t.ok(get.ms < BOUND_MS, `GET answered in ${get.ms} ms`);

    const again = await fetchOnce(url, { method: 'HEAD' });
    t.equal(again.status, 200);
    t.ok(again.ms < BOUND_MS, `a later HEAD answered in ${again.ms} ms`);

    const upstreamHeads = proxy.requests({ method: 'HEAD', pathRe: /\/manifests\/v1$/, since: mark });
    t.equal(upstreamHeads.length, 1, 'one revalidation upstream, shared by every request for the tag');
    t.equal(upstreamHeads[0]?.status, undefined, 'and it is still unanswered');
  });

  await t.test('containerd pulls the cached image while the upstream hangs', async (t) => {
    await ctd.forget();
    const started = Date.now();
    const r = await ctd.pull('docker.io/library/app:v1', { hostsDir, timeoutMs: 60_000 });
    const took = Date.now() - started;
    t.equal(r.code, 0, `ctr pull: ${r.stderr}`);
    t.ok(took < BOUND_MS, `in ${took} ms`);
  });

  await t.test('/metrics counts the deferred revalidations as stale answers', async (t) => {
    const text = (await fetchOnce(`${berth.url}/metrics`)).body.toString('utf8');
    const deferred = Number(/^berth_revalidations_deferred_total\{upstream="docker\.io"\} (\d+)/m.exec(text)?.[1] ?? 0);
    const stale = Number(/^berth_stale_answers_total\{upstream="docker\.io"\} (\d+)/m.exec(text)?.[1] ?? 0);
    t.ok(deferred >= 3, `berth_revalidations_deferred_total = ${deferred}`);
    t.ok(stale >= deferred, `berth_stale_answers_total = ${stale}`);
  });

  t.equal((await fetchOnce(`${berth.url}/healthz`)).status, 200, 'berth stays healthy throughout');

  await t.test('SIGTERM with the revalidation still held: berth ends it and exits at once', async (t) => {
    const held = proxy.requests({ method: 'HEAD', pathRe: /\/manifests\/v1$/, since: mark }).filter((r) => r.status === undefined);
    t.ok(held.length > 0, 'a revalidation is still waiting upstream');
    const started = Date.now();
    await berth.stop();
    const took = Date.now() - started;
    t.equal(await berth.service.exited, 0, 'exit code 0');
    t.ok(took < 9_000, `stopped in ${took} ms (drain_timeout 5 s; header_timeout 60 s)`);
    t.ok(
      berth.logs().some((l) => l.msg === 'background tag revalidation failed' && /shutting down/.test(String(l.err))),
      'the background revalidation ended as berth shut down',
    );
  });
  stall.remove();
});
