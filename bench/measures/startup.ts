/**
 * 6. Start-up with 100,000 blobs indexed (rows written straight into a
 * fresh index.db through the Index class, in one transaction), timed from
 * spawn to the first `/readyz` 200, against the same daemon on an empty
 * cache; and the RSS of a freshly started, idle berth.
 */
import { randomBytes } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { Index } from '../../src/store/index-db.js';
import { tempDirFor } from '../../test/harness/procs.js';
import { startBenchBerth } from '../berth.js';
import { NS } from '../env.js';
import { idle, memStatus } from '../rss.js';
import { summarize } from '../stats.js';
import type { Scope } from '../scope.js';
import type { Ctx, Measure } from './context.js';

/**
 * An index of `synthetic` made-up blob rows, plus the given real ones (measure 8).
 * Sizes stay small (4-68 KiB, ~3.5 GiB in all) so the total is under the
 * default max_size: a cache over its limit would start evicting at start-up
 * and each run would find fewer rows than the last.
 */
export function fillIndex(file: string, synthetic: number, real: readonly { digest: string; size: number }[] = []): void {
  const index = new Index(file);
  try {
    index.db.transaction(() => {
      for (let i = 0; i < synthetic; i++) index.content.putBlob(`sha256:${randomBytes(32).toString('hex')}`, 4096 + (i % 1024) * 64);
      for (const r of real) index.content.putBlob(r.digest, r.size);
    })();
  } finally {
    index.close();
  }
}

export function startup(scope: Scope): Measure {
  return {
    id: 6,
    name: 'start-up with 100,000 blobs, idle RSS',
    async run(ctx: Ctx) {
      const { env, plan } = ctx;
      const s = scope.child();
      const dir = await tempDirFor(s, 'berth-bench-startup');
      const fullDir = path.join(dir, 'full');
      await mkdir(fullDir, { recursive: true });
      fillIndex(path.join(fullDir, 'index.db'), plan.startupBlobs);
      const upstreams = [{ registry: NS, url: env.upstream.url }];
      // As every berth of the run: the unit's environment, --node-flags, --berth.
      const full = await startBenchBerth(s, { upstreams, cacheDir: fullDir, ...env.berthOpts });
      const empty = await startBenchBerth(s, { upstreams, cacheDir: path.join(dir, 'empty'), ...env.berthOpts });
      const times = { full: [] as number[], empty: [] as number[] };
      const idleRss: number[] = [];
      for (let i = 0; i < plan.runs; i++) {
        for (const [b, into] of [[full, times.full], [empty, times.empty]] as const) {
          await b.stop();
          into.push(await b.start());
        }
        await idle(2000);
        idleRss.push(memStatus(empty.pid).rssMiB);
        ctx.log(`  run ${i + 1}: ready after ${times.full.at(-1)!.toFixed(0)} ms with ${plan.startupBlobs} blobs, ${times.empty.at(-1)!.toFixed(0)} ms empty; idle RSS ${idleRss.at(-1)!.toFixed(0)} MiB`);
      }
      const left = new Index(path.join(fullDir, 'index.db'), { readonly: true });
      const rows = left.content.stats().blobs;
      left.close();
      await s.close();
      if (rows !== plan.startupBlobs) ctx.note(`measure 6: the start-up index held ${rows} blobs after the runs, not ${plan.startupBlobs}.`);
      ctx.add({ measure: '6 start-up', what: `spawn to /readyz 200, ${plan.startupBlobs.toLocaleString('en')} blobs indexed`, unit: 'ms', better: 'lower', berth: summarize(times.full), peer: { name: 'berth, empty cache', value: summarize(times.empty) }, target: { on: 'berth', op: '<=', value: 1000 } });
      ctx.add({ measure: '6 memory', what: 'idle RSS, fresh start, 2 s after ready', unit: 'MiB', better: 'lower', berth: summarize(idleRss), target: { on: 'berth', op: '<=', value: 64 } });
    },
  };
}
