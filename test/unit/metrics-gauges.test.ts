/**
 * The gauges dashboards and alert rules read (issue 14), from a real daemon
 * (startDaemon, in this process) in front of a real Distribution: the cache's
 * limits, pins and quarantine (after a real `verify`), upstream reachability
 * with its last success, the offline grace beside the snapshot age, and the
 * optional metrics listener ([server] metrics_listen) that serves /metrics and
 * /healthz and nothing of the registry.
 */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { pino } from 'pino';
import { stringify } from 'smol-toml';
import { loadConfig } from '../../src/config/load.js';
import { startDaemon } from '../../src/daemon.js';
import { openRuntime } from '../../src/runtime.js';
import { verifyCache } from '../../src/cache/maintenance.js';
import { Layout } from '../../src/store/layout.js';
import { makeImage, pushImage, MANIFEST_ACCEPT } from '../harness/images.js';
import { startRegistry } from '../harness/registry.js';
import { freePort, tempDirFor } from '../harness/procs.js';

const logger = pino({ level: process.env.BERTH_TEST_LOG ?? 'silent' });

/** The value of one sample in Prometheus text (labels matched exactly, in any order); undefined when absent. */
export function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const got: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) got[l[1]!] = l[2]!;
    const want = Object.entries(labels);
    if (want.length === Object.keys(got).length && want.every(([k, v]) => got[k] === v)) return Number(m[3]);
  }
  return undefined;
}

/** The sum of every sample of `name` whose labels include `labels`. */
function total(text: string, name: string, labels: Record<string, string> = {}): number {
  let n = 0;
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const got: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) got[l[1]!] = l[2]!;
    if (Object.entries(labels).every(([k, v]) => got[k] === v)) n += Number(m[3]);
  }
  return n;
}

t.test('store, upstream and policy gauges, and the metrics listener', async (t) => {
  const work = await tempDirFor(t, 'berth-metrics-gauges');
  const registry = await startRegistry(t);
  const img = await makeImage(path.join(work, 'img'), { layers: 2, layerSize: 40_000, seed: 'metrics-gauges', tag: 'v1' });
  await pushImage(img.layoutDir, 'v1', registry, 'library/app:v1');
  const deadPort = await freePort();
  const harborPort = await freePort();
  const metricsPort = await freePort();
  const file = path.join(work, 'berth.toml');
  const cacheDir = path.join(work, 'cache');
  fs.writeFileSync(
    file,
    stringify({
      server: { listen: `127.0.0.1:${await freePort()}`, metrics_listen: `127.0.0.1:${metricsPort}`, drain_timeout: '1s' },
      cache: { dir: cacheDir, max_size: '1GiB' },
      log: { level: 'silent' },
      harbor: { url: `http://127.0.0.1:${harborPort}`, offline_grace: '2h', sync_interval: '1h' },
      upstream: [
        { registry: 'docker.io', url: registry.url },
        { registry: 'dead.example', url: `http://127.0.0.1:${deadPort}`, connect_timeout: '1s' },
      ],
    }),
  );
  const config = loadConfig({ file, env: {} });
  t.same(config.server.metricsListen, { listen: `127.0.0.1:${metricsPort}`, host: '127.0.0.1', port: metricsPort });
  const daemon = await startDaemon(config, logger);
  t.teardown(() => daemon.stop(1000));
  const scrapeUrl = `http://127.0.0.1:${metricsPort}/metrics`;
  const scrape = async () => {
    const res = await fetch(scrapeUrl);
    t.equal(res.status, 200);
    return res.text();
  };

  await t.test('the metrics listener serves /metrics and /healthz, nothing else', async (t) => {
    const res = await fetch(scrapeUrl);
    t.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
    t.match(await res.text(), /^# HELP berth_/m);
    t.equal(await (await fetch(`http://127.0.0.1:${metricsPort}/healthz`)).text(), 'ok\n');
    const v2 = await fetch(`http://127.0.0.1:${metricsPort}/v2/library/app/manifests/v1?ns=docker.io`);
    t.equal(v2.status, 404, 'no registry API on the metrics listener');
    await v2.arrayBuffer();
    t.equal((await fetch(`http://127.0.0.1:${metricsPort}/readyz`)).status, 404);
    t.equal((await fetch(scrapeUrl, { method: 'POST', body: 'x' })).status, 405);
    const head = await fetch(scrapeUrl, { method: 'HEAD' });
    t.equal(head.status, 200);
    t.equal(await head.text(), '');
    t.equal((await fetch(`${daemon.url}/metrics`)).status, 200, 'the main listener keeps /metrics');
  });

  await t.test('max_size and the watermarks', async (t) => {
    const text = await scrape();
    t.equal(sample(text, 'berth_cache_max_size_bytes'), 1024 ** 3);
    t.equal(sample(text, 'berth_cache_low_watermark_bytes'), Math.floor(1024 ** 3 * 0.9));
    t.equal(sample(text, 'berth_policy_offline_grace_seconds'), 7200, '[harbor] offline_grace, in seconds');
    t.equal(sample(text, 'berth_cache_pins'), 0);
    t.equal(sample(text, 'berth_cache_pinned_bytes'), 0);
    t.equal(sample(text, 'berth_cache_quarantined_blobs'), 0);
    t.equal(sample(text, 'berth_served_bytes_total', { source: 'cache' }), 0, 'served bytes start at 0 for both sources');
    t.equal(sample(text, 'berth_upstream_up', { upstream: 'docker.io' }), undefined, 'no reachability before the first request');
  });

  const get = (p: string, ns = 'docker.io') => fetch(`${daemon.url}/v2/${p}?ns=${ns}`, { headers: { Accept: MANIFEST_ACCEPT } });
  await t.test('upstream reachability and its last success', async (t) => {
    const before = Date.now() / 1000;
    const m = await get('library/app/manifests/v1');
    t.equal(m.status, 200);
    await m.arrayBuffer();
    for (const b of img.blobs) {
      const r = await get(`library/app/blobs/${b.digest}`);
      t.equal(r.status, 200);
      await r.arrayBuffer();
    }
    const dead = await get('x/app/manifests/v1', 'dead.example');
    t.ok(dead.status >= 400, `status ${dead.status}`);
    await dead.arrayBuffer();
    const text = await scrape();
    t.equal(sample(text, 'berth_upstream_up', { upstream: 'docker.io' }), 1);
    const last = sample(text, 'berth_upstream_last_success_timestamp_seconds', { upstream: 'docker.io' }) ?? 0;
    t.ok(last >= before && last <= Date.now() / 1000, `last success ${last} is during the pull`);
    t.equal(sample(text, 'berth_upstream_up', { upstream: 'dead.example' }), 0, 'the unreachable one is down');
    t.equal(sample(text, 'berth_upstream_last_success_timestamp_seconds', { upstream: 'dead.example' }), undefined, 'and never answered');
  });

  // SPEC "Ops endpoints": requests, hits/misses, bytes served by source and bytes saved, upstream latency,
  // errors per registry, cache bytes and blobs. The dashboard test reads most of these through PromQL;
  // here each is held to the pull that made it.
  await t.test('after a cold and a warm pull: requests, hits and misses, bytes by source, upstream latency and errors, cache bytes and blobs', async (t) => {
    const bytes = img.blobs.reduce((n, b) => n + b.size, 0);
    for (const b of img.blobs) {
      const r = await get(`library/app/blobs/${b.digest}`);
      t.equal(r.status, 200);
      await r.arrayBuffer();
    }
    const text = await scrape();
    t.ok(total(text, 'berth_http_requests_total', { method: 'GET', code: '200' }) >= 2 * img.blobs.length + 1, 'every answer is counted');
    t.ok(total(text, 'berth_http_request_duration_seconds_count') >= 2 * img.blobs.length + 1, 'and timed');
    t.equal(total(text, 'berth_cache_requests_total', { kind: 'blob', result: 'miss' }), img.blobs.length, 'the cold pull: one miss per blob');
    t.equal(total(text, 'berth_cache_requests_total', { kind: 'blob', result: 'hit' }), img.blobs.length, 'the warm pull: one hit per blob');
    t.equal(sample(text, 'berth_served_bytes_total', { source: 'upstream' }), bytes, 'bytes served from the upstream');
    t.equal(sample(text, 'berth_served_bytes_total', { source: 'cache' }), bytes, 'bytes saved: served from the cache');
    t.equal(sample(text, 'berth_upstream_bytes_total', { upstream: 'docker.io' }), bytes, 'each blob crossed the WAN once');
    t.ok(total(text, 'berth_upstream_requests_total', { upstream: 'docker.io' }) >= img.blobs.length + 1, 'upstream requests per registry');
    t.ok(total(text, 'berth_upstream_request_duration_seconds_count', { upstream: 'docker.io' }) >= img.blobs.length + 1, 'upstream latency per registry');
    const deadErrors = text.split('\n').filter((l) => l.startsWith('berth_upstream_requests_total{') && l.includes('upstream="dead.example"'));
    t.ok(deadErrors.length > 0 && total(text, 'berth_upstream_requests_total', { upstream: 'dead.example' }) > 0, `the unreachable registry's errors are counted (${deadErrors.join('; ')})`);
    t.equal(sample(text, 'berth_cache_blobs'), img.blobs.length, 'cache blobs');
    t.equal(sample(text, 'berth_cache_size_bytes'), bytes, 'cache bytes');
    t.equal(sample(text, 'berth_cache_manifests'), 1);
  });

  await t.test('pins: how many and the bytes they keep', async (t) => {
    daemon.index.pins.pin('docker.io/library/app:v1', img.manifestDigest);
    const text = await scrape();
    t.equal(sample(text, 'berth_cache_pins'), 1);
    t.equal(sample(text, 'berth_cache_pinned_bytes'), img.blobs.reduce((n, b) => n + b.size, 0), 'every blob the pinned manifest references');
  });

  await t.test('a blob berth verify finds corrupt is counted until removed from quarantine/', async (t) => {
    const layout = new Layout(cacheDir);
    const victim = img.blobs.find((b) => b.mediaType.includes('layer'))!;
    fs.writeFileSync(layout.blobPath(victim.digest), Buffer.alloc(victim.size, 7));
    const rt = await openRuntime(config, logger, { daemon: false });
    const result = await verifyCache(rt.store, logger);
    await rt.close();
    t.same(result.corrupt.map((c) => c.digest), [victim.digest], 'verify quarantines the corrupted blob');
    t.equal(sample(await scrape(), 'berth_cache_quarantined_blobs'), 1);
    for (const f of fs.readdirSync(layout.quarantineDir)) fs.rmSync(path.join(layout.quarantineDir, f));
    t.equal(sample(await scrape(), 'berth_cache_quarantined_blobs'), 0, 'cleared once the operator removes the files');
  });
});
