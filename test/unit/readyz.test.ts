/**
 * SPEC "Ops endpoints": /healthz, and /readyz (cache writable, index open), on
 * the registry listener, from a real daemon (startDaemon, in this process).
 * Root may write anywhere, so "not writable" is made here by taking the cache's
 * tmp/ (where every fill is written first) away, as a lost mount would.
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
  t.same(await get('/readyz'), { status: 200, text: 'ready\n' });

  const tmp = new Layout(cacheDir).tmpDir;
  fs.renameSync(tmp, `${tmp}.away`);
  const away = await get('/readyz');
  t.equal(away.status, 503, 'the cache cannot take a fill: not ready');
  t.same(JSON.parse(away.text), { ready: false, problems: ['cache directory not writable'] });
  t.same(await get('/healthz'), { status: 200, text: 'ok\n' }, 'still alive');

  fs.renameSync(`${tmp}.away`, tmp);
  t.same(await get('/readyz'), { status: 200, text: 'ready\n' }, 'ready again once it is back');
});
