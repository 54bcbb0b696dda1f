/**
 * 1. Warm blob throughput: one client, then 8 concurrent clients, fetching
 * the large blob from berth, from the Distribution proxy (both filled
 * first), from nginx (sendfile over the same files: the ceiling of client +
 * loopback + page cache) and from the upstream itself. The servers take
 * turns within each run, so drift on a shared machine hits them alike.
 */
import { mibps, summarize } from '../stats.js';
import type { Server } from '../env.js';
import type { Ctx, Measure } from './context.js';

const SERVERS: Server[] = ['nginx', 'berth', 'proxy', 'upstream'];
const NAMES: Record<Server, string> = { nginx: 'nginx sendfile', berth: 'berth', proxy: 'Distribution proxy', upstream: 'Distribution (upstream, direct)' };

export const warmBlob: Measure = {
  id: 1,
  name: 'warm blob throughput',
  async run(ctx: Ctx) {
    const { env, client, plan } = ctx;
    const img = env.images.big;
    const size = img.layer.size;
    const get = (s: Server) => client.get(env.blobUrl(s, img), size, env.headers(s, img.repo));
    // Fill both mirrors (and the page cache); the second GET proves the first one was kept.
    for (const s of SERVERS) {
      await get(s);
      await get(s);
    }
    const single = new Map<Server, number[]>(SERVERS.map((s) => [s, []]));
    const multi = new Map<Server, number[]>(SERVERS.map((s) => [s, []]));
    for (let i = 0; i < plan.runs; i++) {
      for (const s of SERVERS) {
        const one = await get(s);
        single.get(s)!.push(mibps(one.bytes, one.ms));
        const eight = await client.getConcurrent(env.blobUrl(s, img), 8, size, env.headers(s, img.repo));
        multi.get(s)!.push(mibps(eight.bytes, eight.ms));
      }
      ctx.log(`  run ${i + 1}: 1 client ${SERVERS.map((s) => `${s} ${single.get(s)!.at(-1)!.toFixed(0)}`).join(', ')} MiB/s; 8 clients ${SERVERS.map((s) => `${s} ${multi.get(s)!.at(-1)!.toFixed(0)}`).join(', ')} MiB/s`);
    }
    const mib = (size / 2 ** 20).toFixed(0);
    for (const [label, data] of [['1 client', single], ['8 clients', multi]] as const) {
      const berth = summarize(data.get('berth')!);
      ctx.add({ measure: '1 warm blob', what: `${label}, ${mib} MiB blob`, unit: 'MiB/s', better: 'higher', berth, peer: { name: NAMES.nginx, value: summarize(data.get('nginx')!) }, target: { on: 'ratio', op: '>=', value: 0.9 } });
      ctx.add({ measure: '1 warm blob', what: `${label}, ${mib} MiB blob`, unit: 'MiB/s', better: 'higher', berth, peer: { name: NAMES.proxy, value: summarize(data.get('proxy')!) }, target: { on: 'ratio', op: '>=', value: 1.0 } });
      ctx.add({ measure: '1 warm blob', what: `${label}, ${mib} MiB blob`, unit: 'MiB/s', better: 'higher', berth, peer: { name: NAMES.upstream, value: summarize(data.get('upstream')!) } });
    }
  },
};
