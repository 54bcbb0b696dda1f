/**
 * 2. Cold fill of the large blob: berth with an empty cache (the upstream ->
 * disk -> client path, hashed and fsynced before the last byte goes out),
 * against the same GET straight from the upstream (the client could not do
 * better without berth), and the Distribution proxy with an empty storage.
 * Also the time to the first body byte (berth's includes its token request
 * to the upstream's auth server, as a fresh process's first pull does), and
 * each server's CPU-seconds per GiB it served (bench/cpu.ts; the upstream's
 * CPU is not in a mirror's figure).
 *
 * Twice: on loopback, where the upstream, the mirror and the bench's client
 * share the 2 cores (the CPU is the limit), and behind an uplink of LINK
 * bytes per second (bench/uplink.ts, measure 7's) as an edge node meets its
 * upstream: a second berth and a second proxy reach the upstream only
 * through it, and the direct row is the same GET through it (the limiter's
 * own rate with the client alone).
 *
 * On loopback the run also measures what no mirror that checks digests can
 * avoid (bench/floor.ts): the bench client's CPU per GiB of the direct
 * download, the upstream's, and SHA-256 of the blob in this process; the
 * bound (client + upstream) / (client + upstream + hash) is a row of its own,
 * labelled as computed. Beside it the measured ceilings: the same GET through
 * two minimal Node relays in processes of their own (bench/relay-server.ts),
 * (a) hashing every chunk and holding the last one until the digest matched,
 * (b) the same plus writing every chunk to a temp file, fsynced: what Node
 * reaches doing the least any hashing (caching) mirror does, against the
 * direct download; berth ÷ (b) is berth's own overhead on the fill.
 */
import os from 'node:os';
import { startRegistry } from '../../test/harness/registry.js';
import { startBenchBerth, type BenchBerth } from '../berth.js';
import { CpuMeter, perGiB } from '../cpu.js';
import { EDGE, NS, wipeRegistry } from '../env.js';
import { hashBound, hashCpu, registryBlobFile } from '../floor.js';
import { startRelay } from '../relay.js';
import type { Scope } from '../scope.js';
import { MiB, mibps, summarize } from '../stats.js';
import { startUplink } from '../uplink.js';
import type { Ctx, Measure } from './context.js';

/** The edge's uplink for the link-bound fill: 100 MiB/s (about 840 Mbit/s), faster than any edge WAN berth serves. */
export const LINK = 100 * MiB;

/** The relays are measured on loopback only. */
type Key = 'berth' | 'proxy' | 'direct' | 'relay' | 'relayDisk' | 'berthWarm';
const KEYS: Key[] = ['berth', 'proxy', 'direct'];
const LOOP_KEYS: Key[] = [...KEYS, 'relay', 'relayDisk', 'berthWarm'];
const series = (): Record<Key, number[]> => ({ berth: [], proxy: [], direct: [], relay: [], relayDisk: [], berthWarm: [] });
/** The relays' names in the rows. */
const RELAY = 'hashing relay';
const RELAY_DISK = 'hashing + writing relay';

export function coldFill(scope: Scope): Measure {
  return {
    id: 2,
    name: 'cold fill throughput',
    async run(ctx: Ctx) {
      const { env, client, plan } = ctx;
      const img = env.images.big;
      const size = img.layer.size;
      const path = `/v2/${img.repo}/blobs/${img.layer.digest}`;

      // The link-bound peers: a berth and a proxy whose upstream is the uplink.
      const s = scope.child();
      const uplink = await startUplink(s, env.upstream.url);
      const linkBerth: BenchBerth = await startBenchBerth(s, { upstreams: env.berthUpstreams.map((u) => ({ ...u, url: uplink.url })), ...env.berthOpts });
      const linkProxy = await startRegistry(s, { proxy: { remoteurl: uplink.url, username: EDGE.user, password: EDGE.pass } });
      ctx.log(`  behind the ${LINK / MiB} MiB/s uplink ${uplink.url}: berth ${linkBerth.url}, Distribution proxy ${linkProxy.url}`);
      // The measured ceilings, on loopback: processes started once (berth's fill is a fresh process's).
      const relay = await startRelay(s, env.upstream.url, { write: false });
      const relayDisk = await startRelay(s, env.upstream.url, { write: true });
      ctx.log(`  relays in front of the upstream: ${RELAY} ${relay.url}, ${RELAY_DISK} ${relayDisk.url}`);

      const loop = { mibps: series(), ttfb: series(), cpu: series() };
      const link = { mibps: series(), ttfb: series() };
      const clientCpu: number[] = [];
      const hash: number[] = [];
      const bound: number[] = [];
      /** Cores the direct GET kept busy (client + upstream CPU per GiB x GiB/s): the bound assumes the cores are the limit. */
      const busy: number[] = [];

      /** One cold GET: MiB/s, first byte, and the server's CPU per GiB (loopback only). */
      const cold = async (into: typeof link & { cpu?: ReturnType<typeof series> }, key: Key, url: string, headers: Record<string, string>, pid: number | null): Promise<number> => {
        const meter = pid === null ? null : new CpuMeter([pid]);
        const c0 = process.cpuUsage();
        const t = await client.get(url, size, headers);
        const c = process.cpuUsage(c0);
        if (meter && into.cpu) into.cpu[key].push(perGiB(meter.stop(), t.bytes));
        into.mibps[key].push(mibps(t.bytes, t.ms));
        into.ttfb[key].push(t.ttfbMs);
        return perGiB((c.user + c.system) / 1e6, t.bytes);
      };
      const line = (into: typeof link & { cpu?: ReturnType<typeof series> }, keys = KEYS) =>
        keys.map((k) => `${k} ${into.mibps[k].at(-1)!.toFixed(0)} MiB/s, first byte ${into.ttfb[k].at(-1)!.toFixed(0)} ms${into.cpu ? `, ${into.cpu[k].at(-1)!.toFixed(2)} CPU-s/GiB` : ''}`).join('; ');

      const blobFile = registryBlobFile(env.upstream.dataDir, img.layer.digest);
      // One untimed GET through each relay first: a ceiling is a warm process's (in a side test the first
      // 128 MiB GET of a new relay cost 3.8-5.4 CPU-s/GiB, the next ones 2.1-3.7: its JIT warming up).
      for (const r of [relay, relayDisk]) await client.get(`${r.url}${path}`, size, env.headers('upstream', img.repo));
      for (let i = 0; i < plan.runs; i++) {
        // Loopback.
        await env.berth.wipe();
        await cold(loop, 'berth', env.blobUrl('berth', img), {}, env.pid('berth'));
        await env.wipeProxy();
        await cold(loop, 'proxy', env.blobUrl('proxy', img), {}, env.pid('proxy'));
        clientCpu.push(await cold(loop, 'direct', env.blobUrl('upstream', img), env.headers('upstream', img.repo), env.pid('upstream')));
        // The relays pass the bench's token on to the upstream (they hold none and do no token flow).
        await cold(loop, 'relay', `${relay.url}${path}`, env.headers('upstream', img.repo), relay.service.pid);
        await cold(loop, 'relayDisk', `${relayDisk.url}${path}`, env.headers('upstream', img.repo), relayDisk.service.pid);
        // berth as a running daemon, like the relays: a fresh one warmed by the cold fill of another blob first.
        await env.berth.wipe();
        await client.get(env.blobUrl('berth', env.images.coal), env.images.coal.layer.size);
        await cold(loop, 'berthWarm', env.blobUrl('berth', img), {}, env.pid('berth'));
        const h = hashCpu(blobFile);
        if (h.digest !== img.layer.digest || h.bytes !== size) throw new Error(`hashed ${blobFile}: ${h.digest}, ${h.bytes} bytes; expected ${img.layer.digest}, ${size}`);
        hash.push(perGiB(h.cpuS, h.bytes));
        bound.push(hashBound({ client: clientCpu.at(-1)!, upstream: loop.cpu.direct.at(-1)!, hash: hash.at(-1)! }));
        ctx.log(`  run ${i + 1}, loopback: ${line(loop, LOOP_KEYS)}`);
        busy.push((clientCpu.at(-1)! + loop.cpu.direct.at(-1)!) * (loop.mibps.direct.at(-1)! / 1024));
        ctx.log(
          `         floor: client ${clientCpu.at(-1)!.toFixed(2)} + upstream ${loop.cpu.direct.at(-1)!.toFixed(2)} CPU-s/GiB for the direct GET (${busy.at(-1)!.toFixed(2)} cores busy), SHA-256 ${hash.at(-1)!.toFixed(2)} CPU-s/GiB: bound ${bound.at(-1)!.toFixed(2)}x`,
        );

        // Behind the uplink.
        uplink.setRate(LINK);
        await linkBerth.wipe();
        await cold(link, 'berth', `${linkBerth.url}${path}?ns=${NS}`, {}, null);
        await wipeRegistry(linkProxy);
        await cold(link, 'proxy', `${linkProxy.url}${path}`, {}, null);
        await cold(link, 'direct', `${uplink.url}${path}`, env.headers('upstream', img.repo), null);
        ctx.log(`  run ${i + 1}, ${LINK / MiB} MiB/s uplink: ${line(link)}`);
      }
      await s.close();

      const what = `${(size / MiB).toFixed(0)} MiB blob, empty cache`;
      const upstream = 'straight from the upstream';
      const proxy = 'Distribution proxy, empty';
      const b = summarize(loop.mibps.berth);
      ctx.add({ measure: '2 cold fill', what: `${what}, loopback`, unit: 'MiB/s', better: 'higher', berth: b, peer: { name: upstream, value: summarize(loop.mibps.direct) }, target: { on: 'ratio', op: '>=', value: 0.8 } });
      const r = summarize(loop.mibps.relay);
      const rd = summarize(loop.mibps.relayDisk);
      const ceiling = `${what}, loopback: measured ceiling, a minimal Node relay (bench/relay-server.ts) that`;
      ctx.add({ measure: '2 cold fill', what: `${ceiling} hashes every chunk, last chunk after the digest, no disk`, unit: 'MiB/s', better: 'higher', subject: RELAY, berth: r, peer: { name: upstream, value: summarize(loop.mibps.direct) } });
      ctx.add({ measure: '2 cold fill', what: `${ceiling} also writes every chunk to a temp file (fsync at the end)`, unit: 'MiB/s', better: 'higher', subject: RELAY_DISK, berth: rd, peer: { name: upstream, value: summarize(loop.mibps.direct) } });
      const bw = summarize(loop.mibps.berthWarm);
      const warmed = `berth warmed by the cold fill of another blob (${(env.images.coal.layer.size / MiB).toFixed(0)} MiB) first`;
      ctx.add({ measure: '2 cold fill', what: `${what}, loopback: berth's own overhead on the fill (a fresh berth)`, unit: 'MiB/s', better: 'higher', berth: b, peer: { name: RELAY_DISK, value: rd } });
      ctx.add({ measure: '2 cold fill', what: `${what}, loopback: berth's own overhead on the fill (${warmed}, as the relays are)`, unit: 'MiB/s', better: 'higher', berth: bw, peer: { name: RELAY_DISK, value: rd } });
      ctx.add({ measure: '2 cold fill', what: `${what}, loopback, ${warmed}`, unit: 'MiB/s', better: 'higher', berth: bw, peer: { name: upstream, value: summarize(loop.mibps.direct) } });
      ctx.add({
        measure: '2 cold fill',
        what: `${what}, loopback: computed bound for any mirror hashing every byte, (client + upstream) ÷ (client + upstream + SHA-256) CPU per GiB`,
        unit: 'x direct',
        better: 'higher',
        subject: 'computed',
        berth: summarize(bound),
        note: `a bound computed from measured costs, not a measurement of berth: client ${summarize(clientCpu).median.toFixed(2)}, upstream ${summarize(loop.cpu.direct).median.toFixed(2)}, SHA-256 ${summarize(hash).median.toFixed(2)} CPU-s/GiB; the direct GET kept ${summarize(busy).median.toFixed(2)} of ${os.availableParallelism()} cores busy`,
      });
      ctx.add({ measure: '2 cold fill', what: `${what}, loopback`, unit: 'MiB/s', better: 'higher', berth: b, peer: { name: proxy, value: summarize(loop.mibps.proxy) } });
      const bl = summarize(link.mibps.berth);
      const onLink = `${what}, upstream behind a ${LINK / MiB} MiB/s uplink`;
      ctx.add({ measure: '2 cold fill', what: onLink, unit: 'MiB/s', better: 'higher', berth: bl, peer: { name: `${upstream}, through the uplink`, value: summarize(link.mibps.direct) }, target: { on: 'ratio', op: '>=', value: 0.8 } });
      ctx.add({ measure: '2 cold fill', what: onLink, unit: 'MiB/s', better: 'higher', berth: bl, peer: { name: `${proxy}, through the uplink`, value: summarize(link.mibps.proxy) } });
      const first = { measure: '2 cold fill', what: `${what}, loopback: time to first byte`, unit: 'ms', better: 'lower', berth: summarize(loop.ttfb.berth) } as const;
      ctx.add({ ...first, peer: { name: upstream, value: summarize(loop.ttfb.direct) }, target: { on: 'excess', op: '<=', value: 50 } });
      ctx.add({ ...first, peer: { name: proxy, value: summarize(loop.ttfb.proxy) } });
      const firstLink = { measure: '2 cold fill', what: `${onLink}: time to first byte`, unit: 'ms', better: 'lower', berth: summarize(link.ttfb.berth) } as const;
      ctx.add({ ...firstLink, peer: { name: `${upstream}, through the uplink`, value: summarize(link.ttfb.direct) } });
      ctx.add({ ...firstLink, peer: { name: `${proxy}, through the uplink`, value: summarize(link.ttfb.proxy) } });
      const c = { measure: '2 cold fill', what: `${what}, loopback: CPU per GiB served`, unit: 'CPU-s/GiB', better: 'lower', berth: summarize(loop.cpu.berth) } as const;
      ctx.add({ ...c, peer: { name: proxy, value: summarize(loop.cpu.proxy) } });
      ctx.add({ ...c, peer: { name: 'the upstream, serving it directly', value: summarize(loop.cpu.direct) } });
      ctx.add({ ...c, peer: { name: RELAY, value: summarize(loop.cpu.relay) } });
      ctx.add({ ...c, peer: { name: RELAY_DISK, value: summarize(loop.cpu.relayDisk) } });
      ctx.add({ ...c, what: `${c.what}, ${warmed}`, berth: summarize(loop.cpu.berthWarm), peer: { name: RELAY_DISK, value: summarize(loop.cpu.relayDisk) } });
      ctx.note(
        `Cold fill (2), uplink: a second berth and a second Distribution proxy reach the upstream only through bench/uplink.ts (measure 7's TCP proxy) paced to ${LINK / MiB} MiB/s for the upstream's bytes; the direct row is the bench client's GET through the same uplink (the limiter's rate with the client alone). Their tokens come from the auth server directly (a small request). The first-byte target (the upstream's + 50 ms) is held on the loopback row; on the uplink rows a fresh berth's 401, token and GET each cross the bench's own uplink process, which the direct GET (token in hand) does not, so those rows compare and carry no target.`,
      );
      ctx.note(
        'Cold fill (2), the CPU floor on loopback: the bench client\'s own CPU per GiB downloading straight from the upstream (process.cpuUsage of the bench process around the GET), the upstream\'s (its /proc CPU, as in the row below), and SHA-256 of the blob\'s file from the page cache in the bench process (node:crypto, 64 KiB updates, process.cpuUsage around the updates only). If the cores are the limit, time goes with CPU: no mirror that hashes every byte can beat (client + upstream) ÷ (client + upstream + hash) of the direct download; receiving and sending the bytes costs a mirror more, so the real bound is lower still. It holds as far as the cores are the limit: the row says how many of them the direct GET kept busy (CPU-s/GiB x GiB/s; the bench client is one thread, other work on the machine takes the rest).',
      );
      ctx.note(
        `Cold fill (2), the measured ceilings on loopback: the same GET through two minimal relays in front of the upstream (bench/relay-server.ts), each a process of its own (this machine's node, no flags; started once and warmed by one untimed GET, where berth's fill is a fresh process's), CPU from /proc like every server: node:http GET from the upstream with the bench's token passed on, SHA-256 of each chunk in the main thread, each chunk written on to the client one chunk behind so the last goes out only after the digest matched; the ${RELAY_DISK} also writes every chunk to a temp file (a WriteStream, fsync before close, after the last byte as berth's fsync is) and deletes it. No cache, index, metrics, log or retries: what Node itself reaches doing the least any hashing (caching) mirror does. If the ${RELAY_DISK} stays well below the 0.8x target, that target is out of reach for a Node mirror on this machine; berth ÷ it is berth's own overhead on the fill. berth's rows are a fresh process's fill (measure 2's berth restarts with an empty cache), so a second berth figure is taken as the relays run: restarted empty, warmed by an untimed cold fill of the ${(env.images.coal.layer.size / MiB).toFixed(0)} MiB blob of measure 3, then the same cold fill (rows 'berth warmed …').`,
      );
    },
  };
}

