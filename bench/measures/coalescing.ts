/**
 * 3. Fifty concurrent cold requests for one blob: how many GETs reach the
 * upstream, and how long until every client has every byte. berth should
 * make one GET and deliver all 50 copies in little more time than 50 warm
 * requests take (the floor: the same bytes from a filled cache);
 * Distribution's proxy fetches once per client. Also one cold client alone,
 * berth's peak RSS while it serves the 50 streams, and each server's CPU
 * per GiB served to the 50 clients (bench/cpu.ts).
 */
import { CpuMeter, perGiB } from '../cpu.js';
import { PeakRss } from '../rss.js';
import { summarize } from '../stats.js';
import type { Ctx, Measure } from './context.js';

export const coalescing: Measure = {
  id: 3,
  name: 'coalescing of 50 cold requests',
  async run(ctx: Ctx) {
    const { env, client, plan } = ctx;
    const img = env.images.coal;
    const size = img.layer.size;
    const n = plan.coalClients;
    // Transfers only: a fresh mirror's first GET is answered 401 (the token challenge) and retried.
    const blobGets = (since: number) => env.upstream.requests({ method: 'GET', since }).filter((r) => r.status < 400 && r.path.endsWith(`/blobs/${img.layer.digest}`));
    /** Upstream blob GETs since `mark`, once the upstream's access log has caught up. */
    const countGets = async (mark: number): Promise<number> => {
      await env.upstream.waitForRequests(() => blobGets(mark).length >= 1, 30_000);
      await env.upstream.barrier();
      return blobGets(mark).length;
    };
    const r = { berthGets: [] as number[], berthMs: [] as number[], berthOneMs: [] as number[], berthWarmMs: [] as number[], rss: [] as number[], proxyGets: [] as number[], proxyMs: [] as number[], cpuCold: [] as number[], cpuWarm: [] as number[], cpuProxy: [] as number[] };
    for (let i = 0; i < plan.runs; i++) {
      await env.berth.wipe();
      const one = await client.get(env.blobUrl('berth', img), size);
      r.berthOneMs.push(one.ms);

      await env.berth.wipe();
      const peak = new PeakRss(env.berth.pid);
      let mark = env.upstream.mark();
      let meter = new CpuMeter([env.berth.pid]);
      const all = await client.getConcurrent(env.blobUrl('berth', img), n, size);
      r.cpuCold.push(perGiB(meter.stop(), all.bytes));
      r.rss.push(peak.stop());
      r.berthMs.push(all.ms);
      r.berthGets.push(await countGets(mark));
      meter = new CpuMeter([env.berth.pid]);
      const warm = await client.getConcurrent(env.blobUrl('berth', img), n, size);
      r.cpuWarm.push(perGiB(meter.stop(), warm.bytes));
      r.berthWarmMs.push(warm.ms);

      await env.wipeProxy();
      mark = env.upstream.mark();
      meter = new CpuMeter([env.proxy.service.pid]);
      const p = await client.getConcurrent(env.blobUrl('proxy', img), n, size);
      r.cpuProxy.push(perGiB(meter.stop(), p.bytes));
      r.proxyMs.push(p.ms);
      r.proxyGets.push(await countGets(mark));
      ctx.log(
        `  run ${i + 1}: berth ${r.berthGets.at(-1)} GET(s), ${all.ms.toFixed(0)} ms (one cold pull ${one.ms.toFixed(0)} ms, ${n} warm ${warm.ms.toFixed(0)} ms, peak RSS ${r.rss.at(-1)!.toFixed(0)} MiB); ` +
          `proxy ${r.proxyGets.at(-1)} GETs, ${p.ms.toFixed(0)} ms; CPU-s/GiB berth cold ${r.cpuCold.at(-1)!.toFixed(2)}, warm ${r.cpuWarm.at(-1)!.toFixed(2)}, proxy ${r.cpuProxy.at(-1)!.toFixed(2)}`,
      );
    }
    const what = `${n} clients, one ${(size / 2 ** 20).toFixed(0)} MiB blob`;
    const total = summarize(r.berthMs.map((x) => x / 1000));
    ctx.add({ measure: '3 coalescing', what: `${what}: upstream GETs`, unit: 'GETs', better: 'lower', berth: summarize(r.berthGets), peer: { name: 'Distribution proxy', value: summarize(r.proxyGets) }, target: { on: 'berth', op: '==', value: 1 } });
    ctx.add({ measure: '3 coalescing', what: `${what}: total time`, unit: 's', better: 'lower', berth: total, peer: { name: `berth, ${n} clients, warm`, value: summarize(r.berthWarmMs.map((x) => x / 1000)) }, note: 'the floor: same bytes from a filled cache', target: { on: 'ratio', op: '<=', value: 1.2 } });
    ctx.add({ measure: '3 coalescing', what: `${what}: total time`, unit: 's', better: 'lower', berth: total, peer: { name: 'berth, one client, cold', value: summarize(r.berthOneMs.map((x) => x / 1000)) } });
    ctx.add({ measure: '3 coalescing', what: `${what}: total time`, unit: 's', better: 'lower', berth: total, peer: { name: 'Distribution proxy', value: summarize(r.proxyMs.map((x) => x / 1000)) } });
    const cpu = { measure: '3 coalescing', what: `${what}: CPU per GiB served`, unit: 'CPU-s/GiB', better: 'lower', berth: summarize(r.cpuCold) } as const;
    ctx.add({ ...cpu, peer: { name: `berth, ${n} clients, warm`, value: summarize(r.cpuWarm) } });
    ctx.add({ ...cpu, peer: { name: 'Distribution proxy', value: summarize(r.cpuProxy) }, note: 'the proxy fetches once per client' });
    ctx.add({ measure: '6 memory', what: `peak RSS during 3 (${n} streams)`, unit: 'MiB', better: 'lower', berth: summarize(r.rss), target: { on: 'berth', op: '<=', value: 128 } });
  },
};
