/**
 * What a fresh, idle daemon has loaded. Idle RSS counts every module loaded
 * at start (docs/performance.md, Memory): `berth serve` imports the daemon,
 * not every command (no tar-stream for export/import, no picomatch for
 * Harbor's filters when Harbor is not configured). The npm undici package
 * (the upstream HTTP client) is imported at the first upstream request,
 * which is the start-up warm-up (GET /v2/). A probe preloaded with --import
 * prints the packages loaded so far when berth gets SIGUSR2.
 */
import t from 'tap';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { startBerth } from '../harness/berth.js';
import { tempDirFor } from '../harness/procs.js';

const PROBE = `
import { createRequire } from 'node:module';
const require = createRequire(import.meta.url);
let n = 0;
process.on('SIGUSR2', () => {
  const packages = new Set();
  for (const file of Object.keys(require('node:module')._cache)) {
    const m = /node_modules\\/((?:@[^/]+\\/)?[^/]+)\\//.exec(file);
    if (m) packages.add(m[1]);
  }
  process.stderr.write('PROBE ' + ++n + ' ' + JSON.stringify([...packages].sort()) + '\\n');
});
`;

t.test('an idle daemon has loaded only what serving needs; undici came with the upstream warm-up', async (t) => {
  // An upstream that has nothing: berth asks it once and answers 404.
  const asked: string[] = [];
  const upstream = http.createServer((req, res) => {
    asked.push(`${req.method} ${req.url}`);
    res.writeHead(404, { 'content-type': 'application/json' }).end('{"errors":[{"code":"MANIFEST_UNKNOWN","message":"no"}]}');
  });
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => upstream.close(() => r())));
  const dir = await tempDirFor(t, 'berth-idle-modules');
  const probe = path.join(dir, 'probe.mjs');
  fs.writeFileSync(probe, PROBE);
  const berth = await startBerth(t, {
    upstreams: [{ registry: 'docker.io', url: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}` }],
    env: { NODE_OPTIONS: `--import=${probe}` },
  });
  const loaded = async (n: number): Promise<string[]> => {
    process.kill(berth.service.pid, 'SIGUSR2');
    const re = new RegExp(`^PROBE ${n} (.*)$`, 'm');
    await berth.service.waitForOutput(re, 10_000);
    return JSON.parse(re.exec(berth.service.output())![1]!) as string[];
  };

  const idle = await loaded(1);
  // The probe sees the daemon's packages (else "no undici" would prove nothing).
  t.ok(idle.includes('better-sqlite3') && idle.includes('prom-client'), `the probe lists the daemon's packages: ${idle.join(', ')}`);
  for (const pkg of ['tar-stream', 'picomatch']) t.notOk(idle.includes(pkg), `${pkg} (export/import, Harbor filters) is not loaded by serve`);
  t.same(asked, ['GET /v2/'], 'the only upstream request so far is the warm-up');
  t.ok(idle.includes('undici'), 'which loaded undici');

  const res = await fetch(`${berth.url}/v2/library/nothing/manifests/latest`);
  t.equal(res.status, 404, 'a manifest the upstream lacks is a 404');
  t.ok(asked.some((a) => a.includes('/v2/library/nothing/manifests/latest')), 'berth asked the upstream');
});
