/**
 * 1. Warm blob throughput: one client, then 8 concurrent clients, fetching
 * the large blob from berth, from the Distribution proxy (both filled
 * first), from nginx (sendfile over the same files: the ceiling of client +
 * loopback + page cache), from a plain Node server (node:http piping a
 * 1 MiB-chunk createReadStream over the same files: Node's own ceiling, so
 * berth ÷ that is berth's own overhead) and from the upstream itself. The
 * servers take turns within each run, so drift on a shared machine hits
 * them alike. Each server's CPU time (bench/cpu.ts) is read around each of
 * its transfers: CPU-seconds per GiB served, 1 and 8 clients together.
 */
import { CpuMeter, perGiB } from '../cpu.js';
import { mibps, summarize } from '../stats.js';
import type { Server } from '../env.js';
import type { Ctx, Measure } from './context.js';

const SERVERS: Server[] = ['nginx', 'node', 'berth', 'proxy', 'upstream'];
const NAMES: Record<Server, string> = {
  nginx: 'nginx sendfile',
  node: 'plain Node (createReadStream, 1 MiB)',
  berth: 'berth',
  proxy: 'Distribution proxy',
  upstream: 'Distribution (upstream, direct)',
};

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
    const list = () => new Map<Server, number[]>(SERVERS.map((s) => [s, []]));
    const single = list();
    const multi = list();
    const cpu = list();
    for (let i = 0; i < plan.runs; i++) {
      const cpuOne = new Map<Server, number>();
      for (const s of SERVERS) {
        let meter = new CpuMeter([env.pid(s)]);
        const one = await get(s);
        const c1 = meter.stop();
        single.get(s)!.push(mibps(one.bytes, one.ms));
        meter = new CpuMeter([env.pid(s)]);
        const eight = await client.getConcurrent(env.blobUrl(s, img), 8, size, env.headers(s, img.repo));
        const c8 = meter.stop();
        multi.get(s)!.push(mibps(eight.bytes, eight.ms));
        cpu.get(s)!.push(perGiB(c1 + c8, one.bytes + eight.bytes));
        cpuOne.set(s, perGiB(c1, one.bytes));
      }
      const line = (m: Map<Server, number[]>, digits: number) => SERVERS.map((s) => `${s} ${m.get(s)!.at(-1)!.toFixed(digits)}`).join(', ');
      ctx.log(`  run ${i + 1}: 1 client ${line(single, 0)} MiB/s; 8 clients ${line(multi, 0)} MiB/s`);
      ctx.log(`         CPU-s/GiB, 1 and 8 clients: ${line(cpu, 2)} (1 client alone: ${SERVERS.map((s) => `${s} ${cpuOne.get(s)!.toFixed(2)}`).join(', ')})`);
    }
    const mib = (size / 2 ** 20).toFixed(0);
    const peer = (data: Map<Server, number[]>, s: Server) => ({ name: NAMES[s], value: summarize(data.get(s)!) });
    for (const [label, data] of [['1 client', single], ['8 clients', multi]] as const) {
      const berth = summarize(data.get('berth')!);
      const row = { measure: '1 warm blob', what: `${label}, ${mib} MiB blob`, unit: 'MiB/s', better: 'higher', berth } as const;
      ctx.add({ ...row, peer: peer(data, 'nginx'), target: { on: 'ratio', op: '>=', value: 0.9 } });
      ctx.add({ ...row, peer: peer(data, 'proxy'), target: { on: 'ratio', op: '>=', value: 0.95 } });
      ctx.add({ ...row, peer: peer(data, 'node'), note: "berth's own overhead" });
      ctx.add({ ...row, peer: peer(data, 'upstream') });
    }
    const berthCpu = summarize(cpu.get('berth')!);
    const row = { measure: '1 warm blob', what: `CPU per GiB served, 1 and 8 clients, ${mib} MiB blob`, unit: 'CPU-s/GiB', better: 'lower', berth: berthCpu } as const;
    ctx.add({ ...row, peer: peer(cpu, 'proxy'), target: { on: 'ratio', op: '<=', value: 1.5 } });
    ctx.add({ ...row, peer: peer(cpu, 'nginx') });
    ctx.add({ ...row, peer: peer(cpu, 'node') });
  },
};
