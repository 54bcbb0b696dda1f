/**
 * The daemon gives back what start-up left once it is over (src/memory.ts):
 * after the upstream warm-up, one memory-reducing GC and malloc_trim through
 * the berth-sendfile addon, logged once with the RSS before and after. The
 * fallback without the addon and the idle trim after a burst are unit-tested
 * (test/unit/memory-trim.test.ts).
 */
import t from 'tap';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { startBerth } from '../harness/berth.js';
import { loadTrim } from '../../src/memory.js';

const addon = loadTrim();

t.test('once start-up is over the daemon trims its memory once, and RSS goes down', { skip: addon.trim ? false : `the berth-sendfile addon is not built or has no trim(): ${addon.reason}` }, async (t) => {
  const asked: string[] = [];
  const upstream = http.createServer((req, res) => {
    asked.push(`${req.method} ${req.url}`);
    res.writeHead(200, { 'docker-distribution-api-version': 'registry/2.0', 'content-type': 'application/json' }).end('{}');
  });
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => upstream.close(() => r())));
  const berth = await startBerth(t, { upstreams: [{ registry: 'docker.io', url: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}` }] });

  await berth.service.waitForOutput(/"msg":"memory trimmed"/, 20_000);
  t.same(asked, ['GET /v2/'], 'after the upstream warm-up');
  const logs = berth.logs();
  const serving = logs.findIndex((l) => l.msg === 'berth is serving');
  const trims = logs.filter((l) => l.msg === 'memory trimmed');
  t.equal(trims.length, 1, 'one trim');
  t.ok(logs.indexOf(trims[0]!) > serving, 'after start-up');
  const { reason, rssBeforeMiB, rssAfterMiB } = trims[0] as { reason: string; rssBeforeMiB: number; rssAfterMiB: number };
  t.equal(reason, 'start-up');
  t.ok(rssAfterMiB < rssBeforeMiB, `RSS went down: ${rssBeforeMiB} -> ${rssAfterMiB} MiB`);

  const res = await fetch(`${berth.url}/readyz`);
  t.equal(res.status, 200, 'and berth serves on');
});
