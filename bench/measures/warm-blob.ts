/**
 * 1. Warm blob throughput: one client, then 8 concurrent clients, fetching
 * the large blob from berth, from the Distribution proxy (both filled
 * first), from nginx (sendfile over the same files: the ceiling of client +
 * loopback + page cache), from a plain Node server (node:http piping a
 * 1 MiB-chunk createReadStream over the same files: Node's own ceiling, so
 * berth ÷ that is berth's own overhead) and from the upstream itself. The
 * servers take turns within each run, so drift on a shared machine hits
 * them alike, and the turns rotate from run to run (`turns`): run i starts
 * with the i-th server, so no server always follows the same one and, in a
 * full run (5 runs, 5 servers), each has every place once. Each server's
 * CPU time (bench/cpu.ts) is read around each of its transfers: CPU-seconds
 * per GiB served, 1 and 8 clients together; the bench client's own
 * (process.cpuUsage) is logged beside it, as it shares the 2 cores.
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

/** The order the servers take their turns in run `run` (0-based): `servers` rotated by `run`. */
export function turns<T>(servers: readonly T[], run: number): T[] {
  const k = ((run % servers.length) + servers.length) % servers.length;
  return [...servers.slice(k), ...servers.slice(0, k)];
}

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
    const clientCpu = list();
    const clientSeconds = (c0: NodeJS.CpuUsage): number => {
      const c = process.cpuUsage(c0);
      return (c.user + c.system) / 1e6;
    };
    for (let i = 0; i < plan.runs; i++) {
      const cpuOne = new Map<Server, number>();
      const order = turns(SERVERS, i);
      for (const s of order) {
        let meter = new CpuMeter([env.pid(s)]);
        let c0 = process.cpuUsage();
        const one = await get(s);
        const c1 = meter.stop();
        const k1 = clientSeconds(c0);
        single.get(s)!.push(mibps(one.bytes, one.ms));
        meter = new CpuMeter([env.pid(s)]);
        c0 = process.cpuUsage();
        const eight = await client.getConcurrent(env.blobUrl(s, img), 8, size, env.headers(s, img.repo));
        const c8 = meter.stop();
        const k8 = clientSeconds(c0);
        multi.get(s)!.push(mibps(eight.bytes, eight.ms));
        cpu.get(s)!.push(perGiB(c1 + c8, one.bytes + eight.bytes));
        clientCpu.get(s)!.push(perGiB(k1 + k8, one.bytes + eight.bytes));
        cpuOne.set(s, perGiB(c1, one.bytes));
      }
      const line = (m: Map<Server, number[]>, digits: number) => order.map((s) => `${s} ${m.get(s)!.at(-1)!.toFixed(digits)}`).join(', ');
      const paired = (m: Map<Server, number[]>) => (m.get('berth')!.at(-1)! / m.get('proxy')!.at(-1)!).toFixed(2);
      ctx.log(`  run ${i + 1} (in this order): 1 client ${line(single, 0)} MiB/s; 8 clients ${line(multi, 0)} MiB/s; berth ÷ proxy in this run ${paired(single)}x / ${paired(multi)}x`);
      ctx.log(`         CPU-s/GiB, 1 and 8 clients: ${line(cpu, 2)} (1 client alone: ${order.map((s) => `${s} ${cpuOne.get(s)!.toFixed(2)}`).join(', ')}); the bench client's: ${line(clientCpu, 2)}`);
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
    const client1 = { measure: '1 warm blob', what: `the bench client's own CPU per GiB received, 1 and 8 clients, ${mib} MiB blob`, unit: 'CPU-s/GiB', better: 'lower', berth: summarize(clientCpu.get('berth')!), note: 'from berth; the client shares the cores' } as const;
    ctx.add({ ...client1, peer: peer(clientCpu, 'proxy') });
    ctx.add({ ...client1, peer: peer(clientCpu, 'nginx') });
  },
};
