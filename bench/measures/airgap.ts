/**
 * 8. Air gap at scale (issue 15): `berth inventory` of a cache with 100,000
 * blobs indexed (synthetic rows written straight into index.db, as in
 * measure 6), and `berth export --have` of the app image against that
 * 100,000-blob inventory, two of its layers left out because the inventory
 * lists them. Each is the real CLI in a child process, timed from spawn to
 * exit, its peak RSS taken by /usr/bin/time (%M). Peers: the same inventory
 * of an empty cache, and the same export against an inventory that lists
 * only the two layers: the differences are what 100k rows cost. Both should
 * finish in seconds, with memory that does not grow with the cache.
 */
import { mkdir, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { stringify } from 'smol-toml';
import { run, tempDirFor } from '../../test/harness/procs.js';
import { BERTH_MAIN } from '../berth.js';
import { NS, TAG } from '../env.js';
import type { Scope } from '../scope.js';
import { MiB, now, summarize } from '../stats.js';
import type { Ctx, Measure } from './context.js';
import { fillIndex } from './startup.js';

const BLOBS = 100_000;

export function airgap(scope: Scope): Measure {
  return {
    id: 8,
    name: 'inventory and differential export with 100,000 blobs',
    async run(ctx: Ctx) {
      const { env, plan } = ctx;
      const s = scope.child();
      const dir = await tempDirFor(s, 'berth-bench-airgap');
      const main = env.berthOpts.main ?? BERTH_MAIN;
      const app = env.images.app.image;
      const layers = app.manifests[0]!.layers;
      const held = layers.slice(0, 2).map((d) => ({ digest: d, size: app.blobs.find((b) => b.digest === d)!.size }));

      /** A cache dir with its berth.toml; the index filled with `synthetic` rows and `real` ones. */
      const cache = async (name: string, synthetic: number, real: typeof held): Promise<string> => {
        const cacheDir = path.join(dir, name);
        await mkdir(cacheDir, { recursive: true });
        if (synthetic > 0 || real.length > 0) fillIndex(path.join(cacheDir, 'index.db'), synthetic, real);
        const config = path.join(dir, `${name}.toml`);
        await writeFile(config, stringify({ cache: { dir: cacheDir }, log: { level: 'warn' }, upstream: env.berthUpstreams }));
        return config;
      };
      const big = await cache('site-b', BLOBS, held);
      const empty = await cache('empty', 0, []);
      const small = await cache('site-b-small', 0, held);
      const siteA = await cache('site-a', BLOBS, []);
      const cliEnv: NodeJS.ProcessEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('BERTH_')));

      /** The CLI once: seconds from spawn to exit, and its peak RSS in MiB. */
      const cli = async (args: string[]): Promise<{ s: number; rssMiB: number }> => {
        const t0 = now();
        const r = await run('/usr/bin/time', ['-f', 'maxrss_kib=%M', process.execPath, ...env.berthOpts.nodeFlags, main, ...args], { env: cliEnv, timeoutMs: 300_000 });
        const s = (now() - t0) / 1000;
        if (r.code !== 0) throw new Error(`berth ${args.join(' ')} exited ${r.code}: ${r.stderr.slice(-2000)}`);
        const m = /maxrss_kib=(\d+)/.exec(r.stderr);
        if (!m) throw new Error(`/usr/bin/time printed no maxrss: ${r.stderr.slice(-500)}`);
        return { s, rssMiB: Number(m[1]) / 1024 };
      };

      const invBig = path.join(dir, 'site-b.inventory.gz');
      const invEmpty = path.join(dir, 'empty.inventory.gz');
      const invSmall = path.join(dir, 'small.inventory.gz');
      await cli(['inventory', '--config', small, '--out', invSmall]);
      const image = `${NS}/${env.images.app.repo}:${TAG}`;
      // Site A holds the image (fetched once, before anything is timed).
      await cli(['prefetch', '--config', siteA, image]);

      const r = { invS: [] as number[], invRss: [] as number[], invEmptyS: [] as number[], invEmptyRss: [] as number[], expS: [] as number[], expRss: [] as number[], expSmallS: [] as number[], expSmallRss: [] as number[] };
      let tarBytes = 0;
      for (let i = 0; i < plan.runs; i++) {
        const a = await cli(['inventory', '--config', big, '--out', invBig]);
        const b = await cli(['inventory', '--config', empty, '--out', invEmpty]);
        r.invS.push(a.s), r.invRss.push(a.rssMiB), r.invEmptyS.push(b.s), r.invEmptyRss.push(b.rssMiB);
        const out = path.join(dir, 'update.tar');
        const c = await cli(['export', '--config', siteA, image, '-o', out, '--have', invBig]);
        tarBytes = (await stat(out)).size;
        const d = await cli(['export', '--config', siteA, image, '-o', out, '--have', invSmall]);
        if ((await stat(out)).size !== tarBytes) throw new Error('the two differential exports differ in size: the inventories disagree about the app image');
        r.expS.push(c.s), r.expRss.push(c.rssMiB), r.expSmallS.push(d.s), r.expSmallRss.push(d.rssMiB);
        ctx.log(
          `  run ${i + 1}: inventory of ${BLOBS} blobs ${a.s.toFixed(2)} s, ${a.rssMiB.toFixed(0)} MiB (empty cache ${b.s.toFixed(2)} s, ${b.rssMiB.toFixed(0)} MiB); ` +
            `export --have ${c.s.toFixed(2)} s, ${c.rssMiB.toFixed(0)} MiB (2-blob inventory ${d.s.toFixed(2)} s, ${d.rssMiB.toFixed(0)} MiB)`,
        );
      }
      const invSize = (await stat(invBig)).size;
      await s.close();
      ctx.note(`measure 8: the ${BLOBS.toLocaleString('en')}-blob inventory is ${(invSize / MiB).toFixed(1)} MiB gzip'd; the differential tar of the app image (${layers.length} layers, 2 left out) is ${(tarBytes / MiB).toFixed(1)} MiB. Times include node's start-up (the empty-cache peer shows it).`);
      const what = `${BLOBS.toLocaleString('en')} blobs indexed`;
      ctx.add({ measure: '8 air gap', what: `berth inventory, ${what}: spawn to exit`, unit: 's', better: 'lower', berth: summarize(r.invS), peer: { name: 'berth inventory, empty cache', value: summarize(r.invEmptyS) }, target: { on: 'berth', op: '<=', value: 10 } });
      ctx.add({ measure: '8 air gap', what: `berth inventory, ${what}: peak RSS`, unit: 'MiB', better: 'lower', berth: summarize(r.invRss), peer: { name: 'berth inventory, empty cache', value: summarize(r.invEmptyRss) }, target: { on: 'ratio', op: '<=', value: 1.5 } });
      ctx.add({ measure: '8 air gap', what: `berth export --have, a ${BLOBS.toLocaleString('en')}-blob inventory: spawn to exit`, unit: 's', better: 'lower', berth: summarize(r.expS), peer: { name: 'the same export, 2-blob inventory', value: summarize(r.expSmallS) }, target: { on: 'berth', op: '<=', value: 10 } });
      ctx.add({ measure: '8 air gap', what: `berth export --have, a ${BLOBS.toLocaleString('en')}-blob inventory: peak RSS`, unit: 'MiB', better: 'lower', berth: summarize(r.expRss), peer: { name: 'the same export, 2-blob inventory', value: summarize(r.expSmallRss) }, target: { on: 'ratio', op: '<=', value: 1.5 } });
    },
  };
}
