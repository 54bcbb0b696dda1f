/**
 * 2. Cold fill of the large blob: berth with an empty cache (the upstream ->
 * disk -> client path, hashed and fsynced before the last byte goes out),
 * against the same GET straight from the upstream (the client could not do
 * better without berth), and the Distribution proxy with an empty storage.
 * Also the time to the first body byte (berth's includes its token request
 * to the upstream's auth server, as a fresh process's first pull does), and
 * each server's CPU-seconds per GiB it served (bench/cpu.ts; the upstream's
 * CPU is not in a mirror's figure).
 */
import { CpuMeter, perGiB } from '../cpu.js';
import { mibps, summarize } from '../stats.js';
import type { Server } from '../env.js';
import type { Ctx, Measure } from './context.js';

export const coldFill: Measure = {
  id: 2,
  name: 'cold fill throughput',
  async run(ctx: Ctx) {
    const { env, client, plan } = ctx;
    const img = env.images.big;
    const size = img.layer.size;
    const r = { berth: [] as number[], proxy: [] as number[], direct: [] as number[] };
    const ttfb = { berth: [] as number[], proxy: [] as number[], direct: [] as number[] };
    const cpu = { berth: [] as number[], proxy: [] as number[], direct: [] as number[] };
    const measure = async (key: keyof typeof r, server: Server): Promise<void> => {
      const meter = new CpuMeter([env.pid(server)]);
      const t = await client.get(env.blobUrl(server, img), size, env.headers(server, img.repo));
      cpu[key].push(perGiB(meter.stop(), t.bytes));
      r[key].push(mibps(t.bytes, t.ms));
      ttfb[key].push(t.ttfbMs);
    };
    for (let i = 0; i < plan.runs; i++) {
      await env.berth.wipe();
      await measure('berth', 'berth');
      await env.wipeProxy();
      await measure('proxy', 'proxy');
      await measure('direct', 'upstream');
      const at = (k: keyof typeof r) => `${k} ${r[k].at(-1)!.toFixed(0)} MiB/s, first byte ${ttfb[k].at(-1)!.toFixed(0)} ms, ${cpu[k].at(-1)!.toFixed(2)} CPU-s/GiB`;
      ctx.log(`  run ${i + 1}: ${at('berth')}; ${at('proxy')}; ${at('direct')}`);
    }
    const what = `${(size / 2 ** 20).toFixed(0)} MiB blob, empty cache`;
    const upstream = 'straight from the upstream';
    const proxy = 'Distribution proxy, empty';
    const b = summarize(r.berth);
    ctx.add({ measure: '2 cold fill', what, unit: 'MiB/s', better: 'higher', berth: b, peer: { name: upstream, value: summarize(r.direct) }, target: { on: 'ratio', op: '>=', value: 0.8 } });
    ctx.add({ measure: '2 cold fill', what, unit: 'MiB/s', better: 'higher', berth: b, peer: { name: proxy, value: summarize(r.proxy) } });
    const first = { measure: '2 cold fill', what: `${what}: time to first byte`, unit: 'ms', better: 'lower', berth: summarize(ttfb.berth) } as const;
    ctx.add({ ...first, peer: { name: upstream, value: summarize(ttfb.direct) }, target: { on: 'excess', op: '<=', value: 50 } });
    ctx.add({ ...first, peer: { name: proxy, value: summarize(ttfb.proxy) } });
    const c = { measure: '2 cold fill', what: `${what}: CPU per GiB served`, unit: 'CPU-s/GiB', better: 'lower', berth: summarize(cpu.berth) } as const;
    ctx.add({ ...c, peer: { name: proxy, value: summarize(cpu.proxy) } });
    ctx.add({ ...c, peer: { name: 'the upstream, serving it directly', value: summarize(cpu.direct) } });
  },
};
