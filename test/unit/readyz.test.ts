/**
 * SPEC "Ops endpoints": /healthz, and /readyz (cache writable, index open), on
 * the registry listener, from a real daemon (startDaemon, in this process).
 * Root may write anywhere, and access(W_OK) says yes to root for a regular file:
 * so "not writable" is made here by putting a regular file where the cache's
 * tmp/ (where every fill is written first) should be. The check was
 * access(tmp, W_OK) and called that cache ready; it now writes a file there.
 */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { pino } from 'pino';
import { stringify } from 'smol-toml';
import { loadConfig } from '../../src/config/load.js';
import { startDaemon } from '../../src/daemon.js';
import { Layout } from '../../src/store/layout.js';
import { freePort, tempDirFor } from '../harness/procs.js';

const logger = pino({ level: process.env.BERTH_TEST_LOG ?? 'silent' });

t.test('/healthz answers while the process runs; /readyz only while the cache is writable and the index open', async (t) => {
  const work = await tempDirFor(t, 'berth-readyz');
  const cacheDir = path.join(work, 'cache');
  const file = path.join(work, 'berth.toml');
  fs.writeFileSync(
    file,
    stringify({
      server: { listen: `127.0.0.1:${await freePort()}`, drain_timeout: '1s' },
      cache: { dir: cacheDir },
      log: { level: 'silent' },
      upstream: [{ registry: 'docker.io', url: `http://127.0.0.1:${await freePort()}` }],
    }),
  );
  const daemon = await startDaemon(loadConfig({ file, env: {} }), logger);
  t.teardown(() => daemon.stop(1000));
  const get = async (p: string) => {
    const res = await fetch(`${daemon.url}${p}`);
    return { status: res.status, text: await res.text() };
  };

  t.same(await get('/healthz'), { status: 200, text: 'ok\n' });

  // Broken before the first /readyz: a success is remembered for a few seconds (test/unit/write-probe.test.ts).
  const tmp = new Layout(cacheDir).tmpDir;
  fs.renameSync(tmp, `${tmp}.away`);
  fs.writeFileSync(tmp, 'not a directory\n');
  fs.accessSync(tmp, fs.constants.W_OK); // what the old check asked, and root is told yes
  const broken = await get('/readyz');
  t.equal(broken.status, 503, 'the cache cannot take a fill: not ready');
  t.same(JSON.parse(broken.text), { ready: false, problems: ['cache directory not writable: tmp/ is not a directory (ENOTDIR)'] }, 'says why');
  t.same(await get('/healthz'), { status: 200, text: 'ok\n' }, 'still alive');

  fs.rmSync(tmp);
  fs.renameSync(`${tmp}.away`, tmp);
  t.same(await get('/readyz'), { status: 200, text: 'ready\n' }, 'ready again once it is back (a failure is not remembered)');
  t.same(fs.readdirSync(tmp), [], 'the probe left nothing in tmp/');
});
