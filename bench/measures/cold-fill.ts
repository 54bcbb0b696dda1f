/**
 * 2. Cold fill of the large blob: berth with an empty cache (the upstream ->
 * disk -> client path, hashed and fsynced before the last byte goes out),
 * against the same GET straight from the upstream (the client could not do
 * better without berth), and the Distribution proxy with an empty storage.
 */
import { mibps, summarize } from '../stats.js';
import type { Ctx, Measure } from './context.js';

export const coldFill: Measure = {
  id: 2,
  name: 'cold fill throughput',
  async run(ctx: Ctx) {
    const { env, client, plan } = ctx;
    const img = env.images.big;
    const size = img.layer.size;
    const berth: number[] = [];
    const proxy: number[] = [];
    const direct: number[] = [];
    for (let i = 0; i < plan.runs; i++) {
      await env.berth.wipe();
      const b = await client.get(env.blobUrl('berth', img), size);
      berth.push(mibps(b.bytes, b.ms));
      await env.wipeProxy();
      const p = await client.get(env.blobUrl('proxy', img), size);
      proxy.push(mibps(p.bytes, p.ms));
      const d = await client.get(env.blobUrl('upstream', img), size, env.headers('upstream', img.repo));
      direct.push(mibps(d.bytes, d.ms));
      ctx.log(`  run ${i + 1}: berth ${berth.at(-1)!.toFixed(0)}, proxy ${proxy.at(-1)!.toFixed(0)}, direct ${direct.at(-1)!.toFixed(0)} MiB/s`);
    }
    const what = `${(size / 2 ** 20).toFixed(0)} MiB blob, empty cache`;
    const b = summarize(berth);
    ctx.add({ measure: '2 cold fill', what, unit: 'MiB/s', better: 'higher', berth: b, peer: { name: 'straight from the upstream', value: summarize(direct) }, target: { on: 'ratio', op: '>=', value: 0.8 } });
    ctx.add({ measure: '2 cold fill', what, unit: 'MiB/s', better: 'higher', berth: b, peer: { name: 'Distribution proxy, empty', value: summarize(proxy) } });
  },
};
