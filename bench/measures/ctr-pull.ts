/**
 * 5. A full `ctr images pull` (resolve, fetch every layer, unpack) of a
 * multi-layer image through each mirror, cold (mirror and containerd empty)
 * and warm (mirror filled, containerd empty). Unpacking is the same work on
 * both sides and is part of what a user waits for, so it is in the time.
 */
import path from 'node:path';
import { startContainerd, writeHostsToml } from '../../test/harness/containerd.js';
import { NS, TAG } from '../env.js';
import { now, summarize } from '../stats.js';
import type { Ctx, Measure } from './context.js';
import type { Scope } from '../scope.js';

export function ctrPull(scope: Scope): Measure {
  return {
    id: 5,
    name: 'ctr images pull through each mirror',
    async run(ctx: Ctx) {
      const { env, plan } = ctx;
      const img = env.images.app;
      const ref = `${NS}/${img.repo}:${TAG}`;
      const ctd = await startContainerd(scope.child(), { namespace: 'berth-bench' });
      const hosts = { berth: path.join(env.work, 'hosts-berth'), proxy: path.join(env.work, 'hosts-proxy') };
      await writeHostsToml(hosts.berth, NS, env.berth.url);
      await writeHostsToml(hosts.proxy, NS, env.proxy.url);
      const pull = async (mirror: 'berth' | 'proxy'): Promise<number> => {
        await ctd.forget();
        const t0 = now();
        const res = await ctd.pull(ref, { hostsDir: hosts[mirror], timeoutMs: 300_000 });
        const ms = now() - t0;
        if (res.code !== 0) throw new Error(`ctr pull through ${mirror} exited ${res.code}: ${res.stderr.slice(-1000)}`);
        return ms / 1000;
      };
      const t = { berth: { cold: [] as number[], warm: [] as number[] }, proxy: { cold: [] as number[], warm: [] as number[] } };
      for (let i = 0; i < plan.runs; i++) {
        await env.berth.wipe();
        t.berth.cold.push(await pull('berth'));
        t.berth.warm.push(await pull('berth'));
        await env.wipeProxy();
        t.proxy.cold.push(await pull('proxy'));
        t.proxy.warm.push(await pull('proxy'));
        ctx.log(`  run ${i + 1}: cold berth ${t.berth.cold.at(-1)!.toFixed(2)} s, proxy ${t.proxy.cold.at(-1)!.toFixed(2)} s; warm berth ${t.berth.warm.at(-1)!.toFixed(2)} s, proxy ${t.proxy.warm.at(-1)!.toFixed(2)} s`);
      }
      await ctd.forget();
      await ctd.stop();
      const layers = img.image.manifests[0]?.layers.length ?? 0;
      const mib = img.image.blobs.reduce((s, b) => s + b.size, 0) / 2 ** 20;
      const what = `${layers} layers, ${mib.toFixed(0)} MiB, with unpack`;
      const target = { on: 'ratio', op: '<=', value: 1.0 } as const;
      ctx.add({ measure: '5 ctr pull', what: `cold, ${what}`, unit: 's', better: 'lower', berth: summarize(t.berth.cold), peer: { name: 'Distribution proxy', value: summarize(t.proxy.cold) }, target });
      ctx.add({ measure: '5 ctr pull', what: `warm, ${what}`, unit: 's', better: 'lower', berth: summarize(t.berth.warm), peer: { name: 'Distribution proxy', value: summarize(t.proxy.warm) }, target });
    },
  };
}
